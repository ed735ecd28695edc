//! The failover timeline of `insync cluster watch`: a pure state machine fed successive
//! snapshots (time inside them), giving events out — heartbeat lost, fenced, leader A→B,
//! offline, ISR shrink/expand, first successful produce — each with milliseconds since the
//! failover began, and one summary line per partition when its failover is over.
//!
//! What is observed, and how precisely: fencing and elections are seen when a snapshot
//! shows them (so within one refresh interval); "heartbeat lost" is dated back to the
//! broker's last heartbeat when the controller reports its age, so "+0 ms" is the moment it
//! went silent and "fenced +3012 ms" reads against the 3000 ms session timeout. "First
//! successful produce" writes nothing: the new leader's HW passing the log end it had when
//! elected means records appended in the new epoch reached every ISR member, which is what
//! an acks=all producer waits for.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::snapshot::{ids, leader_text, MetadataSource, PartitionView, Snapshot};

/// Without a produce to wait for (idle topic), an episode is closed after this long quiet.
pub const EPISODE_GIVE_UP_MS: i64 = 60_000;
/// A new leader whose log has not grown this long after its election gets no write at all
/// (an idle partition, or writes refused): its failover is over, without a produce to show.
pub const NO_WRITE_GIVE_UP_MS: i64 = 5_000;
/// An episode stays open this long after its last event, so the steps of one failover that
/// land in different refreshes (or a second broker dying just after) share one "+0".
pub const EPISODE_SETTLE_MS: i64 = 1_000;

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Wall-clock milliseconds (for heartbeat lost: the last heartbeat).
    pub time_ms: i64,
    /// Milliseconds since the failover episode began; None outside an episode.
    pub since_failover_ms: Option<i64>,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    HeartbeatLost {
        broker: i32,
        detail: String,
    },
    HeartbeatResumed {
        broker: i32,
    },
    Fenced {
        broker: i32,
    },
    Unfenced {
        broker: i32,
    },
    ShuttingDown {
        broker: i32,
    },
    LeaderChanged {
        partition: String,
        from: i32,
        to: i32,
        leader_epoch: i32,
    },
    Offline {
        partition: String,
        from: i32,
        leader_epoch: i32,
    },
    IsrChanged {
        partition: String,
        from: Vec<i32>,
        to: Vec<i32>,
    },
    FirstProduce {
        partition: String,
        leader: i32,
        high_watermark: i64,
    },
    ControllerChanged {
        from: i32,
        to: i32,
    },
    ControllerUnreachable {
        reason: String,
    },
    ControllerReachable {
        controller: i32,
    },
    /// The end of a failover: `steps` as (what, ms since the episode began).
    FailoverSummary {
        partition: Option<String>,
        steps: Vec<(String, i64)>,
        outcome: String,
    },
}

impl EventKind {
    pub fn text(&self) -> String {
        match self {
            EventKind::HeartbeatLost { broker, detail } => format!("broker {broker} heartbeat lost ({detail})"),
            EventKind::HeartbeatResumed { broker } => format!("broker {broker} heartbeat resumed"),
            EventKind::Fenced { broker } => format!("broker {broker} fenced"),
            EventKind::Unfenced { broker } => format!("broker {broker} unfenced (rejoined)"),
            EventKind::ShuttingDown { broker } => format!("broker {broker} in controlled shutdown"),
            EventKind::LeaderChanged { partition, from, to, leader_epoch } => {
                format!("{partition}: leader {}→{to} (epoch {leader_epoch})", leader_text(*from))
            }
            EventKind::Offline { partition, from, leader_epoch } => {
                format!("{partition}: OFFLINE, leader {}→none (epoch {leader_epoch})", leader_text(*from))
            }
            EventKind::IsrChanged { partition, from, to } => {
                let how = if to.iter().all(|b| from.contains(b)) {
                    "shrink"
                } else if from.iter().all(|b| to.contains(b)) {
                    "expand"
                } else {
                    "change"
                };
                format!("{partition}: ISR {how} [{}] → [{}]", ids(from), ids(to))
            }
            EventKind::FirstProduce { partition, leader, high_watermark } => {
                format!("{partition}: first successful produce (leader {leader} HW → {high_watermark})")
            }
            EventKind::ControllerChanged { from, to } => {
                format!("active controller {}→{}", leader_text(*from), leader_text(*to))
            }
            EventKind::ControllerUnreachable { reason } => {
                format!("controller unreachable, showing a broker's cached metadata: {reason}")
            }
            EventKind::ControllerReachable { controller } => format!("controller {controller} answering again"),
            EventKind::FailoverSummary { partition, steps, outcome } => {
                let chain = steps.iter().map(|(what, ms)| format!("{what} +{ms} ms")).collect::<Vec<_>>().join(" → ");
                let chain = if outcome.is_empty() { chain } else { format!("{chain} → {outcome}") };
                match partition {
                    Some(p) => format!("failover of {p}: {chain}"),
                    None => format!("failover: {chain}"),
                }
            }
        }
    }

