//! The idempotent producer against an in-process fake broker whose answers are scripted per
//! produce request (issue 12): a batch queued behind one whose fate is unknown may already
//! be in the log, so it must not be written again under a new producer id or epoch; it is
//! retried under its old sequence numbers until the leader's answer tells its fate.
//!
//! The fake keeps Kafka's idempotence rules (`ProducerStateManager`: duplicates of the last 5
//! batches answered with their offsets, a sequence gap refused, an older epoch fenced, a new
//! epoch starting at 0) and remembers every batch it appended, so a duplicate is visible.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use insync_client::producer::{Producer, ProducerConfig, RecordAck, RecordResult};
use insync_client::{Appended, Cluster, PartitionChoice};
use insync_log::batch::{decode_records, parse_header};
use insync_proto as pb;
use insync_types::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// What the fake does with one produce request, in the order requests arrive.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Kafka's rules, answered.
    Normal,
    /// Kafka's rules, never answered.
    AppendSilently,
    /// Neither appended nor answered.
    Swallow,
    /// Appended, then the stream fails: this and every earlier unanswered batch is of
    /// unknown fate to the producer.
    AppendThenDrop,
    /// Not appended, and the stream fails.
    Drop,
    /// Refused with this error, nothing appended (checked before the sequence, as a leader
    /// checks min.insync.replicas).
    Reject(ErrorCode),
}

/// One appended batch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogEntry {
    producer_id: i64,
    epoch: i16,
    first_sequence: i32,
    value: Bytes,
}

#[derive(Default)]
struct ProducerEntry {
    epoch: i16,
    /// (first sequence, last sequence, first offset) of the newest 5 batches.
    batches: VecDeque<(i32, i32, i64)>,
}

#[derive(Default)]
struct State {
    script: VecDeque<Step>,
    log: Vec<LogEntry>,
    producers: HashMap<i64, ProducerEntry>,
    ids_given: Vec<i64>,
}

struct Fake {
    address: String,
    state: Mutex<State>,
    /// False: ProduceStream calls fail (the leader cannot be reached).
    accept_streams: AtomicBool,
}

impl Fake {
    async fn start(script: &[Step]) -> Arc<Fake> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address").to_string();
        let state = State { script: script.iter().copied().collect(), ..State::default() };
        let fake = Arc::new(Fake { address, state: Mutex::new(state), accept_streams: AtomicBool::new(true) });
        let server = tonic::transport::Server::builder()
            .add_service(pb::broker_server::BrokerServer::new(Service(fake.clone())))
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::spawn(server);
        fake
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn values(&self) -> Vec<Bytes> {
        self.state().log.iter().map(|a| a.value.clone()).collect()
    }

    fn next_step(&self) -> Step {
        self.state().script.pop_front().unwrap_or(Step::Normal)
    }

    /// Kafka's leader append for one single-record idempotent batch.
    fn append(&self, request: &pb::ProduceRequest) -> pb::ProduceResponse {
        let header = parse_header(&request.records).expect("the producer builds valid batches");
        let records = decode_records(&request.records).expect("the producer builds valid batches");
        let value = records.first().and_then(|r| r.value.clone()).unwrap_or_default();
        let (first, last) = (header.base_sequence, header.base_sequence + header.last_offset_delta);
        let mut guard = self.state();
        let state = &mut *guard;
        let offset = state.log.len() as i64;
        let entry = state.producers.entry(header.producer_id).or_default();
        let fresh = entry.batches.is_empty() || header.producer_epoch > entry.epoch;
        if header.producer_epoch < entry.epoch {
            return answer(ErrorCode::INVALID_PRODUCER_EPOCH, -1, false);
        }
        if !fresh {
            if let Some(&(_, _, original)) = entry.batches.iter().find(|b| b.0 == first && b.1 == last) {
                return answer(ErrorCode::NONE, original, true);
            }
        }
        let follows = if fresh { first == 0 } else { entry.batches.back().is_some_and(|b| b.1 + 1 == first) };
        if !follows {
            return answer(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1, false);
        }
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back((first, last, offset));
        if entry.batches.len() > 5 {
            entry.batches.pop_front();
        }
        let appended =
            LogEntry { producer_id: header.producer_id, epoch: header.producer_epoch, first_sequence: first, value };
        state.log.push(appended);
        answer(ErrorCode::NONE, offset, true)
    }

