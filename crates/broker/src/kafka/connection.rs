//! One Kafka client connection: a reader that decodes requests in arrival order and
//! dispatches them, and a writer that sends the answers in that same order (Kafka answers a
//! connection's requests in order; clients match them by correlation id but librdkafka
//! and the Java client also rely on the order). Produce appends happen in the reader, one
//! request after the other, so a pipelining idempotent producer's batches reach the log in
//! sequence order, while acks=all waits and fetch long-polls of several requests overlap in
//! the writer (as the gRPC ProduceStream does). Everything is bounded: frame size, requests
//! in flight, idle time, and how long an answer may wait for a client that does not read.
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::codec::{self, CodecError};
use super::{
    alter_configs, api_versions, create_partitions, create_topics, delete_records, delete_topics, describe_cluster,
    describe_configs, elect_leaders, fetch, find_coordinator, group, group_admin, group_offsets, metadata, produce,
    producer_id, supported_versions, KafkaContext,
};

/// Requests of one connection whose answers may be outstanding at once. Kafka itself reads
/// the next request only after answering the previous one; insync pipelines a little so
/// acks=all waits overlap, and stops reading (TCP backpressure) beyond this.
const MAX_IN_FLIGHT: usize = 16;

/// How long one answer may take to write to a client that stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long answers still in flight may take once the client stopped sending (EOF) or
/// the connection must close: the longest produce timeout or fetch wait clients use.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(35);

/// Who asked what: enough to frame the answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestMeta {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// What the writer does with one request's turn.
pub(super) enum Reply {
    /// Send this response frame.
    Frame(Bytes),
    /// Send nothing (a produce with acks=0 that succeeded).
    Nothing,
    /// Close the connection after the answers before it (Kafka closes the channel when an
    /// acks=0 produce fails: the only way to tell a client that does not read answers).
    Close(String),
}

