//! Shared pieces of the `insync` and `insync-producer` command lines: bootstrap
//! resolution, logging set-up, and printing one line (or one JSON object) per result; and
//! `watch`, the live cluster view behind `insync cluster watch`; `perf`, `e2e` and
//! `consume_perf`, the producer, end-to-end latency and consumer benchmarks.
pub mod consume_perf;
pub mod e2e;
pub mod group;
pub mod positions;
pub mod watch;

use std::time::Duration;

use clap::Args as ClapArgs;
use insync_client::producer::ProducerConfig;
pub use insync_client::DEFAULT_BOOTSTRAP;
use insync_log::Compression;
use insync_types::Acks;

pub mod perf;

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

/// Producer settings shared by sending and perf (Kafka producer config names).
#[derive(Debug, Clone, ClapArgs)]
pub struct ProducerFlags {
    #[arg(long, env = "INSYNC_BOOTSTRAP", default_value = DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    /// all (-1), 1 or 0 (Kafka `acks`; default all as in Kafka 3.x).
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    pub acks: Acks,
    /// Kafka request.timeout.ms: how long the leader may wait for the ISR (acks=all).
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u32,
    /// Kafka delivery.timeout.ms: retry window for failures a leader change can fix.
    #[arg(long, default_value_t = 120_000)]
    pub delivery_timeout_ms: u64,
    /// Kafka linger.ms: how long a batch waits for more records.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Kafka batch.size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub batch_size: usize,
    /// Kafka max.in.flight.requests.per.connection (per partition), 1..=5.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=5))]
    pub max_in_flight: u32,
    /// Kafka enable.idempotence (only with acks=all).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_idempotence: bool,
    /// Kafka compression.type of the producer: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression_type: Compression,
    /// Threads that run the producer's network I/O; 0: tokio's default (TOKIO_WORKER_THREADS,
    /// else one per core). One, as Kafka's
    /// producer has one sender thread: beside brokers on the same cores, more threads
    /// cost cross-thread wake-ups on every answer (docs/benchmarks.md, "Threads per node").
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub worker_threads: u16,
}

/// The multi-threaded tokio runtime with `worker_threads` workers (0: one per core).
pub fn runtime(worker_threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        builder.worker_threads(usize::from(worker_threads));
    }
    builder.enable_all().build()
}

impl ProducerFlags {
    pub fn config(&self) -> ProducerConfig {
        ProducerConfig {
            acks: self.acks,
            linger: Duration::from_millis(self.linger_ms),
            batch_size: self.batch_size.max(1),
            max_in_flight: self.max_in_flight as usize,
            request_timeout: Duration::from_millis(u64::from(self.timeout_ms)),
            delivery_timeout: Duration::from_millis(self.delivery_timeout_ms),
            enable_idempotence: self.enable_idempotence,
            compression: self.compression_type,
            ..ProducerConfig::default()
        }
    }
}