    /// Serves one ProduceStream: the script decides each request's fate.
    async fn serve_stream(self: Arc<Self>, mut inbound: tonic::Streaming<pb::ProduceRequest>, tx: Answers) {
        while let Ok(Some(request)) = inbound.message().await {
            let answer = match self.next_step() {
                Step::Normal => Ok(self.append(&request)),
                Step::AppendSilently => {
                    self.append(&request);
                    continue;
                }
                Step::Swallow => continue,
                Step::AppendThenDrop => {
                    self.append(&request);
                    Err(Status::unavailable("fake: connection lost"))
                }
                Step::Drop => Err(Status::unavailable("fake: connection lost")),
                Step::Reject(code) => Ok(answer(code, -1, false)),
            };
            // Each answer names its request, as a broker's does.
            let answer = answer.map(|a| pb::ProduceResponse { correlation_id: request.correlation_id, ..a });
            let dropped = answer.is_err();
            if tx.send(answer).await.is_err() || dropped {
                return;
            }
        }
    }
}

type Answers = mpsc::Sender<Result<pb::ProduceResponse, Status>>;

fn answer(code: ErrorCode, base_offset: i64, appended: bool) -> pb::ProduceResponse {
    pb::ProduceResponse {
        error_code: code.code(),
        error_message: format!("fake: {code}"),
        base_offset,
        appended,
        leader_epoch: 0,
        correlation_id: 0,
    }
}

struct Service(Arc<Fake>);

