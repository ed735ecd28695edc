//! Prometheus metrics of a node, named after Kafka's JMX metrics with an `insync_` prefix:
//! the HTTP exporter (`--metrics-listen`), the recorders that the replica manager and the
//! gRPC service call where things happen (ISR shrinks/expands, produce latency by acks,
//! errors by Kafka error name), and a task that recomputes the state gauges once a second
//! from the replica manager and, on a controller, from its applied metadata. Gauges are
//! recomputed rather than kept up to date at every event so they can never drift from the
//! state they describe.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use insync_controller::ControllerObserver;
use insync_types::{BrokerId, ErrorCode};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
use metrics_util::MetricKindMask;
use tokio::sync::watch;

use crate::config::BrokerArgs;
use crate::messages::FetchResponse;
use crate::replica_manager::ReplicaManager;

pub const UNDER_REPLICATED_PARTITIONS: &str = "insync_under_replicated_partitions";
pub const UNDER_MIN_ISR_PARTITIONS: &str = "insync_under_min_isr_partitions";
pub const AT_MIN_ISR_PARTITIONS: &str = "insync_at_min_isr_partitions";
pub const OFFLINE_PARTITIONS: &str = "insync_offline_partitions";
pub const OFFLINE_REPLICAS: &str = "insync_offline_replicas";
pub const ACTIVE_CONTROLLER: &str = "insync_active_controller";
pub const PARTITIONS: &str = "insync_partitions";
pub const LEADER_PARTITIONS: &str = "insync_leader_partitions";
pub const ISR_SHRINKS_TOTAL: &str = "insync_isr_shrinks_total";
pub const ISR_EXPANDS_TOTAL: &str = "insync_isr_expands_total";
pub const PRODUCE_LATENCY_SECONDS: &str = "insync_produce_latency_seconds";
pub const ERRORS_TOTAL: &str = "insync_errors_total";
pub const FOLLOWER_LAG_RECORDS: &str = "insync_follower_lag_records";
pub const FOLLOWER_SINCE_CAUGHT_UP_SECONDS: &str = "insync_follower_time_since_caught_up_seconds";
pub const LOG_END_OFFSET: &str = "insync_log_end_offset";
pub const HIGH_WATERMARK: &str = "insync_high_watermark";
pub const LOG_START_OFFSET: &str = "insync_log_start_offset";
pub const LOG_SIZE_BYTES: &str = "insync_log_size_bytes";

/// How often the state gauges are recomputed: a scrape interval is rarely below this.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// A gauge series not set for this long is dropped from the output, so a partition this
/// broker no longer leads (or hosts) stops reporting a frozen lag instead of a stale one.
const STALE_GAUGE_AFTER: Duration = Duration::from_secs(10);

/// Produce latency buckets in seconds: sub-millisecond acks=1 up to a 30 s request timeout.
const PRODUCE_LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {address}: {source}")]
    Install {
        address: SocketAddr,
        #[source]
        source: BuildError,
    },
}

