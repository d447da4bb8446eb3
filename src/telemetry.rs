//! Logging: one `tracing` subscriber for the process, filtered by `RUST_LOG`
//! (default `warn` for the CLI's quiet commands), written to stderr so
//! stdout carries only the answer.

use tracing_subscriber::EnvFilter;

/// Install the subscriber.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // Colour only on a terminal: logs in files, pipes and `docker logs` stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}