pub(super) type PendingReply = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Answers with `response` once it resolves, encoded at the request's version.
pub(super) fn respond<T>(meta: RequestMeta, response: impl Future<Output = T> + Send + 'static) -> PendingReply
where
    T: Encodable + Send + 'static,
{
    Box::pin(async move {
        let response = response.await;
        match codec::response_frame(meta.correlation_id, meta.api_key, meta.api_version, &response) {
            Ok(frame) => Reply::Frame(frame),
            Err(e) => Reply::Close(e.to_string()),
        }
    })
}

/// Answers with `response` as it is.
pub(super) fn respond_now<T>(meta: RequestMeta, response: T) -> PendingReply
where
    T: Encodable + Send + 'static,
{
    respond(meta, std::future::ready(response))
}

/// Serves one client until it closes, misbehaves, or the listener stops (the caller then
/// drops this future).
pub(super) async fn serve(context: Arc<KafkaContext>, stream: TcpStream, peer: SocketAddr) {
    let (mut reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel::<(PendingReply, Held)>(MAX_IN_FLIGHT);
    let mut writer_task = tokio::spawn(write_replies(writer, rx, peer));
    // One Fetch in flight per connection (Kafka answers a connection's requests one at a
    // time; clients send one Fetch per broker anyway): a fetch answer may carry up to
    // fetch.max.bytes of records, and a client pipelining fetches it never reads must not
    // pin that many times over. The next Fetch is not read until the previous is answered.
    let fetch_slot = Arc::new(Semaphore::new(1));
    let read = async {
        loop {
            let frame = match codec::read_frame(&mut reader, &context.limits).await {
                Ok(frame) => frame,
                Err(CodecError::Closed) => return None,
                Err(e) => return Some(e.to_string()),
            };
            let is_fetch = frame.bytes.get(..2) == Some(&(ApiKey::Fetch as i16).to_be_bytes()[..]);
            let fetch_permit = if is_fetch { fetch_slot.clone().acquire_owned().await.ok() } else { None };
            let pending = match handle_frame(&context, frame.bytes, peer) {
                Ok(pending) => pending,
                Err(e) => return Some(e.to_string()),
            };
            let closes = matches!(pending, Handled::Close(_));
            let reply = match pending {
                Handled::Reply(reply) => reply,
                Handled::Close(reason) => Box::pin(std::future::ready(Reply::Close(reason))),
            };
            // The frame's receive budget (and a Fetch's slot) travel with its answer until
            // that is written.
            let held = Held { _budget: frame.budget, _fetch: fetch_permit };
            if tx.send((reply, held)).await.is_err() || closes {
                return None;
            }
        }
    };
    tokio::select! {
        closed = read => {
            if let Some(reason) = closed {
                warn!(%peer, %reason, "Kafka client: closing the connection");
            }
            drop(tx);
            if tokio::time::timeout(DRAIN_TIMEOUT, &mut writer_task).await.is_err() {
                writer_task.abort();
            }
        }
        _ = &mut writer_task => {}
    }
}

/// What a request holds until its answer is written: its share of the listener's receive
/// budget, and for a Fetch the connection's one fetch slot.
pub(super) struct Held {
    _budget: Option<OwnedSemaphorePermit>,
    _fetch: Option<OwnedSemaphorePermit>,
}

/// The result of reading one request.
enum Handled {
    Reply(PendingReply),
    /// Close after the answers before it.
    Close(String),
}

/// A request frame decoded, before it is handled.
pub(super) enum Decoded {
    Request {
        meta: RequestMeta,
        client_id: Option<StrBytes>,
        /// Boxed: a decoded request is far larger than the other variant.
        body: Box<RequestKind>,
    },
    /// KIP-511: an ApiVersions newer than any served, answered in the v0 format.
    ApiVersionsTooNew { correlation_id: i32 },
}

/// Routes a frame by its header (API key and version served?) and decodes it: the schema
/// walk, the header, the body. The listener and the fuzzing campaign both decode this way.
pub(super) fn decode_frame(frame: Bytes) -> Result<Decoded, CodecError> {
    let raw = codec::peek_header(&frame)?;
    let Ok(api_key) = ApiKey::try_from(raw.api_key) else {
        return Err(CodecError::Decode {
            what: format!("request with API key {}", raw.api_key),
            reason: "unknown API key".into(),
        });
    };
    let meta = RequestMeta { api_key, api_version: raw.api_version, correlation_id: raw.correlation_id };
    let Some((min_version, max_version)) = supported_versions(api_key) else {
        return Err(CodecError::Decode {
            what: format!("{api_key:?} v{}", raw.api_version),
            reason: "this API is not served by insync's Kafka listener (not advertised in ApiVersions)".into(),
        });
    };
    if api_key == ApiKey::ApiVersions && raw.api_version > max_version {
        return Ok(Decoded::ApiVersionsTooNew { correlation_id: raw.correlation_id });
    }
    if raw.api_version < min_version || raw.api_version > max_version {
        return Err(CodecError::Decode {
            what: format!("{api_key:?} v{}", raw.api_version),
            reason: format!("unsupported version: insync serves v{min_version} to v{max_version}"),
        });
    }
    let request = codec::decode_request(frame, api_key, raw.api_version)?;
    let client_id = request.header.client_id.clone();
    debug!(
        api = ?api_key,
        version = raw.api_version,
        correlation_id = raw.correlation_id,
        client_id = client_id.as_deref().unwrap_or(""),
        "Kafka request"
    );
    Ok(Decoded::Request { meta, client_id, body: Box::new(request.body()?) })
}

fn handle_frame(context: &Arc<KafkaContext>, frame: Bytes, peer: SocketAddr) -> Result<Handled, CodecError> {
    let (meta, client_id, body) = match decode_frame(frame)? {
        // KIP-511: a newer client's ApiVersions gets an UNSUPPORTED_VERSION answer in the v0
        // format it can always read, listing the ApiVersions versions to retry with.
        Decoded::ApiVersionsTooNew { correlation_id } => {
            return Ok(Handled::Reply(api_versions::unsupported_version(correlation_id)))
        }
        Decoded::Request { meta, client_id, body } => (meta, client_id, body),
    };
    let reply = match *body {
        RequestKind::ApiVersions(request) => api_versions::handle(meta, request),
        RequestKind::Metadata(request) => metadata::handle(context, meta, request),
        RequestKind::Produce(request) => {
            return Ok(match produce::handle(context, meta, request) {
                produce::Dispatched::Reply(reply) => Handled::Reply(reply),
                produce::Dispatched::Close(reason) => Handled::Close(reason),
            })
        }
        RequestKind::Fetch(request) => fetch::handle_fetch(context, meta, request),
        RequestKind::ListOffsets(request) => fetch::handle_list_offsets(context, meta, request),
        RequestKind::InitProducerId(request) => producer_id::handle(context, meta, request),
        RequestKind::FindCoordinator(request) => find_coordinator::handle(context, meta, request),
        RequestKind::JoinGroup(request) => group::handle_join(context, meta, client_id, peer, request),
        RequestKind::SyncGroup(request) => group::handle_sync(context, meta, request),
        RequestKind::Heartbeat(request) => group::handle_heartbeat(context, meta, request),
        RequestKind::LeaveGroup(request) => group::handle_leave(context, meta, request),
        RequestKind::OffsetCommit(request) => group_offsets::handle_offset_commit(context, meta, request),
        RequestKind::OffsetFetch(request) => group_offsets::handle_offset_fetch(context, meta, request),
        RequestKind::ListGroups(request) => group_admin::handle_list(context, meta, request),
        RequestKind::DescribeGroups(request) => group_admin::handle_describe(context, meta, request),
        RequestKind::DeleteGroups(request) => group_admin::handle_delete(context, meta, request),
        RequestKind::CreateTopics(request) => create_topics::handle(context, meta, request),
        RequestKind::DeleteTopics(request) => delete_topics::handle(context, meta, request),
        RequestKind::ElectLeaders(request) => elect_leaders::handle(context, meta, request),
        RequestKind::DescribeCluster(request) => describe_cluster::handle(context, meta, request),
        RequestKind::DeleteRecords(request) => delete_records::handle(context, meta, request),
        RequestKind::DescribeConfigs(request) => describe_configs::handle(context, meta, request),
        RequestKind::AlterConfigs(request) => alter_configs::handle_legacy(context, meta, request),
        RequestKind::IncrementalAlterConfigs(request) => alter_configs::handle_incremental(context, meta, request),
        RequestKind::CreatePartitions(request) => create_partitions::handle(context, meta, request),
        _ => {
            debug_assert!(false, "{:?} is in SUPPORTED_APIS but not dispatched", meta.api_key);
            let what = format!("{:?}", meta.api_key);
            return Err(CodecError::Decode { what, reason: "not dispatched".into() });
        }
    };
    Ok(Handled::Reply(reply))
}

/// Awaits the answers in request order (several at once) and writes them; what each
/// request holds is released once its answer is written.
async fn write_replies(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<(PendingReply, Held)>, peer: SocketAddr) {
    let mut pending = FuturesOrdered::new();
    let mut receiving = true;
    loop {
        tokio::select! {
            biased;
            Some((reply, _held)) = pending.next(), if !pending.is_empty() => match reply {
                Reply::Frame(frame) => {
                    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&frame)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, "Kafka client: write failed");
                            return;
                        }
                        Err(_) => {
                            warn!(%peer, seconds = WRITE_TIMEOUT.as_secs(), "Kafka client did not read its answers; closing");
                            return;
                        }
                    }
                }
                Reply::Nothing => {}
                Reply::Close(reason) => {
                    warn!(%peer, %reason, "Kafka client: closing the connection");
                    let _ = writer.shutdown().await;
                    return;
                }
            },
            next = rx.recv(), if receiving && pending.len() < MAX_IN_FLIGHT => match next {
                Some((reply, held)) => pending.push_back(async move { (reply.await, held) }),
                None => receiving = false,
            },
            else => {
                let _ = writer.shutdown().await;
                return;
            }
        }
    }
}