/// Serves metrics where `--metrics-listen` says; Ok(false) when it says `none`. A taken
/// default port (derived from the node id) is a warning, not a failure: test and lab
/// clusters share node ids with a developer's own, and a broker without metrics beats no
/// broker. An address the operator chose must work.
pub fn serve(args: &BrokerArgs) -> Result<bool, MetricsError> {
    let Some((address, chosen)) = args.metrics_address() else {
        return Ok(false);
    };
    match install(address) {
        Ok(()) => {
            tracing::info!("node {}: Prometheus metrics on http://{address}/metrics", args.node_id);
            Ok(true)
        }
        Err(e) if !chosen => {
            tracing::warn!("node {}: {e}; serving no metrics (set --metrics-listen ADDR, or none)", args.node_id);
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Starts the HTTP exporter on `address` (`GET /metrics`) and installs it as the process's
/// metrics recorder. Must run inside the Tokio runtime (the listener is spawned on it).
pub fn install(address: SocketAddr) -> Result<(), MetricsError> {
    let install = || {
        PrometheusBuilder::new()
            .with_http_listener(address)
            .idle_timeout(MetricKindMask::GAUGE, Some(STALE_GAUGE_AFTER))
            .set_buckets_for_metric(Matcher::Full(PRODUCE_LATENCY_SECONDS.into()), PRODUCE_LATENCY_BUCKETS)?
            .install()
    };
    install().map_err(|source| MetricsError::Install { address, source })?;
    describe();
    Ok(())
}

/// HELP lines (Kafka's MBean names in brackets, for people who know those).
fn describe() {
    describe_gauge!(
        UNDER_REPLICATED_PARTITIONS,
        "Partitions led here whose ISR is smaller than their replica set (Kafka UnderReplicatedPartitions)"
    );
    describe_gauge!(
        UNDER_MIN_ISR_PARTITIONS,
        "Partitions led here whose ISR is below min(min.insync.replicas, RF): acks=all is refused and the HW is \
         held (Kafka UnderMinIsrPartitionCount)"
    );
    describe_gauge!(
        AT_MIN_ISR_PARTITIONS,
        "Partitions led here whose ISR equals min(min.insync.replicas, RF): one more failure stops acks=all \
         (Kafka AtMinIsrPartitionCount)"
    );
    describe_gauge!(
        OFFLINE_PARTITIONS,
        "Partitions without a leader, reported by the active controller only (Kafka OfflinePartitionsCount)"
    );
    describe_gauge!(
        OFFLINE_REPLICAS,
        "Replicas this broker took offline after a storage error; they stay offline until it restarts (Kafka \
         OfflineReplicaCount)"
    );
    describe_gauge!(ACTIVE_CONTROLLER, "1 on the active controller, else 0 (Kafka ActiveControllerCount)");
    describe_gauge!(PARTITIONS, "Partition replicas hosted by this broker (Kafka PartitionCount)");
    describe_gauge!(LEADER_PARTITIONS, "Partitions led by this broker (Kafka LeaderCount)");
    describe_counter!(ISR_SHRINKS_TOTAL, "ISR shrinks committed for partitions led here (Kafka IsrShrinksPerSec)");
    describe_counter!(ISR_EXPANDS_TOTAL, "ISR expansions committed for partitions led here (Kafka IsrExpandsPerSec)");
    describe_histogram!(
        PRODUCE_LATENCY_SECONDS,
        Unit::Seconds,
        "Produce request time on the leader, receipt to answer, by acks (Kafka TotalTimeMs request=Produce)"
    );
    describe_counter!(ERRORS_TOTAL, "Error answers by request and Kafka error name (Kafka ErrorsPerSec)");
    describe_gauge!(
        FOLLOWER_LAG_RECORDS,
        "On the leader: leader log end offset minus the follower's, as of its last fetch"
    );
    describe_gauge!(
        FOLLOWER_SINCE_CAUGHT_UP_SECONDS,
        "On the leader: seconds since the follower was last caught up; past replica.lag.time.max.ms it leaves the ISR"
    );
    describe_gauge!(LOG_END_OFFSET, "Log end offset of each hosted replica (Kafka LogEndOffset)");
    describe_gauge!(HIGH_WATERMARK, "High watermark of each hosted replica: consumers read below it");
    describe_gauge!(
        LOG_START_OFFSET,
        "Log start offset of each hosted replica: retention and DeleteRecords move it (Kafka LogStartOffset)"
    );
    describe_gauge!(LOG_SIZE_BYTES, "Bytes in all segments of each hosted replica (Kafka Size)");
}

/// The `acks` label: Kafka's spelling of the setting.
fn acks_label(acks: i32) -> &'static str {
    match acks {
        -1 => "all",
        0 => "0",
        1 => "1",
        _ => "invalid",
    }
}

/// A produce answered (or, for acks=0, handled) after `elapsed`.
pub fn record_produce(acks: i32, error: ErrorCode, elapsed: Duration) {
    histogram!(PRODUCE_LATENCY_SECONDS, "acks" => acks_label(acks)).record(elapsed.as_secs_f64());
    record_error("produce", error);
}

/// Every partition error of a fetch answer (followers and consumers alike).
pub fn record_fetch(response: &FetchResponse) {
    for partition in &response.partitions {
        record_error("fetch", partition.error);
    }
}

fn record_error(request: &'static str, error: ErrorCode) {
    if error != ErrorCode::NONE {
        counter!(ERRORS_TOTAL, "request" => request, "error" => error.name()).increment(1);
    }
}

/// A committed ISR change of a partition led here. One change may both drop and add a
/// member (each direction counts once, as Kafka's two meters would).
pub fn record_isr_change(old_isr: &[BrokerId], new_isr: &[BrokerId]) {
    let (shrank, expanded) = isr_change_kind(old_isr, new_isr);
    if shrank {
        counter!(ISR_SHRINKS_TOTAL).increment(1);
    }
    if expanded {
        counter!(ISR_EXPANDS_TOTAL).increment(1);
    }
}

fn isr_change_kind(old_isr: &[BrokerId], new_isr: &[BrokerId]) -> (bool, bool) {
    let shrank = old_isr.iter().any(|b| !new_isr.contains(b));
    let expanded = new_isr.iter().any(|b| !old_isr.contains(b));
    (shrank, expanded)
}

/// The per-broker partition counts behind the `*_partitions` gauges.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PartitionHealth {
    pub hosted: usize,
    pub led: usize,
    pub under_replicated: usize,
    pub under_min_isr: usize,
    pub at_min_isr: usize,
}

impl PartitionHealth {
    /// Adds one partition led here, from its committed ISR (Kafka `Partition.isUnderReplicated`,
    /// `isUnderMinIsr`, `isAtMinIsr`, all on the committed ISR and min(min.insync, RF)).
    pub fn add_led(&mut self, isr_size: usize, replica_count: usize, effective_min_isr: usize) {
        self.led += 1;
        self.under_replicated += usize::from(isr_size < replica_count);
        self.under_min_isr += usize::from(isr_size < effective_min_isr);
        self.at_min_isr += usize::from(isr_size == effective_min_isr);
    }
}

/// Recomputes every state gauge each `GAUGE_INTERVAL` until `stop` turns true.
pub async fn run_gauges(
    replica_manager: Option<Arc<ReplicaManager>>,
    controller: Option<ControllerObserver>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(GAUGE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if let Some(replica_manager) = &replica_manager {
            update_broker_gauges(replica_manager);
        }
        if let Some(controller) = &controller {
            // Standby controllers report 0, as in Kafka, so a sum over controllers is right.
            gauge!(OFFLINE_PARTITIONS).set(controller.offline_partitions().unwrap_or(0) as f64);
            gauge!(ACTIVE_CONTROLLER).set(if controller.is_active() { 1.0 } else { 0.0 });
        }
    }
}

fn update_broker_gauges(replica_manager: &ReplicaManager) {
    let now_ms = replica_manager.now_ms();
    let started = Instant::now();
    let mut health = PartitionHealth::default();
    for partition in replica_manager.all_partitions() {
        let tp = partition.topic_partition();
        let labels = [("topic", tp.topic.clone()), ("partition", tp.partition.to_string())];
        // Read under the partition lock, publish after releasing it.
        let mut followers = Vec::new();
        let (log_end_offset, high_watermark, log_start_offset, log_size_bytes) = partition.inspect(|state| {
            let log_end_offset = state.log_end_offset();
            if let Some(leader) = state.leader() {
                health.add_led(
                    leader.isr_state().committed().len(),
                    leader.replicas().len(),
                    leader.effective_min_isr(),
                );
                for (broker, progress) in leader.followers() {
                    // -1 until the follower's first fetch to this leader: lag unknown, report all of it.
                    let lag = log_end_offset - progress.log_end_offset.max(0);
                    let since_caught_up_ms = now_ms.saturating_sub(progress.last_caught_up_ms);
                    followers.push((broker, lag, since_caught_up_ms));
                }
            }
            (log_end_offset, state.high_watermark(), state.log_start_offset(), state.log_size_bytes())
        });
        health.hosted += 1;
        gauge!(LOG_END_OFFSET, &labels).set(log_end_offset as f64);
        gauge!(HIGH_WATERMARK, &labels).set(high_watermark as f64);
        gauge!(LOG_START_OFFSET, &labels).set(log_start_offset as f64);
        gauge!(LOG_SIZE_BYTES, &labels).set(log_size_bytes as f64);
        for (broker, lag, since_caught_up_ms) in followers {
            let labels = [labels[0].clone(), labels[1].clone(), ("follower", broker.to_string())];
            gauge!(FOLLOWER_LAG_RECORDS, &labels).set(lag as f64);
            gauge!(FOLLOWER_SINCE_CAUGHT_UP_SECONDS, &labels).set(since_caught_up_ms as f64 / 1000.0);
        }
    }
    gauge!(PARTITIONS).set(health.hosted as f64);
    gauge!(OFFLINE_REPLICAS).set(replica_manager.offline_partitions().len() as f64);
    gauge!(LEADER_PARTITIONS).set(health.led as f64);
    gauge!(UNDER_REPLICATED_PARTITIONS).set(health.under_replicated as f64);
    gauge!(UNDER_MIN_ISR_PARTITIONS).set(health.under_min_isr as f64);
    gauge!(AT_MIN_ISR_PARTITIONS).set(health.at_min_isr as f64);
    tracing::trace!("metrics gauges of {} partition(s) in {:?}", health.hosted, started.elapsed());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_health_follows_kafka_definitions() {
        let mut health = PartitionHealth::default();
        health.add_led(3, 3, 2); // healthy
        health.add_led(2, 3, 2); // under-replicated, at min ISR
        health.add_led(1, 3, 2); // under-replicated, under min ISR
        health.add_led(1, 1, 1); // RF=1: min(min.insync, RF) = 1, at min ISR, not under-replicated
        assert_eq!(health, PartitionHealth { hosted: 0, led: 4, under_replicated: 2, under_min_isr: 1, at_min_isr: 2 });
    }

    #[test]
    fn isr_changes_count_each_direction() {
        assert_eq!(isr_change_kind(&[1, 2, 3], &[1, 3]), (true, false));
        assert_eq!(isr_change_kind(&[1, 3], &[1, 2, 3]), (false, true));
        assert_eq!(isr_change_kind(&[1, 2], &[1, 3]), (true, true));
        assert_eq!(isr_change_kind(&[1, 2], &[1, 2]), (false, false));
    }

    #[test]
    fn acks_labels_use_kafka_spelling() {
        assert_eq!([acks_label(-1), acks_label(0), acks_label(1), acks_label(2)], ["all", "0", "1", "invalid"]);
    }

    /// The exporter end to end on a free loopback port: the recorders' output is what a
    /// Prometheus scrape sees. (One test per process may install the global recorder.)
    #[tokio::test]
    async fn exporter_serves_recorded_metrics() {
        let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        install(address).unwrap();
        record_produce(-1, ErrorCode::NONE, Duration::from_millis(3));
        record_produce(-1, ErrorCode::NOT_ENOUGH_REPLICAS, Duration::from_micros(200));
        record_isr_change(&[1, 2, 3], &[1, 3]);
        gauge!(UNDER_REPLICATED_PARTITIONS).set(1.0);
        let body = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut body = String::new();
            stream.read_to_string(&mut body).unwrap();
            body
        })
        .await
        .unwrap();
        assert!(body.contains("insync_produce_latency_seconds_bucket{acks=\"all\",le=\"0.005\"} 2"), "{body}");
        assert!(body.contains("insync_errors_total{request=\"produce\",error=\"NOT_ENOUGH_REPLICAS\"} 1"), "{body}");
        assert!(body.contains("insync_isr_shrinks_total 1"), "{body}");
        assert!(body.contains("insync_under_replicated_partitions 1"), "{body}");
        assert!(body.contains("# HELP insync_under_replicated_partitions"), "{body}");
    }
}
