//! The I/O half of `insync cluster watch`: each round asks the active controller for
//! metadata (brokers relay it from a cache that lags and carries no heartbeat ages), falls
//! back to a broker's copy when the controller does not answer, and asks every broker for
//! its DescribeReplicas report in parallel. Every call has a deadline, so a paused
//! (SIGSTOPped) process slows a round down by at most that much and never hangs it.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use insync_client::Cluster;
use insync_proto as pb;
use insync_proto::controller_client::ControllerClient;
use insync_types::now_epoch_ms;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use super::snapshot::{MetadataSource, Reports, Snapshot};

/// Deadline of one controller or broker call; well under the 3000 ms session timeout so a
/// round still shows the failover as it unfolds.
const CALL_TIMEOUT: Duration = Duration::from_millis(1_000);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Collector {
    cluster: Arc<Cluster>,
    topic: Option<String>,
    /// The controller that answered last (or that brokers named); asked first.
    controller_address: Option<String>,
    controller_channels: HashMap<String, Channel>,
}

impl Collector {
    pub fn new(cluster: Arc<Cluster>, topic: Option<String>) -> Self {
        Collector { cluster, topic, controller_address: None, controller_channels: HashMap::new() }
    }

    /// One round. Fails only when neither a controller nor any broker gave metadata.
    pub async fn collect(&mut self) -> anyhow::Result<Snapshot> {
        let at_ms = now_epoch_ms();
        let (source, metadata) = self.metadata().await?;
        let reports = self.describe_all(&metadata).await;
        Ok(Snapshot::build(at_ms, source, &metadata, &reports, self.topic.as_deref()))
    }

    async fn metadata(&mut self) -> anyhow::Result<(MetadataSource, pb::ClusterMetadata)> {
        let mut tried: Vec<String> = Vec::new();
        let mut last_error = String::from("no controller known");
        // The known controller, then whichever one it or the brokers name (a controller
        // that is not active names the one that is, as NOT_CONTROLLER does).
        let mut next = self.controller_address.clone();
        let mut broker_copy: Option<pb::ClusterMetadata> = None;
        for _ in 0..4 {
            let address = match next.take() {
                Some(a) if !tried.contains(&a) => a,
                _ => {
                    if broker_copy.is_none() {
                        match self.cluster.refresh_metadata().await {
                            Ok(m) => broker_copy = Some((*m).clone()),
                            Err(e) => last_error = format!("{last_error}; brokers: {e}"),
                        }
                    }
                    match broker_copy.as_ref().map(|m| m.controller_address.clone()) {
                        Some(a) if !a.is_empty() && !tried.contains(&a) => a,
                        _ => break,
                    }
                }
            };
            tried.push(address.clone());
            match self.controller_metadata(&address).await {
                Ok(m) if m.controller_address == address => {
                    self.controller_address = Some(address.clone());
                    return Ok((MetadataSource::Controller { address }, m));
                }
                Ok(m) => {
                    last_error = format!("controller at {address} is not the active one");
                    if !m.controller_address.is_empty() {
                        next = Some(m.controller_address);
                    }
                }
                Err(e) => {
                    self.controller_channels.remove(&address);
                    last_error = format!("controller at {address}: {e}");
                }
            }
        }
        self.controller_address = None;
        let metadata = match broker_copy {
            Some(m) => m,
            None => (*self.cluster.refresh_metadata().await.map_err(|e| anyhow::anyhow!("{last_error}; {e}"))?).clone(),
        };
        Ok((MetadataSource::BrokerCache { reason: last_error }, metadata))
    }

    async fn controller_metadata(&mut self, address: &str) -> Result<pb::ClusterMetadata, String> {
        let channel = match self.controller_channels.get(address) {
            Some(c) => c.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{address}"))
                    .map_err(|e| e.to_string())?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(CALL_TIMEOUT);
                let channel = tokio::time::timeout(CALL_TIMEOUT, endpoint.connect())
                    .await
                    .map_err(|_| "connect timed out".to_string())?
                    .map_err(|e| error_chain(&e))?;
                self.controller_channels.insert(address.to_string(), channel.clone());
                channel
            }
        };
        let mut client = ControllerClient::new(channel).max_decoding_message_size(pb::MAX_GRPC_MESSAGE_BYTES);
        let topics = self.topic.iter().cloned().collect();
        let mut request = tonic::Request::new(pb::MetadataRequest { topics });
        request.set_timeout(CALL_TIMEOUT);
        match tokio::time::timeout(CALL_TIMEOUT, client.get_metadata(request)).await {
            Err(_) => Err("timed out".into()),
            Ok(Err(status)) => Err(status_text(&status)),
            Ok(Ok(r)) => r.into_inner().metadata.ok_or_else(|| "empty metadata response".to_string()),
        }
    }

    /// Every registered broker's report (fenced ones too: a fenced broker may be up).
    async fn describe_all(&self, metadata: &pb::ClusterMetadata) -> Reports {
        let topics: Vec<String> = self.topic.iter().cloned().collect();
        let mut calls = JoinSet::new();
        for broker in &metadata.brokers {
            let cluster = Arc::clone(&self.cluster);
            let (id, address, topics) = (broker.id, broker.address.clone(), topics.clone());
            calls.spawn(async move {
                let call = async {
                    let mut client = cluster.broker(&address).await.map_err(|e| short(&e.to_string()))?;
                    let mut request = tonic::Request::new(pb::DescribeReplicasRequest { topics });
                    request.set_timeout(CALL_TIMEOUT);
                    client.describe_replicas(request).await.map(|r| r.into_inner()).map_err(|s| status_text(&s))
                };
                let outcome = match tokio::time::timeout(CALL_TIMEOUT + CONNECT_TIMEOUT, call).await {
                    Ok(result) => result,
                    Err(_) => Err("timed out".to_string()),
                };
                (id, outcome)
            });
        }
        let mut reports = Reports::new();
        while let Some(joined) = calls.join_next().await {
            if let Ok((id, outcome)) = joined {
                reports.insert(id, outcome);
            }
        }
        reports
    }
}

/// tonic hides the cause ("Connection refused") in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s = format!("{s}: {inner}");
        cur = inner.source();
    }
    short(&s)
}

/// A status's message plus its source chain, where tonic keeps "Connection refused".
fn status_text(status: &tonic::Status) -> String {
    let mut s = status.message().to_string();
    let mut cur = std::error::Error::source(status);
    while let Some(inner) = cur {
        s = format!("{s}: {inner}");
        cur = inner.source();
    }
    short(&s)
}

/// The most telling part of a transport error, short enough for a table cell.
fn short(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    for (known, said) in [
        ("connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("timeout expired", "timed out"),
        ("deadline has elapsed", "timed out"),
        ("connection reset", "connection reset"),
        ("broken pipe", "broken pipe"),
    ] {
        if lower.contains(known) {
            return said.to_string();
        }
    }
    let trimmed: String = message.chars().take(60).collect();
    if trimmed.is_empty() {
        "error".into()
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn transport_errors_shrink_to_their_cause() {
        assert_eq!(
            short("transport error talking to 127.0.0.1:9092: tcp connect error: Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(short("Timeout expired: transport error: Timeout expired"), "timed out");
        assert_eq!(short("h2 protocol error: unexpected frame"), "h2 protocol error: unexpected frame");
        assert_eq!(short(""), "error");
    }
}
