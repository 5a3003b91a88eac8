//! Log set-up shared by the `relay` and `loadgen` binaries: `tracing` to stderr,
//! filtered by `RUST_LOG`, coloured only when stderr is a terminal.

/// Installs the global subscriber; `default` is the filter used when `RUST_LOG` is unset.
pub fn init(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        // Colour only for people: journald, files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
