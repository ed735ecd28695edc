//! Shared pieces of the `insync` and `insync-producer` command lines: bootstrap
//! resolution, logging set-up, and printing one line (or one JSON object) per result.
use std::time::{SystemTime, UNIX_EPOCH};

pub use insync_client::DEFAULT_BOOTSTRAP;

/// Wall-clock milliseconds, for record timestamps (Kafka CreateTime).
pub fn now_epoch_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Logs to stderr, quiet unless INSYNC_LOG says otherwise (stdout is for results).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Renders bytes for a terminal: UTF-8 as is, anything else lossily.
pub fn show_bytes(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
