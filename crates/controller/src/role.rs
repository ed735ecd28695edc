//! Who the active controller is, derived from openraft metrics (KRaft: the Raft leader is the
//! active controller). A background task in `node.rs` republishes it on a watch channel only
//! when it changes, so request handlers and the metadata feed never hold a metrics borrow.
use crate::raft::NodeId;
use openraft::metrics::RaftMetrics;
use openraft::{BasicNode, ServerState};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerRole {
    /// The Raft leader as this node knows it, None during an election.
    pub leader_id: Option<NodeId>,
    /// The current Raft term.
    pub term: u64,
    /// This node leads *and* has applied the blank entry it appended on election, so its
    /// applied state holds everything committed before its term: only then may it judge
    /// requests against that state (Kafka's QuorumController likewise waits until it has
    /// replayed the log before acting as active controller).
    pub is_active: bool,
}

pub fn role_from_metrics(node_id: NodeId, metrics: &RaftMetrics<NodeId, BasicNode>) -> ControllerRole {
    let leads = metrics.state == ServerState::Leader && metrics.current_leader == Some(node_id);
    let applied_own_term = metrics.last_applied.is_some_and(|applied| applied.leader_id.term == metrics.current_term);
    ControllerRole {
        leader_id: metrics.current_leader,
        term: metrics.current_term,
        is_active: leads && applied_own_term,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::log_id;

    #[test]
    fn a_leader_is_active_only_once_it_applied_an_entry_of_its_own_term() {
        let mut metrics = RaftMetrics::<NodeId, BasicNode>::new_initial(2);
        metrics.current_term = 5;
        metrics.current_leader = Some(2);
        metrics.state = ServerState::Leader;
        metrics.last_applied = Some(log_id(4, 1, 40));
        let elected = role_from_metrics(2, &metrics);
        assert_eq!(elected, ControllerRole { leader_id: Some(2), term: 5, is_active: false });

        metrics.last_applied = Some(log_id(5, 2, 41));
        assert!(role_from_metrics(2, &metrics).is_active);

        metrics.state = ServerState::Follower;
        metrics.current_leader = Some(3);
        let follower = role_from_metrics(2, &metrics);
        assert_eq!((follower.leader_id, follower.is_active), (Some(3), false));
    }
}