    /// Kinds that begin a failover episode when none is open.
    fn starts_episode(&self) -> bool {
        matches!(
            self,
            EventKind::HeartbeatLost { .. }
                | EventKind::Fenced { .. }
                | EventKind::ShuttingDown { .. }
                | EventKind::LeaderChanged { .. }
                | EventKind::Offline { .. }
        )
    }
}

impl Event {
    /// The JSON line of a streamed event: its fields plus the rendered time and text.
    pub fn json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("time".into(), clock(self.time_ms).into());
            map.insert("text".into(), self.kind.text().into());
        }
        value
    }

    /// "15:12:03.120  +3012 ms  broker 1 fenced" (UTC).
    pub fn line(&self) -> String {
        let since = self.since_failover_ms.map(|ms| format!("+{ms} ms")).unwrap_or_default();
        format!("{}  {since:>10}  {}", clock(self.time_ms), self.kind.text())
    }
}

/// HH:MM:SS.mmm of a wall-clock millisecond, UTC (no time-zone database needed).
pub fn clock(epoch_ms: i64) -> String {
    let ms = epoch_ms.rem_euclid(86_400_000);
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// A new leader whose first committed write we are waiting for.
#[derive(Debug, Clone)]
struct AwaitProduce {
    leader: i32,
    leader_epoch: i32,
    /// When the election was seen.
    elected_ms: i64,
    /// The new leader's log end when elected (or the best stand-in): its HW passing this
    /// means a write of the new epoch is on every ISR member.
    baseline: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct PartitionEpisode {
    /// The leader before the episode touched this partition (whose loss explains it).
    first_leader: i32,
    steps: Vec<(String, i64)>,
    awaiting: Option<AwaitProduce>,
    /// Left without a leader and none elected since: the failover is not over.
    offline: bool,
    summarized: bool,
}

#[derive(Debug, Clone)]
struct Episode {
    start_ms: i64,
    last_event_ms: i64,
    brokers: BTreeMap<i32, Vec<(String, i64)>>,
    partitions: BTreeMap<String, PartitionEpisode>,
}

/// Feed it snapshots in order; it remembers the previous one and any open episode.
#[derive(Debug, Default)]
pub struct Timeline {
    previous: Option<Snapshot>,
    /// Brokers currently silent (see `BrokerView::heartbeat_lost`).
    silent: BTreeSet<i32>,
    episode: Option<Episode>,
}

impl Timeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a failover episode is in progress (the TUI shows it).
    pub fn episode_started_ms(&self) -> Option<i64> {
        self.episode.as_ref().map(|e| e.start_ms)
    }

    /// Compares `now` with the previous snapshot and returns what changed, as events (with
    /// the summaries of failovers that are over).
    pub fn observe(&mut self, now: &Snapshot) -> Vec<Event> {
        let Some(previous) = self.previous.take() else {
            // The first snapshot is the baseline: brokers already down are not news.
            self.silent = now.brokers.iter().filter(|b| b.heartbeat_lost()).map(|b| b.id).collect();
            self.previous = Some(now.clone());
            return Vec::new();
        };
        let mut kinds: Vec<(i64, EventKind)> = Vec::new();
        let at = now.at_ms;

        // A broker's cache can be older than what we already showed; diffing against it
        // would invent fence/unfence flips. Metadata events wait for a version at least as new.
        let metadata_moved_on = now.metadata_version >= previous.metadata_version;

        controller_events(&previous, now, metadata_moved_on, &mut kinds);
        self.broker_events(&previous, now, metadata_moved_on, &mut kinds);
        let awaits = if metadata_moved_on { partition_events(&previous, now, &mut kinds) } else { Vec::new() };

        // Open an episode if something failover-like happened.
        if self.episode.is_none() {
            if let Some(start) = kinds.iter().filter(|(_, k)| k.starts_episode()).map(|(t, _)| *t).min() {
                self.episode = Some(Episode {
                    start_ms: start,
                    last_event_ms: at,
                    brokers: BTreeMap::new(),
                    partitions: BTreeMap::new(),
                });
            }
        }

        let mut events = Vec::new();
        for (time_ms, kind) in kinds {
            events.push(self.record(time_ms, kind));
        }
        if let Some(episode) = self.episode.as_mut() {
            for (name, wait, from) in awaits {
                let entry = episode
                    .partitions
                    .entry(name)
                    .or_insert_with(|| PartitionEpisode { first_leader: from, ..Default::default() });
                entry.awaiting = Some(wait);
                entry.summarized = false;
            }
        }
        self.check_first_produce(now, &mut events);
        self.maybe_close(now, &mut events);

        self.previous = Some(if metadata_moved_on { now.clone() } else { Snapshot { at_ms: now.at_ms, ..previous } });
        events
    }

    /// Heartbeats lost and resumed, fencing and controlled shutdown, from `previous` to `now`.
    /// Silence is tracked in `self.silent` rather than diffed, so it is news once.
    fn broker_events(
        &mut self,
        previous: &Snapshot,
        now: &Snapshot,
        metadata_moved_on: bool,
        kinds: &mut Vec<(i64, EventKind)>,
    ) {
        let at = now.at_ms;
        for b in &now.brokers {
            let before = previous.brokers.iter().find(|p| p.id == b.id);
            let was_silent = self.silent.contains(&b.id);
            if b.heartbeat_lost() && !was_silent {
                self.silent.insert(b.id);
                let detail = match (&b.describe_error, b.last_heartbeat_ms_ago) {
                    (Some(e), Some(ms)) => format!("not answering: {e}; last heartbeat {ms} ms before"),
                    (Some(e), None) => format!("not answering: {e}"),
                    (None, Some(ms)) => format!("no heartbeat for {ms} ms"),
                    (None, None) => "silent".into(),
                };
                // Dated back to the last heartbeat the controller saw: the moment it went
                // silent, not the moment this refresh happened to notice.
                let since = b.last_heartbeat_ms_ago.filter(|ms| (0..EPISODE_GIVE_UP_MS).contains(ms)).unwrap_or(0);
                kinds.push((at - since, EventKind::HeartbeatLost { broker: b.id, detail }));
            } else if !b.heartbeat_lost() && was_silent {
                self.silent.remove(&b.id);
                // A fenced broker coming back is reported as "unfenced" once it is.
                if !b.fenced && before.is_none_or(|p| !p.fenced) {
                    kinds.push((at, EventKind::HeartbeatResumed { broker: b.id }));
                }
            }
            let Some(before) = before.filter(|_| metadata_moved_on) else { continue };
            if b.fenced && !before.fenced {
                kinds.push((at, EventKind::Fenced { broker: b.id }));
            } else if !b.fenced && before.fenced {
                kinds.push((at, EventKind::Unfenced { broker: b.id }));
            }
            if b.in_controlled_shutdown && !before.in_controlled_shutdown {
                kinds.push((at, EventKind::ShuttingDown { broker: b.id }));
            }
        }
    }

    /// Stamps an event with the episode clock and files it under its broker or partition.
    fn record(&mut self, time_ms: i64, kind: EventKind) -> Event {
        let Some(episode) = self.episode.as_mut() else {
            return Event { time_ms, since_failover_ms: None, kind };
        };
        let since = (time_ms - episode.start_ms).max(0);
        episode.last_event_ms = episode.last_event_ms.max(time_ms);
        let step = |what: String| (what, since);
        match &kind {
            EventKind::HeartbeatLost { broker, .. } => {
                episode.brokers.entry(*broker).or_default().push(step("heartbeat lost".into()))
            }
            EventKind::HeartbeatResumed { broker } => {
                episode.brokers.entry(*broker).or_default().push(step("heartbeat resumed".into()))
            }
            EventKind::Fenced { broker } => episode.brokers.entry(*broker).or_default().push(step("fenced".into())),
            EventKind::ShuttingDown { broker } => {
                episode.brokers.entry(*broker).or_default().push(step("controlled shutdown".into()))
            }
            EventKind::LeaderChanged { partition, from, to, leader_epoch } => {
                let first_leader = *from;
                let progress = episode
                    .partitions
                    .entry(partition.clone())
                    .or_insert_with(|| PartitionEpisode { first_leader, ..Default::default() });
                progress.offline = false;
                progress.steps.push(step(format!("leader {}→{to} (epoch {leader_epoch})", leader_text(*from))));
            }
            EventKind::Offline { partition, from, leader_epoch } => {
                let first_leader = *from;
                let progress = episode
                    .partitions
                    .entry(partition.clone())
                    .or_insert_with(|| PartitionEpisode { first_leader, ..Default::default() });
                progress.offline = true;
                progress.awaiting = None;
                progress.steps.push(step(format!("offline (epoch {leader_epoch})")));
            }
            _ => {}
        }
        Event { time_ms, since_failover_ms: Some(since), kind }
    }

    fn check_first_produce(&mut self, now: &Snapshot, events: &mut Vec<Event>) {
        let Some(episode) = self.episode.as_mut() else { return };
        for (name, progress) in episode.partitions.iter_mut() {
            let Some(wait) = progress.awaiting.clone() else { continue };
            let Some(p) = now.partitions.iter().find(|p| &p.name() == name) else { continue };
            let Some(r) = p.replica(wait.leader) else { continue };
            let leads = r.reports_leader && r.reported_leader_epoch.is_some_and(|e| e >= wait.leader_epoch);
            let (Some(hw), Some(baseline)) = (r.high_watermark, wait.baseline) else { continue };
            if !(leads && hw > baseline) {
                let appended = r.log_end_offset.is_some_and(|leo| leo > baseline);
                if leads && !appended && now.at_ms - wait.elected_ms >= NO_WRITE_GIVE_UP_MS {
                    // Appended-but-uncommitted writes keep waiting (that is the story: the ISR
                    // cannot take them); no write at all is an idle partition.
                    progress.awaiting = None;
                    progress.summarized = true;
                    events.push(Event {
                        time_ms: now.at_ms,
                        since_failover_ms: Some((now.at_ms - episode.start_ms).max(0)),
                        kind: EventKind::FailoverSummary {
                            partition: Some(name.clone()),
                            steps: chain(&episode.brokers, progress),
                            outcome: format!("no write appended within {} s", NO_WRITE_GIVE_UP_MS / 1000),
                        },
                    });
                }
                continue;
            }
            let since = (now.at_ms - episode.start_ms).max(0);
            episode.last_event_ms = episode.last_event_ms.max(now.at_ms);
            progress.awaiting = None;
            progress.steps.push(("first successful produce".into(), since));
            events.push(Event {
                time_ms: now.at_ms,
                since_failover_ms: Some(since),
                kind: EventKind::FirstProduce { partition: name.clone(), leader: wait.leader, high_watermark: hw },
            });
            progress.summarized = true;
            events.push(Event {
                time_ms: now.at_ms,
                since_failover_ms: Some(since),
                kind: EventKind::FailoverSummary {
                    partition: Some(name.clone()),
                    steps: chain(&episode.brokers, progress),
                    outcome: String::new(),
                },
            });
        }
    }

    /// Closes the episode once nothing is pending: every silent broker fenced or back,
    /// every new leader seen committing a write (or given up on), and a short settle.
    fn maybe_close(&mut self, now: &Snapshot, events: &mut Vec<Event>) {
        let Some(episode) = self.episode.as_ref() else { return };
        let quiet_ms = now.at_ms - episode.last_event_ms;
        let limbo = episode.brokers.keys().any(|id| {
            self.silent.contains(id)
                && now.brokers.iter().any(|b| b.id == *id && !b.fenced && !b.in_controlled_shutdown)
        });
        let awaiting = episode.partitions.values().any(|p| p.awaiting.is_some() || p.offline);
        let give_up = quiet_ms >= EPISODE_GIVE_UP_MS;
        if !give_up && (limbo || awaiting || quiet_ms < EPISODE_SETTLE_MS) {
            return;
        }
        let Some(episode) = self.episode.take() else { return };
        let since = (now.at_ms - episode.start_ms).max(0);
        let mut summarized_any = false;
        for (name, progress) in &episode.partitions {
            summarized_any |= progress.summarized;
            if progress.awaiting.is_some() || progress.offline {
                summarized_any = true;
                let outcome = if progress.offline {
                    format!("still offline after {} s", quiet_ms / 1000)
                } else {
                    format!("no successful produce seen for {} s", quiet_ms / 1000)
                };
                events.push(Event {
                    time_ms: now.at_ms,
                    since_failover_ms: Some(since),
                    kind: EventKind::FailoverSummary {
                        partition: Some(name.clone()),
                        steps: chain(&episode.brokers, progress),
                        outcome,
                    },
                });
            }
        }
        if !summarized_any && !episode.brokers.is_empty() {
            let steps: Vec<(String, i64)> = sorted(
                episode
                    .brokers
                    .iter()
                    .flat_map(|(id, steps)| steps.iter().map(move |(what, ms)| (format!("broker {id} {what}"), *ms))),
            );
            events.push(Event {
                time_ms: now.at_ms,
                since_failover_ms: Some(since),
                kind: EventKind::FailoverSummary {
                    partition: None,
                    steps,
                    outcome: "no partition leader moved".into(),
                },
            });
        }
    }
}

/// The old leader's broker steps and the partition's own steps, in time order.
fn chain(brokers: &BTreeMap<i32, Vec<(String, i64)>>, progress: &PartitionEpisode) -> Vec<(String, i64)> {
    let broker_steps = brokers.get(&progress.first_leader).into_iter().flatten().cloned();
    sorted(broker_steps.chain(progress.steps.iter().cloned()))
}

fn sorted(steps: impl Iterator<Item = (String, i64)>) -> Vec<(String, i64)> {
    let mut steps: Vec<_> = steps.collect();
    steps.sort_by_key(|(_, ms)| *ms); // stable: same-instant steps keep their causal order
    steps
}

/// The controller becoming unreachable or reachable again, and a new active controller.
fn controller_events(previous: &Snapshot, now: &Snapshot, metadata_moved_on: bool, kinds: &mut Vec<(i64, EventKind)>) {
    let at = now.at_ms;
    match (&previous.source, &now.source) {
        (MetadataSource::Controller { .. }, MetadataSource::BrokerCache { reason }) => {
            kinds.push((at, EventKind::ControllerUnreachable { reason: reason.clone() }))
        }
        (MetadataSource::BrokerCache { .. }, MetadataSource::Controller { .. }) => {
            kinds.push((at, EventKind::ControllerReachable { controller: now.controller_id }))
        }
        _ => {}
    }
    if metadata_moved_on && now.controller_id != previous.controller_id {
        kinds.push((at, EventKind::ControllerChanged { from: previous.controller_id, to: now.controller_id }));
    }
}

/// Leader changes (or a partition left offline) and ISR changes from `previous` to `now`.
/// Returns, for each newly elected leader, the first produce to wait for: (partition name,
/// what to wait for, the leader it replaced).
fn partition_events(
    previous: &Snapshot,
    now: &Snapshot,
    kinds: &mut Vec<(i64, EventKind)>,
) -> Vec<(String, AwaitProduce, i32)> {
    let at = now.at_ms;
    let mut awaits = Vec::new();
    for p in &now.partitions {
        let Some(q) = previous.partitions.iter().find(|q| q.topic == p.topic && q.partition == p.partition) else {
            continue;
        };
        let name = p.name();
        if p.leader != q.leader || p.leader_epoch != q.leader_epoch {
            if p.leader < 0 {
                if q.leader >= 0 {
                    let offline =
                        EventKind::Offline { partition: name.clone(), from: q.leader, leader_epoch: p.leader_epoch };
                    kinds.push((at, offline));
                }
            } else {
                kinds.push((
                    at,
                    EventKind::LeaderChanged {
                        partition: name.clone(),
                        from: q.leader,
                        to: p.leader,
                        leader_epoch: p.leader_epoch,
                    },
                ));
                let wait = AwaitProduce {
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    elected_ms: at,
                    baseline: election_baseline(q, p),
                };
                awaits.push((name.clone(), wait, q.leader));
            }
        }
        if p.isr != q.isr {
            kinds.push((at, EventKind::IsrChanged { partition: name, from: q.isr.clone(), to: p.isr.clone() }));
        }
    }
    awaits
}

/// The new leader's log end when it was elected: from the refresh before (as a follower of
/// a dead leader its log stood still), or from this one while it does not act as leader yet;
/// failing both, the partition HW.
fn election_baseline(before: &PartitionView, after: &PartitionView) -> Option<i64> {
    let leader = after.leader;
    let previous_leo = before.replica(leader).and_then(|r| r.log_end_offset);
    let current_leo = after
        .replica(leader)
        .filter(|r| !(r.reports_leader && r.reported_leader_epoch.is_some_and(|e| e >= after.leader_epoch)))
        .and_then(|r| r.log_end_offset);
    previous_leo.or(current_leo).or(before.high_watermark).or(after.high_watermark)
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::{BrokerView, ReplicaView};
    use super::*;

    /// A three-broker cluster with one partition `demo-0`, replicas 1,2,3.
    #[derive(Clone)]
    struct World {
        at_ms: i64,
        version: u64,
        brokers: Vec<BrokerView>,
        leader: i32,
        epoch: i32,
        isr: Vec<i32>,
        /// (broker → LEO, HW, reports leader) as each answers DescribeReplicas.
        replicas: BTreeMap<i32, (i64, i64, bool)>,
    }

    impl World {
        fn new() -> World {
            World {
                at_ms: 1_000_000,
                version: 10,
                brokers: (1..=3)
                    .map(|id| BrokerView {
                        id,
                        address: format!("b{id}"),
                        fenced: false,
                        in_controlled_shutdown: false,
                        last_heartbeat_ms_ago: Some(100),
                        describe_error: None,
                    })
                    .collect(),
                leader: 1,
                epoch: 0,
                isr: vec![1, 2, 3],
                replicas: [(1, (100, 100, true)), (2, (100, 100, false)), (3, (100, 100, false))].into(),
            }
        }

        fn snapshot(&self) -> Snapshot {
            let leader_leo = self.replicas.get(&self.leader).map(|r| r.0);
            let replica_states = (1..=3)
                .map(|b| {
                    let r = self.replicas.get(&b);
                    ReplicaView {
                        broker: b,
                        log_end_offset: r.map(|r| r.0),
                        lag: leader_leo.zip(r.map(|r| r.0)).map(|(l, x)| l - x),
                        high_watermark: r.map(|r| r.1),
                        reports_leader: r.is_some_and(|r| r.2),
                        reported_leader_epoch: r.map(|_| self.epoch),
                    }
                })
                .collect();
            Snapshot {
                at_ms: self.at_ms,
                source: MetadataSource::Controller { address: "c1".into() },
                metadata_version: self.version,
                controller_id: 1,
                controller_address: "c1".into(),
                brokers: self.brokers.clone(),
                partitions: vec![PartitionView {
                    topic: "demo".into(),
                    partition: 0,
                    leader: self.leader,
                    leader_epoch: self.epoch,
                    partition_epoch: self.epoch,
                    replicas: vec![1, 2, 3],
                    isr: self.isr.clone(),
                    high_watermark: self.replicas.get(&self.leader).filter(|r| r.2).map(|r| r.1),
                    replica_states,
                    notes: vec![],
                }],
            }
        }

        fn tick(&mut self, ms: i64) {
            self.at_ms += ms;
            for b in &mut self.brokers {
                if b.describe_error.is_some() {
                    b.last_heartbeat_ms_ago = b.last_heartbeat_ms_ago.map(|h| h + ms);
                }
            }
        }

        fn kill(&mut self, broker: i32) {
            self.brokers[broker as usize - 1].describe_error = Some("connection refused".into());
            self.replicas.remove(&broker);
        }
    }

    fn texts(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| format!("{:?} {}", e.since_failover_ms, e.kind.text())).collect()
    }

    #[test]
    fn a_killed_leader_gives_the_whole_chain_with_milliseconds() {
        let mut world = World::new();
        let mut timeline = Timeline::new();
        assert!(timeline.observe(&world.snapshot()).is_empty(), "the first snapshot is a baseline");

        // SIGKILL of broker 1, 100 ms after its last heartbeat; seen 150 ms later.
        world.kill(1);
        world.tick(150);
        world.brokers[0].last_heartbeat_ms_ago = Some(250);
        let events = timeline.observe(&world.snapshot());
        assert_eq!(
            texts(&events),
            ["Some(0) broker 1 heartbeat lost (not answering: connection refused; last heartbeat 250 ms before)"]
        );
        assert_eq!(events[0].time_ms, world.at_ms - 250, "dated back to the last heartbeat");
        let start = world.at_ms - 250;

        // Nothing new while the controller waits for the session timeout.
        world.tick(1_000);
        assert!(timeline.observe(&world.snapshot()).is_empty());

        // Fenced, removed from the ISR and replaced as leader in one metadata change.
        world.at_ms = start + 3_012;
        world.version += 1;
        world.brokers[0].fenced = true;
        world.leader = 2;
        world.epoch = 1;
        world.isr = vec![2, 3];
        let events = timeline.observe(&world.snapshot());
        assert_eq!(
            texts(&events),
            [
                "Some(3012) broker 1 fenced",
                "Some(3012) demo-0: leader 1→2 (epoch 1)",
                "Some(3012) demo-0: ISR shrink [1,2,3] → [2,3]",
            ]
        );

        // The new leader acts as leader and catches its HW up to its own log end: old
        // records committed, no new write yet — not a produce.
        world.tick(250);
        world.replicas.insert(2, (100, 100, true));
        assert!(timeline.observe(&world.snapshot()).is_empty());

        // A write of the new epoch reaches every ISR member.
        world.tick(150);
        world.replicas.insert(2, (105, 105, true));
        world.replicas.insert(3, (105, 105, false));
        let events = timeline.observe(&world.snapshot());
        assert_eq!(
            texts(&events),
            [
                "Some(3412) demo-0: first successful produce (leader 2 HW → 105)",
                "Some(3412) failover of demo-0: heartbeat lost +0 ms → fenced +3012 ms → leader 1→2 (epoch 1) +3012 ms → first successful produce +3412 ms",
            ]
        );

        // The episode closes after the settle time; the rejoin later is outside it.
        world.tick(EPISODE_SETTLE_MS);
        assert!(timeline.observe(&world.snapshot()).is_empty());
        assert_eq!(timeline.episode_started_ms(), None);
        world.tick(5_000);
        world.version += 1;
        world.brokers[0] =
            BrokerView { describe_error: None, last_heartbeat_ms_ago: Some(50), ..world.brokers[0].clone() };
        let events = timeline.observe(&world.snapshot());
        assert!(events.is_empty(), "back but still fenced: {events:?}");
        world.tick(250);
        world.version += 1;
        world.brokers[0].fenced = false;
        world.replicas.insert(1, (105, 105, false));
        world.isr = vec![2, 3, 1];
        let events = timeline.observe(&world.snapshot());
        assert_eq!(texts(&events), ["None broker 1 unfenced (rejoined)", "None demo-0: ISR expand [2,3] → [2,3,1]"]);
        assert!(events[0].line().ends_with("            broker 1 unfenced (rejoined)"), "{}", events[0].line());
    }

    #[test]
    fn a_pause_shorter_than_the_session_ends_with_a_broker_summary() {
        let mut world = World::new();
        let mut timeline = Timeline::new();
        timeline.observe(&world.snapshot());
        world.tick(1_300);
        world.brokers[2].last_heartbeat_ms_ago = Some(1_200);
        let events = timeline.observe(&world.snapshot());
        assert_eq!(texts(&events), ["Some(0) broker 3 heartbeat lost (no heartbeat for 1200 ms)"]);
        world.tick(1_000);
        world.brokers[2].last_heartbeat_ms_ago = Some(40);
        let events = timeline.observe(&world.snapshot());
        assert_eq!(texts(&events), ["Some(2200) broker 3 heartbeat resumed"]);
        world.tick(EPISODE_SETTLE_MS);
        let events = timeline.observe(&world.snapshot());
        assert_eq!(
            texts(&events),
            ["Some(3200) failover: broker 3 heartbeat lost +0 ms → broker 3 heartbeat resumed +2200 ms → no partition leader moved"]
        );
    }

    #[test]
    fn offline_then_back_and_an_idle_topic_gives_up() {
        let mut world = World::new();
        let mut timeline = Timeline::new();
        world.isr = vec![1];
        timeline.observe(&world.snapshot());
        world.kill(1);
        world.tick(3_100);
        world.version += 1;
        world.brokers[0].fenced = true;
        world.brokers[0].last_heartbeat_ms_ago = Some(3_100);
        world.leader = -1;
        world.epoch = 1;
        let events = timeline.observe(&world.snapshot());
        assert_eq!(
            texts(&events),
            [
                "Some(0) broker 1 heartbeat lost (not answering: connection refused; last heartbeat 3100 ms before)",
                "Some(3100) broker 1 fenced",
                "Some(3100) demo-0: OFFLINE, leader 1→none (epoch 1)",
            ]
        );
        // Broker 1 returns 10 s later and is elected again; nobody writes.
        // Offline keeps the episode open, however quiet.
        for _ in 0..8 {
            world.tick(1_000);
            assert!(timeline.observe(&world.snapshot()).is_empty());
        }
        world.tick(2_000);
        world.version += 1;
        world.brokers[0] = BrokerView {
            fenced: false,
            describe_error: None,
            last_heartbeat_ms_ago: Some(10),
            ..world.brokers[0].clone()
        };
        world.replicas.insert(1, (100, 100, true));
        world.leader = 1;
        world.epoch = 2;
        let events = timeline.observe(&world.snapshot());
        assert_eq!(
            texts(&events),
            ["Some(13100) broker 1 unfenced (rejoined)", "Some(13100) demo-0: leader none→1 (epoch 2)"]
        );
        world.tick(NO_WRITE_GIVE_UP_MS - 1);
        assert!(timeline.observe(&world.snapshot()).is_empty());
        world.tick(1);
        let events = timeline.observe(&world.snapshot());
        assert_eq!(
            texts(&events),
            ["Some(18100) failover of demo-0: heartbeat lost +0 ms → fenced +3100 ms → offline (epoch 1) +3100 ms → leader none→1 (epoch 2) +13100 ms → no write appended within 5 s"]
        );
        world.tick(EPISODE_SETTLE_MS);
        assert!(timeline.observe(&world.snapshot()).is_empty());
        assert_eq!(timeline.episode_started_ms(), None);
    }

    #[test]
    fn writes_appended_but_never_committed_keep_the_failover_open_until_give_up() {
        let mut world = World::new();
        let mut timeline = Timeline::new();
        timeline.observe(&world.snapshot());
        world.kill(1);
        world.tick(3_000);
        world.version += 1;
        world.brokers[0].fenced = true;
        world.brokers[0].last_heartbeat_ms_ago = Some(3_000);
        world.leader = 2;
        world.epoch = 1;
        world.isr = vec![2, 3];
        assert_eq!(timeline.observe(&world.snapshot()).len(), 4);
        // Broker 3 is paused: the new leader appends, its HW cannot move.
        world.brokers[2].last_heartbeat_ms_ago = Some(900);
        world.replicas.insert(2, (120, 100, true));
        world.tick(NO_WRITE_GIVE_UP_MS);
        assert!(timeline.observe(&world.snapshot()).is_empty(), "appended: still waiting, not idle");
        world.tick(EPISODE_GIVE_UP_MS - NO_WRITE_GIVE_UP_MS);
        let events = timeline.observe(&world.snapshot());
        assert_eq!(
            texts(&events),
            ["Some(63000) failover of demo-0: heartbeat lost +0 ms → fenced +3000 ms → leader 1→2 (epoch 1) +3000 ms → no successful produce seen for 60 s"]
        );
    }

    #[test]
    fn an_older_broker_cache_invents_no_flips_and_controller_loss_is_reported() {
        let mut world = World::new();
        let mut timeline = Timeline::new();
        world.version = 20;
        world.brokers[2].fenced = true;
        timeline.observe(&world.snapshot());
        let mut stale = world.snapshot();
        stale.at_ms += 250;
        stale.metadata_version = 15;
        stale.source = MetadataSource::BrokerCache { reason: "connection refused".into() };
        stale.brokers[2].fenced = false;
        for b in &mut stale.brokers {
            b.last_heartbeat_ms_ago = None;
        }
        let events = timeline.observe(&stale);
        assert_eq!(
            texts(&events),
            ["None controller unreachable, showing a broker's cached metadata: connection refused"]
        );
        let json = events[0].json();
        assert_eq!(json["text"], events[0].kind.text());
        assert_eq!(json["event"], "controller_unreachable");
        assert_eq!(json["since_failover_ms"], serde_json::Value::Null);
    }

    #[test]
    fn clock_is_utc_time_of_day() {
        assert_eq!(clock(86_400_000 + 3_723_004), "01:02:03.004");
    }
}
