//! insync's controller: the cluster metadata (brokers, topics, partitions with replicas,
//! leader, epochs and ISR), Kafka's rules for changing it, and the embedded Raft quorum
//! (openraft) that replicates it — the KRaft design (KIP-500, KIP-631). Brokers register,
//! heartbeat, request ISR changes and follow metadata through the gRPC `Controller` service.
//!
//! Layers: `metadata` (state) → `rules` (pure Kafka rules) → `command` (replicated commands,
//! deterministic apply) → `raft` (storage, state machine, transport) → `service` (gRPC) →
//! `node` (start/stop, liveness, leader balancing). `heartbeat` tracks broker sessions (`session` holds their streams);
//! `leader_balance` holds the preferred-leader rules; `internal_topics` guards
//! `__consumer_offsets` against clients; `convert` maps to protobuf; `quorum` parses
//! `--controller-quorum`.
pub mod command;
pub mod convert;
pub mod error;
pub mod heartbeat;
pub mod internal_topics;
pub mod leader_balance;
pub mod metadata;
pub mod node;
pub mod partition_growth;
pub mod quorum;
pub mod raft;
pub mod role;
pub mod rules;
pub mod service;
pub mod session;
pub mod topic_configs;

pub use error::{QuorumError, StorageError};
pub use metadata::{BrokerRegistration, ClusterState, PartitionState, TopicState};
pub use node::{
    ControllerConfig, ControllerNode, ControllerObserver, LeaderBalanceConfig, DEFAULT_BROKER_SESSION_CLOSE_GRACE_MS,
    DEFAULT_BROKER_SESSION_TIMEOUT_MS, DEFAULT_MIN_INSYNC_REPLICAS,
};
pub use quorum::parse_quorum;
pub use service::ControllerService;
