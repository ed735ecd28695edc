//! Where a consumer starts and where it goes when its position is out of range (Kafka's
//! auto.offset.reset): shared by `insync consume` and `insync consume --perf`.
use std::time::{Duration, Instant};

use insync_client::Cluster;
use insync_proto as pb;
use insync_types::ErrorCode;

/// ListOffsets, following leadership for a few seconds (metadata may be settling).
pub async fn retry_offset(cluster: &Cluster, topic: &str, partition: i32, timestamp: i64) -> anyhow::Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cluster.list_offset(topic, partition, timestamp).await {
            Ok(o) => return Ok(o),
            Err(e) if Instant::now() < deadline && e.code() != Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) => {
                tracing::debug!("list offsets {topic}-{partition}: {e}");
                let _ = cluster.refresh_metadata().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Where a consumer goes when its position is out of range, by `reset` (Kafka's
/// auto.offset.reset: earliest, latest, or none for an error). Says so on stderr.
pub async fn reset_position(
    cluster: &Cluster,
    topic: &str,
    p: i32,
    offset: i64,
    response: &pb::FetchPartitionResponse,
    reset: &str,
) -> anyhow::Result<i64> {
    let out_of_range = format!(
        "{}: offset {offset} is outside [{}, {}] for {topic}-{p}",
        ErrorCode::OFFSET_OUT_OF_RANGE,
        response.log_start_offset,
        response.log_end_offset,
    );
    let to = match reset {
        "earliest" => retry_offset(cluster, topic, p, -2).await?,
        "latest" => retry_offset(cluster, topic, p, -1).await?,
        _ => anyhow::bail!("{out_of_range} (auto.offset.reset=none)"),
    };
    eprintln!("{out_of_range}; reset to the {reset} offset {to} (auto.offset.reset={reset})");
    Ok(to)
}
