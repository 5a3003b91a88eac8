//! `relay`: serve meetings over QUIC. See `relay --help` and docs/OPERATIONS.md.

use anyhow::Context;
use clap::Parser;
use orelay_relay::tools::Tool;
use orelay_relay::{Cli, Config, Relay};

/// `relay`: a QUIC relay that forwards end-to-end-encrypted meeting media without holding keys.
///
/// With no tool it serves (see the settings below); `keygen` and `token create` make
/// a token-signing key pair and join tokens.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(flatten)]
    serve: Cli,
    /// A tool instead of serving: `keygen` or `token create`.
    #[command(subcommand)]
    tool: Option<Tool>,
}
use tracing::info;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    orelay_relay::logging::init("info");
    let Args { serve: cli, tool } = Args::parse();
    if let Some(tool) = &tool {
        return orelay_relay::tools::run(tool);
    }
    let config = Config::from_cli(&cli)?;
    if config.admission.mode == orelay_relay::config::AdmissionMode::Open {
        tracing::warn!(
            "admission.mode = open: joins are checked by passcode only and meetings are \
             created with the host secret; use signed tokens in production"
        );
    }
    let shutdown = shutdown_signal()?;
    let metrics_addr = config.metrics_addr;
    let max_connections = config.max_connections;
    let relay = Relay::bind(config)?;
    let addr = relay.local_addr()?;
    info!(%addr, "relay listening");
    // Printed on stdout as well, so scripts and people can pin the certificate.
    println!("relay listening on {addr} (QUIC, ALPN orelay/1)");
    println!("certificate sha256 fingerprint: {}", relay.fingerprint());
    if let Some(addr) = metrics_addr {
        let bound = orelay_relay::telemetry::spawn(addr, relay.stats(), max_connections)
            .await
            .with_context(|| format!("binding the metrics listener on {addr}"))?;
        info!(addr = %bound, "metrics listening");
        println!("metrics on http://{bound}/metrics (also /healthz, /readyz)");
    }
    relay.run(shutdown).await;
    info!("relay stopped");
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives right after
/// start-up is not missed) and returns a future that resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => info!("SIGINT received"),
            _ = term.recv() => info!("SIGTERM received"),
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
