//! Producer ids for idempotent producers (Kafka `ProducerIdManager`, KIP-98): handed out
//! one by one from a block the active controller allocates (Kafka AllocateProducerIds,
//! KIP-730), so ids are unique cluster-wide. Shared by the gRPC `InitProducerId`
//! (service.rs) and the Kafka listener's InitProducerId (kafka/producer_id.rs).
use std::sync::{Arc, Mutex};
use std::time::Duration;

use insync_proto as pb;
use insync_types::{BrokerId, ErrorCode};

use crate::controller_link::{ControllerLink, ControllerReply};

/// How long an InitProducerId may wait for the controller to allocate a new block.
const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct ProducerIdManager {
    link: Arc<ControllerLink>,
    broker_id: BrokerId,
    /// This process's incarnation: the controller refuses blocks to a stale incarnation.
    incarnation: u64,
    /// The current block: ids [next, end) not handed out yet.
    block: Mutex<(i64, i64)>,
    /// One block allocation at a time: concurrent callers that find the block empty wait
    /// for the allocation in flight instead of each asking the controller for a block.
    refill: tokio::sync::Mutex<()>,
}

impl ProducerIdManager {
    pub fn new(link: Arc<ControllerLink>, broker_id: BrokerId, incarnation: u64) -> Self {
        ProducerIdManager {
            link,
            broker_id,
            incarnation,
            block: Mutex::new((0, 0)),
            refill: tokio::sync::Mutex::new(()),
        }
    }

    fn take(&self) -> Option<i64> {
        let mut ids = self.block.lock().unwrap_or_else(|p| p.into_inner());
        (ids.0 < ids.1).then(|| {
            ids.0 += 1;
            ids.0 - 1
        })
    }

    /// The next producer id (epoch 0 is the caller's), asking the controller for a new
    /// block when this one is used up. Errors carry Kafka's code and a reason.
    pub async fn next_producer_id(&self) -> Result<i64, (ErrorCode, String)> {
        if let Some(id) = self.take() {
            return Ok(id);
        }
        let _refilling = self.refill.lock().await;
        if let Some(id) = self.take() {
            return Ok(id); // another caller refilled while we waited
        }
        let request = pb::AllocateProducerIdsRequest { broker_id: self.broker_id, incarnation: self.incarnation };
        let block = self
            .link
            .call(ALLOCATE_TIMEOUT, |mut c| async move { c.allocate_producer_ids(request).await })
            .await
            .map_err(|e| (ErrorCode::REQUEST_TIMED_OUT, e.to_string()))?;
        let (code, message, _) = block.controller_error();
        if code != ErrorCode::NONE {
            return Err((code, message));
        }
        *self.block.lock().unwrap_or_else(|p| p.into_inner()) =
            (block.first_producer_id, block.first_producer_id + i64::from(block.count));
        self.take().ok_or_else(|| (ErrorCode::UNKNOWN_SERVER_ERROR, "empty producer id block".to_string()))
    }
}
