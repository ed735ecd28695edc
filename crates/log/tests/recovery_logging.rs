//! Checks the one line recovery logs when it truncates a torn or corrupt tail
//! (docs/design.md "Recovery and flushing": logged with the byte count). A test binary of its own, single test: tracing caches
//! callsite interest process-wide, so capturing output next to parallel tests is racy.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};

use insync_log::{BatchBuilder, LogConfig, PartitionLog};

/// Collects what `tracing` prints while `body` runs.
fn capture_logs<T>(body: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, body);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (result, text)
}

fn write_five_batches(dir: &std::path::Path) -> u64 {
    let mut log = PartitionLog::open(dir, LogConfig::default()).unwrap();
    for number in 0..5 {
        let mut builder = BatchBuilder::new();
        builder.push(None, Some(format!("b{number}-0").as_bytes()), 0);
        builder.push(None, Some(format!("b{number}-1").as_bytes()), 0);
        let mut bytes = builder.build().to_vec();
        log.append_as_leader(&mut bytes, 1).unwrap();
    }
    let total = log.size_bytes();
    log.close().unwrap();
    total
}

fn first_segment(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("00000000000000000000.log")
}

#[test]
fn recovery_logs_one_line_with_bytes_position_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let total = write_five_batches(dir.path());
    let mut file = OpenOptions::new().append(true).open(first_segment(dir.path())).unwrap();
    file.write_all(&[0xde; 100]).unwrap();
    drop(file);

    let (log, logs) = capture_logs(|| PartitionLog::open(dir.path(), LogConfig::default()).unwrap());
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(log.size_bytes(), total);
    assert_eq!(std::fs::metadata(first_segment(dir.path())).unwrap().len(), total);
    let recovery_lines: Vec<&str> = logs.lines().filter(|l| l.contains("recovered log")).collect();
    assert_eq!(recovery_lines.len(), 1, "{logs}");
    let line = recovery_lines[0];
    assert!(line.contains("truncated 100 torn/corrupt bytes"), "{line}");
    assert!(line.contains(&format!("at position {total} (offset 10)")), "{line}");
    assert!(line.contains("log end offset now 10"), "{line}");

    // A clean reopen logs no recovery at all.
    drop(log);
    let (_, logs) = capture_logs(|| PartitionLog::open(dir.path(), LogConfig::default()).unwrap());
    assert!(!logs.contains("recovered log"), "{logs}");
}
