//! The embedded controller quorum on openraft 0.9 (storage-v2), Kafka's KRaft in miniature:
//! the type configuration and timing here, durable log storage in `log_store.rs`, the
//! metadata state machine in `state_machine.rs`, the gRPC transport in `network.rs`.
pub mod durable;
pub mod log_store;
pub mod network;
pub mod state_machine;

use crate::command::{Command, CommandResult};
use std::io::Cursor;

pub use log_store::LogStore;
pub use network::ControllerNetworkFactory;
pub use state_machine::StateMachineStore;

/// A controller's id in the quorum (Kafka `node.id` of a controller).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Commands in, `CommandResult`s out; nodes are `BasicNode { addr }`.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type ControllerRaft = openraft::Raft<TypeConfig>;

/// Leader heartbeat every 100 ms; followers call an election after 300–600 ms of silence:
/// failover within about a second on a laptop (KRaft's defaults are 500 ms fetch / 1–2 s
/// election, for datacenters).
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// Snapshot every 1000 applied entries; keep as many entries after it so a briefly lagging
/// follower catches up from the log rather than a snapshot.
pub const SNAPSHOT_EVERY_LOGS: u64 = 1000;

/// The Raft timing and snapshot policy; the error is boxed (openraft's is large).
pub fn raft_config() -> Result<openraft::Config, Box<openraft::ConfigError>> {
    openraft::Config {
        cluster_name: "insync-controller".to_string(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        install_snapshot_timeout: 2000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_LOGS),
        max_in_snapshot_log_to_keep: SNAPSHOT_EVERY_LOGS,
        // Snapshot chunks travel as JSON byte arrays (~4x); 1 MiB chunks stay far below
        // MAX_GRPC_MESSAGE_BYTES.
        snapshot_max_chunk_size: 1024 * 1024,
        ..Default::default()
    }
    .validate()
    .map_err(Box::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StorageError as ControllerStorageError;
    use openraft::testing::{StoreBuilder, Suite};

    /// Fresh stores in a temporary directory for each Suite case.
    struct TemporaryStoreBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for TemporaryStoreBuilder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), openraft::StorageError<NodeId>> {
            let to_storage_error = |e: ControllerStorageError| -> openraft::StorageError<NodeId> {
                openraft::StorageIOError::new(
                    openraft::ErrorSubject::Store,
                    openraft::ErrorVerb::Read,
                    openraft::AnyError::new(&e),
                )
                .into()
            };
            let directory =
                tempfile::tempdir().map_err(|e| to_storage_error(ControllerStorageError::io("tempdir", e)))?;
            let log_store = LogStore::open(directory.path()).await.map_err(to_storage_error)?;
            let state_machine = StateMachineStore::open(directory.path()).await.map_err(to_storage_error)?;
            Ok((directory, log_store, state_machine))
        }
    }

    #[test]
    fn storage_passes_the_openraft_suite() {
        // openraft::testing::Suite runs each case on its own tokio runtime.
        Suite::test_all(TemporaryStoreBuilder).expect("openraft storage suite");
    }

    #[test]
    fn raft_config_is_valid() {
        let config = raft_config().unwrap();
        assert!(config.election_timeout_min > config.heartbeat_interval);
    }
}
