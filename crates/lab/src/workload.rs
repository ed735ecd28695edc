//! The lab's clients: concurrent producers (in-process tokio tasks, each with its own
//! `insync-client` connection pool and metadata cache, as separate producer processes
//! would have) that send unique values and record every send in the history, and the
//! consumer that reads a partition back through its leader, below the HW.
//!
//! acks=all producers are insync's idempotent producer (`insync_client::producer`, KIP-98)
//! with one record in flight: it retries what Kafka's producer retries (a stale leader, no
//! leader, a lost connection) until delivery.timeout.ms, and its sequence numbers make the
//! leader drop retried copies, so any duplicate in an acks=all history is a violation.
//! acks=1 producers (Kafka runs those without idempotence) retry one attempt at a time, so
//! that the history knows whether *any* attempt may have been written: `Cluster::produce`
//! reports only the last attempt, and a definite failure after a lost answer is not definite.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use insync_client::backoff::Backoff;
use insync_client::producer::{Producer, ProducerConfig};
use insync_client::{retriable_after_metadata_refresh, Appended, Cluster, PartitionChoice};
use insync_log::batch::{decode_records, iter_batches, BatchBuilder};
use insync_types::{now_epoch_ms, Acks, ErrorCode};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::checker::ConsumerLog;
use crate::cluster::value_text;
use crate::history::{Op, Outcome, Recorder};
use crate::LabError;

/// What the producers do.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub topic: String,
    pub partitions: i32,
    pub acks: Acks,
    pub producers: usize,
    /// Pause between two sends of one producer (bounds the load on a 2-core machine).
    pub pace: Duration,
    /// Kafka request.timeout.ms: how long the leader may wait for the ISR.
    pub request_timeout: Duration,
    /// Kafka delivery.timeout.ms: how long a send is retried.
    pub delivery_timeout: Duration,
    /// Prefix of every value, unique per run, so that values never collide across topics.
    pub tag: String,
}

/// Running producers.
pub struct Workload {
    recorder: Arc<Recorder>,
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
    acknowledged: Arc<AtomicUsize>,
    config: Arc<WorkloadConfig>,
    /// acks=0 sends still on the wire, per producer (bounded like Kafka's buffer.memory).
    in_flight: Vec<Arc<Semaphore>>,
}

/// acks=0 requests one producer may have on the wire before `send` blocks.
const ACKS_0_IN_FLIGHT: usize = 64;

fn one_record_batch(value: &str) -> Bytes {
    let now_ms = now_epoch_ms();
    let mut batch = BatchBuilder::new();
    batch.push(None, Some(value.as_bytes()), now_ms);
    batch.build()
}

impl Workload {
    /// Starts `config.producers` producer tasks against `bootstrap`.
    pub fn start(bootstrap: &str, config: WorkloadConfig) -> Result<Workload, LabError> {
        let config = Arc::new(config);
        let recorder = Arc::new(Recorder::new());
        let (stop, stop_rx) = watch::channel(false);
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        let mut in_flight = Vec::new();
        for producer in 0..config.producers {
            let cluster = Cluster::new(bootstrap)?;
            let semaphore = Arc::new(Semaphore::new(ACKS_0_IN_FLIGHT));
            in_flight.push(semaphore.clone());
            handles.push(tokio::spawn(produce_loop(
                producer,
                cluster,
                config.clone(),
                recorder.clone(),
                stop_rx.clone(),
                acknowledged.clone(),
                semaphore,
            )));
        }
        Ok(Workload { recorder, stop, handles, acknowledged, config, in_flight })
    }

    /// Sends acknowledged so far (acks=0: sent).
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    pub fn sent(&self) -> usize {
        self.recorder.len()
    }

    /// Stops sending new values, lets sends in progress finish (bounded by their delivery
    /// timeout), and returns the history. A send still unanswered at the deadline is left
    /// indeterminate.
    pub async fn stop(self) -> Vec<Op> {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now()
            + self.config.delivery_timeout
            + self.config.request_timeout
            + Duration::from_secs(6);
        for handle in self.handles {
            let abort = handle.abort_handle();
            if tokio::time::timeout_at(deadline, handle).await.is_err() {
                abort.abort();
            }
        }
        // acks=0 requests on the wire: wait (bounded) so none lands after the read-back.
        for semaphore in &self.in_flight {
            let _ = tokio::time::timeout_at(deadline, semaphore.acquire_many(ACKS_0_IN_FLIGHT as u32)).await;
        }
        self.recorder.ops()
    }
}

