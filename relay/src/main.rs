//! `relay`: serve meetings over QUIC. See `relay --help` and docs/OPERATIONS.md.

use clap::Parser;
use orelay_relay::{Cli, Config, Relay};
use tracing::info;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for people: journald, files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let config = Config::from_cli(&cli)?;
    let relay = Relay::bind(config)?;
    let addr = relay.local_addr()?;
    info!(%addr, "relay listening");
    // Printed on stdout as well, so scripts and people can pin the certificate.
    println!("relay listening on {addr} (QUIC, ALPN orelay/1)");
    println!("certificate sha256 fingerprint: {}", relay.fingerprint());
    relay.run(shutdown_signal()).await;
    info!("relay stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received"),
        () = term => info!("SIGTERM received"),
    }
}