#[tonic::async_trait]
impl pb::broker_server::Broker for Service {
    async fn produce(&self, _: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type ProduceStreamStream = ReceiverStream<Result<pb::ProduceResponse, Status>>;

    async fn produce_stream(
        &self,
        request: Request<tonic::Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        if !self.0.accept_streams.load(Ordering::SeqCst) {
            return Err(Status::unavailable("fake: leader unreachable"));
        }
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(self.0.clone().serve_stream(request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn init_producer_id(
        &self,
        _: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let mut state = self.0.state();
        let producer_id = state.ids_given.len() as i64 + 1;
        state.ids_given.push(producer_id);
        Ok(Response::new(pb::InitProducerIdResponse { producer_id, ..Default::default() }))
    }

    async fn fetch(&self, _: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn metadata(&self, _: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        let broker = pb::BrokerMetadata { id: 1, address: self.0.address.clone(), ..Default::default() };
        let partition =
            pb::PartitionMetadata { partition: 0, leader: 1, replicas: vec![1], isr: vec![1], ..Default::default() };
        let topic = pb::TopicMetadata { name: "t".into(), partitions: vec![partition], ..Default::default() };
        let metadata = pb::ClusterMetadata { brokers: vec![broker], topics: vec![topic], ..Default::default() };
        Ok(Response::new(pb::MetadataResponse { metadata: Some(metadata) }))
    }

    async fn list_offsets(
        &self,
        _: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn create_topic(
        &self,
        _: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_records(
        &self,
        _: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn create_partitions(
        &self,
        _: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::CreatePartitionsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn alter_topic_configs(
        &self,
        _: Request<pb::AlterTopicConfigsRequest>,
    ) -> Result<Response<pb::AlterTopicConfigsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_topic(
        &self,
        _: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn elect_leaders(
        &self,
        _: Request<pb::ElectLeadersRequest>,
    ) -> Result<Response<pb::ElectLeadersResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn describe_replicas(
        &self,
        _: Request<pb::DescribeReplicasRequest>,
    ) -> Result<Response<pb::DescribeReplicasResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_groups(&self, _: Request<pb::ListGroupsRequest>) -> Result<Response<pb::ListGroupsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn describe_group(
        &self,
        _: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_group(
        &self,
        _: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// delivery.timeout.ms of the tests that let a batch expire.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

fn producer(fake: &Fake) -> Arc<Producer> {
    let cluster = Cluster::new(&fake.address).expect("a bootstrap list");
    let config = ProducerConfig { linger: Duration::ZERO, delivery_timeout: DELIVERY_TIMEOUT, ..Default::default() };
    Producer::new(cluster, config)
}

async fn send(producer: &Producer, value: &'static str) -> oneshot::Receiver<RecordResult> {
    let value = Some(Bytes::from_static(value.as_bytes()));
    producer.send("t", PartitionChoice::Explicit(0), None, value, 0).await.expect("queued")
}

async fn result(rx: oneshot::Receiver<RecordResult>) -> RecordResult {
    tokio::time::timeout(Duration::from_secs(20), rx).await.expect("answered in time").expect("answered")
}

fn values(values: &[&'static str]) -> Vec<Bytes> {
    values.iter().map(|v| Bytes::from_static(v.as_bytes())).collect()
}

/// a and b are written but their answers lost; a's retry is refused NOT_ENOUGH_REPLICAS
/// (checked before the duplicate check, so a's first copy is in the log all the same).
/// b, behind it, may be in the log too: it keeps its sequence, and its retry is answered
/// as the duplicate it is. Before: b went out again under a new producer id and was written
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_behind_a_definite_failure_of_unknown_fate_is_not_written_twice() {
    let script = [Step::AppendSilently, Step::AppendThenDrop, Step::Reject(ErrorCode::NOT_ENOUGH_REPLICAS)];
    let fake = Fake::start(&script).await;
    let producer = producer(&fake);
    let a = send(&producer, "a").await;
    let b = send(&producer, "b").await;

    let a = result(a).await;
    let b = result(b).await;
    producer.close().await;
    assert_eq!(fake.values(), values(&["a", "b"]), "nothing written twice");
    assert_eq!(fake.state().ids_given, vec![1]);
    assert_eq!(b.expect("b acknowledged"), RecordAck { partition: 0, offset: 1 });
    let failure = a.expect_err("a's retry was refused");
    assert_eq!(failure.appended, Appended::Unknown);
    assert!(failure.message.contains("unknown"), "{failure}");
}

/// a and b are written but their answers lost, and the leader cannot be reached until a's
/// delivery.timeout.ms has passed. a fails with its fate unknown; b keeps its sequence and
/// its retry is answered as a duplicate. Before: a's expiry took a new producer id, under
/// which b was renumbered and written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_behind_an_expired_one_is_not_written_twice() {
    let fake = Fake::start(&[Step::AppendSilently, Step::AppendThenDrop]).await;
    let producer = producer(&fake);
    let a = send(&producer, "a").await;
    // b must outlive a by more than the reconnection backoff (at most 800 ms here).
    tokio::time::sleep(DELIVERY_TIMEOUT * 3 / 4).await;
    fake.accept_streams.store(false, Ordering::SeqCst);
    let b = send(&producer, "b").await;

    let a = result(a).await;
    fake.accept_streams.store(true, Ordering::SeqCst);
    let b = result(b).await;
    producer.close().await;
    assert_eq!(fake.values(), values(&["a", "b"]), "nothing written twice");
    assert_eq!(fake.state().ids_given, vec![1]);
    assert_eq!(b.expect("b acknowledged"), RecordAck { partition: 0, offset: 1 });
    let failure = a.expect_err("a expired");
    assert_eq!(failure.appended, Appended::Unknown);
    assert!(failure.message.contains("unknown"), "{failure}");
}

/// As above, but neither a nor b reached the log. b's retry, under its old sequence, is
/// refused as out of order: now both are known not to be in the log, and b goes out again
/// renumbered under epoch 1 of the same producer id (KIP-360), not under a new id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_order_answer_after_an_unknown_fate_bumps_the_epoch() {
    let fake = Fake::start(&[Step::Swallow, Step::Drop]).await;
    let producer = producer(&fake);
    let a = send(&producer, "a").await;
    tokio::time::sleep(DELIVERY_TIMEOUT * 3 / 4).await;
    fake.accept_streams.store(false, Ordering::SeqCst);
    let b = send(&producer, "b").await;

    assert_eq!(result(a).await.expect_err("a expired").appended, Appended::Unknown);
    fake.accept_streams.store(true, Ordering::SeqCst);
    assert_eq!(result(b).await.expect("b acknowledged"), RecordAck { partition: 0, offset: 0 });
    producer.close().await;
    let log = fake.state().log.clone();
    let b = LogEntry { producer_id: 1, epoch: 1, first_sequence: 0, value: Bytes::from_static(b"b") };
    assert_eq!(log, vec![b]);
    assert_eq!(fake.state().ids_given, vec![1]);
}