async fn produce_loop(
    producer: usize,
    cluster: Arc<Cluster>,
    config: Arc<WorkloadConfig>,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
    acknowledged: Arc<AtomicUsize>,
    in_flight: Arc<Semaphore>,
) {
    let mut seq: u64 = 0;
    let last_refresh: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    // One partition per producer, so a partition stuck in a failover holds up only its own
    // producers (each waits for its send, as a producer with max.in.flight=1 would).
    let partition = producer as i32 % config.partitions.max(1);
    let idempotent = (config.acks == Acks::All).then(|| {
        Producer::new(
            cluster.clone(),
            ProducerConfig {
                acks: Acks::All,
                linger: Duration::ZERO,
                max_in_flight: 1,
                request_timeout: config.request_timeout,
                delivery_timeout: config.delivery_timeout,
                enable_idempotence: true,
                ..ProducerConfig::default()
            },
        )
    });
    while !*stop.borrow() {
        let value = format!("{}-{producer}-{seq}", config.tag);
        seq += 1;
        let records = one_record_batch(&value);
        if config.acks == Acks::None {
            // Fire and forget: the producer counts the send as done once it is on its way
            // (it waits only for room in its buffer, like Kafka's max.block.ms).
            let permit = tokio::select! {
                p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.changed() => break,
            };
            let id = recorder.invoke(producer, partition, value);
            recorder.complete(id, Outcome::Ok { offset: None }, false);
            acknowledged.fetch_add(1, Ordering::Relaxed);
            let cluster = cluster.clone();
            let config = config.clone();
            let last_refresh = last_refresh.clone();
            tokio::spawn(async move {
                let _permit = permit;
                send_fire_and_forget(&cluster, &config, partition, records, &last_refresh).await;
            });
        } else if let Some(idempotent) = &idempotent {
            let id = recorder.invoke(producer, partition, value.clone());
            let outcome = send_idempotent(idempotent, &config, partition, value).await;
            if outcome.is_ok() {
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            // Retries of an idempotent send cannot duplicate: never excused as "retried".
            recorder.complete(id, outcome, false);
        } else {
            let id = recorder.invoke(producer, partition, value);
            let (outcome, retried) = send(&cluster, &config, partition, records).await;
            if outcome.is_ok() {
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            recorder.complete(id, outcome, retried);
        }
        tokio::select! {
            _ = tokio::time::sleep(config.pace) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Whether `every` has passed since the last time this returned true (then it records now).
fn due(last: &Mutex<Option<Instant>>, every: Duration) -> bool {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < every) {
        return false;
    }
    *last = Some(now);
    true
}

/// An acks=0 send as Kafka's producer makes it: the record waits (in the accumulator,
/// within delivery.timeout.ms) while its partition has no reachable leader, but once a
/// request has left it is never retried — the producer cannot know its fate. A Kafka broker
/// closes the connection of a failed acks=0 produce (`KafkaApis.handleProduceRequest`) and
/// the producer's NetworkClient then refreshes metadata; so do we, at most every 200 ms.
async fn send_fire_and_forget(
    cluster: &Cluster,
    config: &WorkloadConfig,
    partition: i32,
    records: Bytes,
    last_refresh: &Mutex<Option<Instant>>,
) {
    let deadline = Instant::now() + config.delivery_timeout;
    let mut backoff = Backoff::new();
    loop {
        let attempt = cluster.produce(
            &config.topic,
            partition,
            Acks::None,
            config.request_timeout,
            Duration::ZERO,
            records.clone(),
        );
        let Err(failure) = attempt.await else { return };
        if retriable_after_metadata_refresh(failure.code) && due(last_refresh, Duration::from_millis(200)) {
            let _ = cluster.refresh_metadata().await;
        }
        let never_sent = failure.appended == Appended::No
            && matches!(failure.code, ErrorCode::LEADER_NOT_AVAILABLE | ErrorCode::BROKER_NOT_AVAILABLE);
        if !never_sent || Instant::now() + backoff.current() >= deadline {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One acks=all send through the idempotent producer (which retries by itself).
async fn send_idempotent(producer: &Producer, config: &WorkloadConfig, partition: i32, value: String) -> Outcome {
    let now_ms = now_epoch_ms();
    let sent = producer
        .send(&config.topic, PartitionChoice::Explicit(partition), None, Some(Bytes::from(value)), now_ms)
        .await;
    let result = match sent {
        Ok(rx) => rx.await.unwrap_or_else(|_| {
            Err(insync_client::ProduceFailure {
                partition,
                code: ErrorCode::UNKNOWN_SERVER_ERROR,
                message: "producer stopped".into(),
                appended: Appended::Unknown,
            })
        }),
        Err(f) => Err(f),
    };
    match result {
        Ok(ack) => Outcome::Ok { offset: Some(ack.offset) },
        Err(f) if f.appended == Appended::No => Outcome::Failed { error: f.code },
        Err(f) => Outcome::Indeterminate { error: Some(f.code) },
    }
}

/// One send with Kafka's retries. Returns the outcome and whether an attempt that may have
/// been written was retried.
async fn send(cluster: &Cluster, config: &WorkloadConfig, partition: i32, records: Bytes) -> (Outcome, bool) {
    let deadline = Instant::now() + config.delivery_timeout;
    let mut backoff = Backoff::new();
    let mut maybe_written = false;
    loop {
        // One attempt (a zero delivery timeout makes `produce` try once).
        let attempt = cluster.produce(
            &config.topic,
            partition,
            config.acks,
            config.request_timeout,
            Duration::ZERO,
            records.clone(),
        );
        match attempt.await {
            Ok(ack) => return (Outcome::Ok { offset: Some(ack.base_offset) }, maybe_written),
            Err(failure) => {
                let written = failure.appended != Appended::No;
                if !retriable_after_metadata_refresh(failure.code) || Instant::now() + backoff.current() >= deadline {
                    let outcome = if written || maybe_written {
                        Outcome::Indeterminate { error: Some(failure.code) }
                    } else {
                        Outcome::Failed { error: failure.code }
                    };
                    return (outcome, maybe_written);
                }
                maybe_written |= written;
                tokio::time::sleep(backoff.next_delay()).await;
                let _ = cluster.refresh_metadata().await;
            }
        }
    }
}

/// Reads a partition from offset 0 to the leader's HW through the leader, as a consumer
/// (Kafka consumers see only records below the HW).
pub async fn read_through_leader(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<ConsumerLog, LabError> {
    let cluster = Cluster::new(bootstrap)?;
    let deadline = Instant::now() + timeout;
    let timed_out = || LabError::Timeout {
        what: format!("reading {topic}-{partition} through the leader"),
        timeout_ms: timeout.as_millis() as u64,
    };
    let high_watermark = loop {
        match tokio::time::timeout(Duration::from_secs(3), cluster.list_offset(topic, partition, -1)).await {
            Ok(Ok(hw)) => break hw,
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = cluster.refresh_metadata().await;
            }
            _ => return Err(timed_out()),
        }
    };
    let mut records = Vec::new();
    let mut offset = 0i64;
    while offset < high_watermark {
        if Instant::now() >= deadline {
            return Err(timed_out());
        }
        let response = match cluster.fetch(topic, partition, offset, Duration::from_millis(200), 4 << 20).await {
            Ok(r) if r.error_code == 0 => r,
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = cluster.refresh_metadata().await;
                continue;
            }
        };
        let mut next = offset;
        for batch in iter_batches(&response.records) {
            let (_, batch) = batch.map_err(|e| LabError::Setup(format!("consumer read a corrupt batch: {e}")))?;
            let decoded =
                decode_records(batch).map_err(|e| LabError::Setup(format!("consumer read a corrupt batch: {e}")))?;
            for record in decoded {
                if record.offset >= offset && record.offset < high_watermark {
                    records.push((record.offset, value_text(record.value.as_deref())));
                    next = next.max(record.offset + 1);
                }
            }
        }
        offset = next;
    }
    Ok(ConsumerLog { high_watermark, records })
}
