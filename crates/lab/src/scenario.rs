//! The lab's scenarios: the matrix acks ∈ {0, 1, all} × min.insync.replicas ∈ {1, 2, 3} ×
//! fault, plus the controls; what Kafka's rules say each one must show (`expectation`);
//! the verdict on what the checker found (`judge`); and the runner that creates a topic,
//! streams writes from concurrent producers, strikes the fault mid-stream, heals the
//! cluster, reads every replica back and checks the history.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::checker::{check, Anomaly, AnomalyKind, CheckResult, Reads};
use crate::cluster::{LabCluster, NodeId, BROKERS};
use crate::history::Op;
use crate::workload::{read_through_leader, Workload, WorkloadConfig};
use crate::LabError;
use insync_types::Acks;

/// What strikes mid-stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    None,
    /// SIGKILL one follower: ISR 3 → 2.
    KillOneFollower,
    /// SIGKILL both followers: ISR → 1 (the leader alone).
    KillBothFollowers,
    /// SIGKILL the leader: the controller elects an ISR follower after the session timeout.
    KillLeader,
    /// SIGSTOP the leader past the session timeout, then SIGCONT: a zombie leader.
    PauseLeader,
    /// SIGKILL a follower, restart it, and SIGKILL the leader before it rejoined the ISR
    /// (the KIP-101 set-up).
    RestartFollowerThenKillLeader,
    /// Negative control (a): both followers SIGSTOPped, so acks=1 writes are on the leader
    /// only; SIGKILL the leader right after those acks, resume the followers.
    LeaderKilledRightAfterAcks,
    /// Control and negative control (b): the leader acknowledges acks=all writes that one
    /// follower (F2) holds but does not yet know are committed (its HW lags); the leader
    /// dies, the next leader (F1) dies before F2 fetched from it, and F2 is elected. A
    /// correct F2 keeps its log; a pre-KIP-101 F2 truncated it to its HW when it started
    /// following F1.
    Kip101DoubleFailover,
    /// Cut the leader off from every other node, controllers included, past the session
    /// timeout, then heal. Producers still reach it: a zombie that takes writes it can
    /// neither replicate nor commit, while the controller elects a follower.
    IsolateLeader,
    /// Cut the leader from the controller only: its followers fetch from it until the
    /// controller fences it and they follow the leader it elects.
    CutLeaderFromController,
    /// Cut the leader from its followers only: it still heartbeats, so the controller keeps
    /// it as the leader and accepts the ISR shrink to the leader alone; producers still
    /// reach it.
    CutLeaderFromFollowers,
    /// One-way cut: a follower's calls to the leader time out (calls the other way would
    /// work), so it stops fetching and leaves the ISR while it heartbeats as usual.
    OneWayCutFollowerToLeader,
    /// SIGSTOP the leader for longer than any of its controller calls' timeouts, so whatever
    /// it had in flight to the controller (heartbeat, AlterPartition) has timed out when it
    /// resumes, long fenced.
    PauseLeaderPastCallTimeout,
    /// Cut a follower's fetches (one way: it still heartbeats, so the controller never fences
    /// it), and make the controller slow (SIGSTOP well within the session timeout, longer
    /// than the brokers' AlterPartition timeout) just when the leader proposes the shrink: the proposal times out, is sent again, and the controller then
    /// answers the original and its copies. The pending ISR must hold until one answer
    /// settles it (Kafka `Partition.handleAlterPartitionError`).
    SlowControllerDuringShrink,
    /// Fill the leader's data directory (a size-limited tmpfs the lab mounts): appends fail
    /// with KAFKA_STORAGE_ERROR, the replica goes offline there, the controller elects a
    /// follower. Healed by freeing the space and restarting the broker (as in Kafka, an
    /// offline log directory comes back with a restart).
    DiskFullLeader,
    /// On a 3-voter quorum: cut the active controller from the other voters (brokers still
    /// reach it) past the session timeout, then heal. The others elect a new active
    /// controller; brokers must follow it, and no broker may be fenced for the old one's
    /// silence. No broker fails: nothing acknowledged may be lost.
    CutActiveControllerFromQuorum,
}

impl Fault {
    pub const MATRIX: [Fault; 14] = [
        Fault::None,
        Fault::KillOneFollower,
        Fault::KillBothFollowers,
        Fault::KillLeader,
        Fault::PauseLeader,
        Fault::RestartFollowerThenKillLeader,
        Fault::IsolateLeader,
        Fault::CutLeaderFromController,
        Fault::CutLeaderFromFollowers,
        Fault::OneWayCutFollowerToLeader,
        Fault::PauseLeaderPastCallTimeout,
        Fault::SlowControllerDuringShrink,
        Fault::DiskFullLeader,
        Fault::CutActiveControllerFromQuorum,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::KillOneFollower => "kill-one-follower",
            Fault::KillBothFollowers => "kill-both-followers",
            Fault::KillLeader => "kill-leader",
            Fault::PauseLeader => "pause-leader",
            Fault::RestartFollowerThenKillLeader => "restart-follower-then-kill-leader",
            Fault::LeaderKilledRightAfterAcks => "leader-killed-right-after-acks",
            Fault::Kip101DoubleFailover => "kip101-double-failover",
            Fault::IsolateLeader => "isolate-leader",
            Fault::CutLeaderFromController => "cut-leader-from-controller",
            Fault::CutLeaderFromFollowers => "cut-leader-from-followers",
            Fault::OneWayCutFollowerToLeader => "one-way-cut-follower-to-leader",
            Fault::PauseLeaderPastCallTimeout => "pause-leader-past-call-timeout",
            Fault::SlowControllerDuringShrink => "slow-controller-during-shrink",
            Fault::DiskFullLeader => "disk-full-leader",
            Fault::CutActiveControllerFromQuorum => "cut-active-controller-from-quorum",
        }
    }

    /// Whether the leader fails (so its unreplicated acks=1 writes may go with it).
    pub fn leader_fails(self) -> bool {
        matches!(
            self,
            Fault::KillLeader
                | Fault::PauseLeader
                | Fault::RestartFollowerThenKillLeader
                | Fault::LeaderKilledRightAfterAcks
                | Fault::Kip101DoubleFailover
                | Fault::IsolateLeader
                | Fault::CutLeaderFromController
                | Fault::PauseLeaderPastCallTimeout
                | Fault::DiskFullLeader
        )
    }

    /// Whether the scenario needs a 3-voter controller quorum (it runs on a cluster of its own).
    pub fn needs_quorum(self) -> bool {
        self == Fault::CutActiveControllerFromQuorum
    }

    /// Whether the brokers' data directories must be size-limited (mounted by the lab).
    pub fn needs_small_disks(self) -> bool {
        self == Fault::DiskFullLeader
    }

    /// The smallest ISR the fault leads to for a while (RF 3), as the controller and the
    /// leader's lag check will shrink it.
    pub fn isr_during(self) -> usize {
        match self {
            Fault::None | Fault::CutActiveControllerFromQuorum => 3,
            Fault::KillOneFollower
            | Fault::SlowControllerDuringShrink
            | Fault::KillLeader
            | Fault::PauseLeader
            | Fault::IsolateLeader
            | Fault::CutLeaderFromController
            | Fault::OneWayCutFollowerToLeader
            | Fault::PauseLeaderPastCallTimeout
            | Fault::DiskFullLeader => 2,
            Fault::KillBothFollowers
            | Fault::CutLeaderFromFollowers
            | Fault::RestartFollowerThenKillLeader
            | Fault::LeaderKilledRightAfterAcks
            | Fault::Kip101DoubleFailover => 1,
        }
    }
}

/// Plain matrix cell, control, or negative control (must be caught by the checker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    Matrix,
    Control,
    NegativeControl,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// `acks/min.insync/fault`, e.g. `all/2/kill-leader`; what `--scenario` matches.
    pub id: String,
    #[serde(serialize_with = "serialize_acks")]
    pub acks: Acks,
    pub min_insync_replicas: i32,
    pub fault: Fault,
    pub kind: ScenarioKind,
    /// Run on brokers started with `--unsafe-truncate-to-high-watermark`.
    pub unsafe_brokers: bool,
}

fn serialize_acks<S: serde::Serializer>(acks: &Acks, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(acks_name(*acks))
}

pub fn acks_name(acks: Acks) -> &'static str {
    match acks {
        Acks::All => "all",
        Acks::Leader => "1",
        Acks::None => "0",
    }
}

/// The matrix, then the controls, in the order `insync lab` runs them.
pub fn all_scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    for acks in [Acks::All, Acks::Leader, Acks::None] {
        for min in 1..=3 {
            for fault in Fault::MATRIX {
                out.push(Scenario {
                    id: format!("{}/{min}/{}", acks_name(acks), fault.slug()),
                    acks,
                    min_insync_replicas: min,
                    fault,
                    kind: ScenarioKind::Matrix,
                    unsafe_brokers: false,
                });
            }
        }
    }
    out.push(Scenario {
        id: "all/2/kip101-double-failover".into(),
        acks: Acks::All,
        min_insync_replicas: 2,
        fault: Fault::Kip101DoubleFailover,
        kind: ScenarioKind::Control,
        unsafe_brokers: false,
    });
    out.push(Scenario {
        id: "negative/1/2/leader-killed-after-acks".into(),
        acks: Acks::Leader,
        min_insync_replicas: 2,
        fault: Fault::LeaderKilledRightAfterAcks,
        kind: ScenarioKind::NegativeControl,
        unsafe_brokers: false,
    });
    out.push(Scenario {
        id: "negative/all/2/kip101-truncate-to-hw".into(),
        acks: Acks::All,
        min_insync_replicas: 2,
        fault: Fault::Kip101DoubleFailover,
        kind: ScenarioKind::NegativeControl,
        unsafe_brokers: true,
    });
    out
}

/// Whether `id` matches `pattern`: a glob where `*` matches anything, or, without `*`, a
/// substring.
pub fn matches(pattern: &str, id: &str) -> bool {
    if !pattern.contains('*') {
        return id.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = id;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

/// The scenarios matching any of `patterns` (all of them when there is none).
pub fn select(patterns: &[String]) -> Vec<Scenario> {
    all_scenarios().into_iter().filter(|s| patterns.is_empty() || patterns.iter().any(|p| matches(p, &s.id))).collect()
}

/// Whether acknowledged writes may be lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossRule {
    MustNotLose,
    MayLose,
}

/// Whether NOT_ENOUGH_REPLICAS (19) must, may, or must not be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorRule {
    Required,
    Allowed,
    Forbidden,
}

/// What Kafka's rules say a scenario must show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expectation {
    pub loss: LossRule,
    pub not_enough_replicas: ErrorRule,
    /// No fault: every send must succeed.
    pub no_errors: bool,
    pub negative_control: bool,
    /// One line for the table.
    pub summary: String,
}

/// Kafka's guarantees per scenario:
/// - acks=all loses nothing acknowledged as long as one replica that was in the ISR when
///   the write was acknowledged survives; every fault here leaves one. With
///   min.insync.replicas=1 the ISR may be the leader alone, so that guarantee is thin
///   (the leader's death would then lose writes), but no matrix fault kills a lone leader.
/// - acks=all with the ISR below min(min.insync.replicas, RF) is refused with
///   NOT_ENOUGH_REPLICAS (Kafka `Partition.appendRecordsToLeader`); with the ISR at or above
///   it, writes succeed ("ISR 3 → ok, ISR 2 → ok, ISR 1 → NOT_ENOUGH_REPLICAS" for
///   min.insync=2).
/// - acks=1 is durable while the leader lives; when it fails, what it acknowledged but had
///   not replicated may be lost (truncated by leader epoch when it returns, KIP-101/279).
/// - acks=0 promises nothing: the producer never hears back.
pub fn expectation(scenario: &Scenario) -> Expectation {
    let fault = scenario.fault;
    let min = scenario.min_insync_replicas.max(1) as usize;
    if scenario.kind == ScenarioKind::NegativeControl {
        return Expectation {
            loss: LossRule::MayLose,
            not_enough_replicas: ErrorRule::Allowed,
            no_errors: false,
            negative_control: true,
            summary: "negative control: loss must be caught".into(),
        };
    }
    match scenario.acks {
        Acks::All => {
            let isr = fault.isr_during();
            let rule = if isr < min {
                // The ISR stays below min.insync for seconds; only the restart case's
                // single-member ISR is brief enough to be missed, so it is "allowed" then.
                // A leader deposed behind a cut keeps its producers waiting (it still
                // answers them, as in Kafka) until it learns of its successor or their
                // requests time out; when the cut heals first, they may reach the new
                // leader only after the old one rejoined the ISR, and never meet the
                // smaller ISR.
                if (fault == Fault::RestartFollowerThenKillLeader && min == 2)
                    || matches!(fault, Fault::IsolateLeader | Fault::CutLeaderFromController)
                {
                    ErrorRule::Allowed
                } else {
                    ErrorRule::Required
                }
            } else if matches!(
                fault,
                Fault::None
                    | Fault::KillOneFollower
                    | Fault::KillBothFollowers
                    | Fault::KillLeader
                    | Fault::OneWayCutFollowerToLeader
                    | Fault::SlowControllerDuringShrink
                    // min.insync is checked against the committed ISR (Kafka
                    // `Partition.appendRecordsToLeader`): the zombie's never shrinks, the
                    // new leader's (the two followers, or the leader alone when cut from
                    // them) meets min.insync here.
                    | Fault::IsolateLeader
                    | Fault::CutLeaderFromController
                    | Fault::CutLeaderFromFollowers
                    | Fault::DiskFullLeader
            ) {
                ErrorRule::Forbidden
            } else {
                // A resumed zombie or a restart race may briefly see a smaller ISR.
                ErrorRule::Allowed
            };
            let summary = match rule {
                ErrorRule::Required => format!("0 lost; NOT_ENOUGH_REPLICAS (ISR {isr} < {min})"),
                ErrorRule::Forbidden => format!("0 lost; writes ok (ISR {isr} >= {min})"),
                ErrorRule::Allowed => "0 lost".to_string(),
            };
            Expectation {
                loss: LossRule::MustNotLose,
                not_enough_replicas: rule,
                no_errors: fault == Fault::None,
                negative_control: false,
                summary,
            }
        }
        Acks::Leader => Expectation {
            loss: if fault.leader_fails() { LossRule::MayLose } else { LossRule::MustNotLose },
            not_enough_replicas: ErrorRule::Forbidden,
            no_errors: fault == Fault::None,
            negative_control: false,
            summary: if fault.leader_fails() {
                "may lose (leader failed)".into()
            } else {
                "0 lost (leader lives)".into()
            },
        },
        Acks::None => Expectation {
            loss: LossRule::MayLose,
            not_enough_replicas: ErrorRule::Forbidden,
            no_errors: false,
            negative_control: false,
            summary: "may lose (never acknowledged)".into(),
        },
    }
}

/// The outcome of a scenario against its expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// As expected, nothing lost.
    Ok,
    /// As expected, with losses the scenario allows (acks=1 leader failure, acks=0).
    OkLossAllowed,
    /// Kafka's rules were broken (or an expected error never came).
    Violation,
    /// Negative control: the checker caught the injected bug, as it must.
    Caught,
    /// Negative control: nothing was caught — the lab would not notice this bug.
    Missed,
    /// The scenario could not run (set-up failure).
    Error,
}

impl Verdict {
    pub fn is_failure(self) -> bool {
        matches!(self, Verdict::Violation | Verdict::Missed | Verdict::Error)
    }
}

/// Safety anomalies: never allowed, whatever the acks level.
fn is_corruption(a: &Anomaly) -> bool {
    match a {
        Anomaly::Duplicate { retried, .. } => !retried,
        other => matches!(
            other.kind(),
            AnomalyKind::ReadOfFailedWrite
                | AnomalyKind::ReplicaDivergence
                | AnomalyKind::UnknownValue
                | AnomalyKind::HighWatermarkBeyondLog
        ),
    }
}

fn is_loss(a: &Anomaly) -> bool {
    matches!(a.kind(), AnomalyKind::LostAcknowledged | AnomalyKind::WrongOffset | AnomalyKind::OffsetConflict)
}

/// Counts of anomalies by kind.
pub fn anomaly_counts(check: &CheckResult) -> BTreeMap<AnomalyKind, usize> {
    let mut counts = BTreeMap::new();
    for a in &check.anomalies {
        *counts.entry(a.kind()).or_default() += 1;
    }
    counts
}

/// Judges a checked scenario. `healed`: whether the cluster became whole again in time.
pub fn judge(expectation: &Expectation, check: &CheckResult, healed: Result<(), String>) -> (Verdict, Vec<String>) {
    let mut reasons = Vec::new();
    let counts = anomaly_counts(check);
    let losses: usize = check.anomalies.iter().filter(|a| is_loss(a)).count();
    let corruption: Vec<&Anomaly> = check.anomalies.iter().filter(|a| is_corruption(a)).collect();
    let describe = |kinds: &BTreeMap<AnomalyKind, usize>| {
        kinds
            .iter()
            .map(|(k, n)| {
                format!(
                    "{n} {}",
                    serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if expectation.negative_control {
        return if check.stats.lost > 0 || losses > 0 || !corruption.is_empty() {
            let mut caught = vec![format!("{} acknowledged write(s) lost", check.stats.lost)];
            let others: BTreeMap<AnomalyKind, usize> =
                counts.into_iter().filter(|(k, _)| *k != AnomalyKind::LostAcknowledged).collect();
            if !others.is_empty() {
                caught.push(describe(&others));
            }
            (Verdict::Caught, caught)
        } else {
            (Verdict::Missed, vec!["the checker found no anomaly: this negative control did not bite".into()])
        };
    }
    if expectation.loss == LossRule::MustNotLose && losses > 0 {
        reasons.push(format!("lost {} acknowledged write(s) ({})", check.stats.lost, describe(&counts)));
    }
    for a in corruption.iter().take(3) {
        reasons.push(a.to_string());
    }
    if corruption.len() > 3 {
        reasons.push(format!("… {} more", corruption.len() - 3));
    }
    let ner = check.stats.errors.get("NOT_ENOUGH_REPLICAS").copied().unwrap_or(0);
    let ner_after = check.stats.errors.get("NOT_ENOUGH_REPLICAS_AFTER_APPEND").copied().unwrap_or(0);
    match expectation.not_enough_replicas {
        ErrorRule::Required if ner == 0 => {
            reasons.push("expected NOT_ENOUGH_REPLICAS (ISR below min.insync.replicas), got none".into())
        }
        ErrorRule::Forbidden if ner + ner_after > 0 => reasons.push(format!(
            "ISR never fell below min.insync.replicas, yet {ner} NOT_ENOUGH_REPLICAS and {ner_after} NOT_ENOUGH_REPLICAS_AFTER_APPEND"
        )),
        _ => {}
    }
    if expectation.no_errors && check.stats.failed + check.stats.indeterminate > 0 {
        reasons.push(format!("no fault, yet {} send(s) failed", check.stats.failed + check.stats.indeterminate));
    }
    if let Err(why) = healed {
        reasons.push(format!("the cluster did not heal: {why}"));
    }
    if !reasons.is_empty() {
        (Verdict::Violation, reasons)
    } else if losses > 0 {
        (Verdict::OkLossAllowed, vec![format!("lost {} (allowed)", check.stats.lost)])
    } else {
        (Verdict::Ok, Vec::new())
    }
}

/// Knobs of a run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    pub producers: usize,
    pub pace: Duration,
    pub request_timeout: Duration,
    pub delivery_timeout: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            seed: 1,
            producers: 4,
            pace: Duration::from_millis(5),
            request_timeout: Duration::from_secs(5),
            delivery_timeout: Duration::from_secs(15),
        }
    }
}

/// A scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub topic: String,
    pub seed: u64,
    pub duration_ms: u64,
    pub expected: String,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub stats: crate::checker::Stats,
    pub anomaly_counts: BTreeMap<AnomalyKind, usize>,
    /// The first anomalies (all of them are counted above).
    pub anomalies: Vec<Anomaly>,
    /// What happened, step by step (fault timeline, leaders, truncations).
    pub notes: Vec<String>,
}

/// A per-scenario seed derived from the run's seed and the scenario's id (FNV-1a), so one
/// scenario replays the same with `--scenario` as within the whole matrix.
pub fn scenario_seed(seed: u64, id: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    seed ^ h
}

/// Production time after the fault strikes: long enough for the fault to play out (and,
/// where one is expected, for NOT_ENOUGH_REPLICAS to be answered).
fn production_after_fault(fault: Fault, session_ms: u64) -> Duration {
    Duration::from_millis(match fault {
        Fault::PauseLeader => session_ms + 1_000 + 2_000,
        Fault::RestartFollowerThenKillLeader => session_ms + 3_000,
        Fault::LeaderKilledRightAfterAcks => session_ms + 2_000,
        Fault::Kip101DoubleFailover => 1_300 + session_ms / 2 + session_ms + 2_000,
        Fault::IsolateLeader
        | Fault::CutLeaderFromController
        | Fault::CutLeaderFromFollowers
        | Fault::CutActiveControllerFromQuorum => cut_hold_ms(session_ms) + 3_000,
        Fault::OneWayCutFollowerToLeader => ONE_WAY_CUT_HOLD_MS + 3_000,
        Fault::PauseLeaderPastCallTimeout => PAST_CALL_TIMEOUT_PAUSE_MS + 3_000,
        Fault::SlowControllerDuringShrink => 5_000,
        Fault::DiskFullLeader => DISK_FULL_HOLD_MS + 4_000,
        _ => 5_000,
    })
}

/// How long a cut that fences the leader is held: past the session timeout, so the
/// controller elects another leader while the old one still takes produces.
fn cut_hold_ms(session_ms: u64) -> u64 {
    session_ms + 2_000
}

/// How long a follower cannot reach the leader: past replica.lag.time.max.ms (2 s in the
/// lab), so it leaves the ISR, with time for acks=all writes to meet the smaller ISR.
const ONE_WAY_CUT_HOLD_MS: u64 = 5_000;

/// Longer than any timeout of the broker's controller calls (5 s at the default AlterPartition
/// timeout; `controller_link.rs`).
const PAST_CALL_TIMEOUT_PAUSE_MS: u64 = 6_500;

/// How long the controller stays silent: past the brokers' AlterPartition timeout
/// ([`crate::cluster::LAB_CONTROLLER_REQUEST_TIMEOUT_MS`]) for a proposal made up to 1.5 s
/// into it, and well within the session timeout (3 s, heartbeats every 500 ms) so that
/// nobody is fenced when it resumes.
const SLOW_CONTROLLER_PAUSE_MS: u64 = 2_000;

/// How long the leader's disk stays full before the space is freed and it restarts.
const DISK_FULL_HOLD_MS: u64 = 4_000;

/// Runs one scenario on `lab` (whose brokers are all up) and leaves them stopped or up.
pub async fn run_scenario(
    lab: &mut LabCluster,
    scenario: &Scenario,
    index: usize,
    config: &RunConfig,
    phase: &(dyn Fn(&str) + Sync),
) -> ScenarioResult {
    let started = Instant::now();
    let seed = scenario_seed(config.seed, &scenario.id);
    let topic = format!("lab-{index:02}-{}", scenario.id.replace(['/', '='], "-"));
    let expectation = expectation(scenario);
    let mut notes = Vec::new();
    let outcome = drive(lab, scenario, &topic, seed, config, phase, &mut notes).await;
    let (check, healed) = match outcome {
        Ok(v) => v,
        Err(e) => {
            return ScenarioResult {
                scenario: scenario.clone(),
                topic,
                seed,
                duration_ms: started.elapsed().as_millis() as u64,
                expected: expectation.summary,
                verdict: Verdict::Error,
                reasons: vec![e.to_string()],
                stats: Default::default(),
                anomaly_counts: Default::default(),
                anomalies: Vec::new(),
                notes,
            }
        }
    };
    let (verdict, reasons) = judge(&expectation, &check, healed);
    ScenarioResult {
        scenario: scenario.clone(),
        topic,
        seed,
        duration_ms: started.elapsed().as_millis() as u64,
        expected: expectation.summary,
        verdict,
        reasons,
        anomaly_counts: anomaly_counts(&check),
        anomalies: check.anomalies.iter().take(20).cloned().collect(),
        stats: check.stats,
        notes,
    }
}

/// Sleeps, noting nothing; a named helper keeps the fault timelines readable.
async fn after(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Sets up `topic`, produces to it, strikes the scenario's fault, then heals the cluster and
/// checks what was acknowledged against what the replicas (and a consumer) hold.
async fn drive(
    lab: &mut LabCluster,
    scenario: &Scenario,
    topic: &str,
    seed: u64,
    config: &RunConfig,
    phase: &(dyn Fn(&str) + Sync),
    notes: &mut Vec<String>,
) -> Result<(CheckResult, Result<(), String>), LabError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let session_ms = lab.spec().broker_session_timeout_ms;
    phase("starting brokers");
    lab.heal()?;
    lab.wait_brokers_alive(Duration::from_secs(30)).await?;
    phase("creating topic");
    let roles = create_scenario_topic(lab, topic, scenario.min_insync_replicas).await?;
    let Roles { leader, f1, f2, .. } = roles;
    notes.push(format!("leader {leader}, followers {f1} and {f2} (replicas {:?})", roles.replicas));

    phase("producing");
    let workload = Workload::start(
        &lab.bootstrap(),
        WorkloadConfig {
            topic: topic.to_string(),
            partitions: 1,
            acks: scenario.acks,
            producers: config.producers,
            pace: config.pace,
            request_timeout: config.request_timeout,
            delivery_timeout: config.delivery_timeout,
            tag: topic.to_string(),
        },
    )?;
    let warm_up_ms = rng.gen_range(800..1_500);
    after(warm_up_ms).await;
    let fault_at = Instant::now();
    notes.push(format!("fault after {warm_up_ms} ms and {} acknowledged sends", workload.acknowledged()));
    phase("fault");
    let mut log = FaultLog { fault_at, notes: &mut *notes };
    strike(lab, scenario.fault, &roles, &workload, &mut rng, session_ms, &mut log).await?;
    let window = production_after_fault(scenario.fault, session_ms);
    let elapsed = fault_at.elapsed();
    if window > elapsed {
        tokio::time::sleep(window - elapsed).await;
    }
    if let Some(p) = lab.partition(topic, 0).await {
        log.note(format!("leader {} at epoch {}, ISR {:?}", p.leader, p.leader_epoch, p.isr));
    }
    phase("draining producers");
    let ops = workload.stop().await;
    heal_and_check(lab, topic, &ops, phase, notes).await
}

/// Who holds `topic`-0 when a scenario starts: its leader and its two followers.
struct Roles {
    leader: i32,
    /// The follower the controller elects next (the first ISR replica in assignment order).
    f1: i32,
    /// The follower elected after F1.
    f2: i32,
    replicas: Vec<i32>,
    topic: String,
}

/// Creates the scenario's one-partition topic and says who leads and follows it.
async fn create_scenario_topic(lab: &mut LabCluster, topic: &str, min_insync_replicas: i32) -> Result<Roles, LabError> {
    lab.create_topic(topic, 1, min_insync_replicas, Duration::from_secs(20)).await?;
    let partition =
        lab.partition(topic, 0).await.ok_or_else(|| LabError::Setup(format!("no metadata for {topic}-0")))?;
    let leader = partition.leader;
    // The controller elects the first ISR replica in assignment order: F1 next, then F2.
    let followers: Vec<i32> = partition.replicas.iter().copied().filter(|b| *b != leader).collect();
    if followers.len() != BROKERS as usize - 1 {
        return Err(LabError::Setup(format!("{topic}-0 has replicas {:?}", partition.replicas)));
    }
    Ok(Roles { leader, f1: followers[0], f2: followers[1], replicas: partition.replicas, topic: topic.to_string() })
}

/// The scenario's notes, each fault step stamped with the time since the fault began.
struct FaultLog<'a> {
    fault_at: Instant,
    notes: &'a mut Vec<String>,
}

impl FaultLog<'_> {
    fn note(&mut self, what: String) {
        self.notes.push(format!("+{} ms: {what}", self.fault_at.elapsed().as_millis()));
    }
}

/// Carries out `fault` on the brokers in `roles` while `workload` produces.
async fn strike(
    lab: &mut LabCluster,
    fault: Fault,
    roles: &Roles,
    workload: &Workload,
    rng: &mut StdRng,
    session_ms: u64,
    log: &mut FaultLog<'_>,
) -> Result<(), LabError> {
    let Roles { leader, f1, f2, .. } = *roles;
    match fault {
        Fault::None => {}
        Fault::KillOneFollower => {
            let victim = if rng.gen_bool(0.5) { f1 } else { f2 };
            lab.kill(NodeId::Broker(victim));
            log.note(format!("SIGKILL follower {victim}"));
        }
        Fault::KillBothFollowers => {
            lab.kill(NodeId::Broker(f1));
            lab.kill(NodeId::Broker(f2));
            log.note(format!("SIGKILL followers {f1} and {f2}"));
        }
        Fault::KillLeader => {
            lab.kill(NodeId::Broker(leader));
            log.note(format!("SIGKILL leader {leader}"));
        }
        Fault::PauseLeader => {
            lab.pause(NodeId::Broker(leader));
            log.note(format!("SIGSTOP leader {leader}"));
            after(session_ms + 1_000).await;
            lab.resume(NodeId::Broker(leader));
            log.note(format!("SIGCONT leader {leader} (past the {session_ms} ms session timeout)"));
        }
        Fault::RestartFollowerThenKillLeader => {
            let victim = if rng.gen_bool(0.5) { f1 } else { f2 };
            lab.kill(NodeId::Broker(victim));
            log.note(format!("SIGKILL follower {victim}"));
            after(200).await;
            lab.start_node(NodeId::Broker(victim))?;
            log.note(format!("restarted follower {victim}"));
            after(500).await;
            lab.kill(NodeId::Broker(leader));
            log.note(format!("SIGKILL leader {leader}"));
        }
        Fault::LeaderKilledRightAfterAcks => leader_killed_right_after_acks(lab, roles, workload, log).await,
        Fault::Kip101DoubleFailover => kip101_double_failover(lab, roles, session_ms, log).await,
        Fault::PauseLeaderPastCallTimeout => {
            lab.pause(NodeId::Broker(leader));
            log.note(format!("SIGSTOP leader {leader}"));
            after(PAST_CALL_TIMEOUT_PAUSE_MS).await;
            lab.resume(NodeId::Broker(leader));
            log.note(format!("SIGCONT leader {leader} (past every controller-call timeout)"));
        }
        Fault::IsolateLeader
        | Fault::CutLeaderFromController
        | Fault::CutLeaderFromFollowers
        | Fault::OneWayCutFollowerToLeader => network_fault(lab, fault, roles, rng, session_ms, log).await?,
        Fault::DiskFullLeader => disk_full_leader(lab, roles, workload, log).await?,
        Fault::SlowControllerDuringShrink => slow_controller_during_shrink(lab, roles, rng, log).await?,
        Fault::CutActiveControllerFromQuorum => cut_active_controller(lab, session_ms, log).await?,
    }
    Ok(())
}

/// Cuts links (the leader from everyone, the leader from the controllers, or a follower's
/// calls to the leader), holds the cut while producers keep writing, and heals the links.
async fn network_fault(
    lab: &mut LabCluster,
    fault: Fault,
    roles: &Roles,
    rng: &mut StdRng,
    session_ms: u64,
    log: &mut FaultLog<'_>,
) -> Result<(), LabError> {
    let Roles { leader, f1, f2, .. } = *roles;
    let hold = match fault {
        Fault::IsolateLeader => {
            lab.isolate(NodeId::Broker(leader))?;
            log.note(format!("cut leader {leader} off from every node (producers still reach it)"));
            cut_hold_ms(session_ms)
        }
        Fault::CutLeaderFromController => {
            for c in lab.controller_ids() {
                lab.cut(NodeId::Broker(leader), NodeId::Controller(c))?;
            }
            log.note(format!("cut leader {leader} from the controller (its followers still reach it)"));
            cut_hold_ms(session_ms)
        }
        Fault::CutLeaderFromFollowers => {
            lab.cut(NodeId::Broker(leader), NodeId::Broker(f1))?;
            lab.cut(NodeId::Broker(leader), NodeId::Broker(f2))?;
            log.note(format!(
                "cut leader {leader} from followers {f1} and {f2} (the controller and producers still reach it)"
            ));
            cut_hold_ms(session_ms)
        }
        _ => {
            let follower = if rng.gen_bool(0.5) { f1 } else { f2 };
            lab.cut_one_way(NodeId::Broker(follower), NodeId::Broker(leader))?;
            log.note(format!("cut follower {follower} -> leader {leader} one way (its fetches time out)"));
            ONE_WAY_CUT_HOLD_MS
        }
    };
    after(hold).await;
    lab.heal_links()?;
    log.note(format!("healed the links after {hold} ms"));
    Ok(())
}

/// Cuts the active controller from the other voters, holds the cut past the session timeout,
/// and heals it.
async fn cut_active_controller(lab: &mut LabCluster, session_ms: u64, log: &mut FaultLog<'_>) -> Result<(), LabError> {
    let active = lab.metadata().await.map(|m| m.controller_id).filter(|c| *c > 0).unwrap_or(1);
    for other in lab.controller_ids().into_iter().filter(|c| *c != active) {
        lab.cut(NodeId::Controller(active), NodeId::Controller(other))?;
    }
    log.note(format!("cut active controller {active} from the other voters (brokers still reach it)"));
    after(cut_hold_ms(session_ms)).await;
    let now = lab.metadata().await.map(|m| m.controller_id).unwrap_or(-1);
    lab.heal_links()?;
    log.note(format!("healed the links; the brokers' metadata named controller {now} as active"));
    Ok(())
}

/// Cuts a follower's fetches and pauses the active controller across the moment the leader
/// proposes to shrink the ISR (after replica.lag.time.max.ms, within one check interval).
/// The follower stays cut until the cluster heals.
async fn slow_controller_during_shrink(
    lab: &mut LabCluster,
    roles: &Roles,
    rng: &mut StdRng,
    log: &mut FaultLog<'_>,
) -> Result<(), LabError> {
    let Roles { leader, f1, f2, .. } = *roles;
    let victim = if rng.gen_bool(0.5) { f1 } else { f2 };
    let controller = lab.metadata().await.map(|m| m.controller_id).filter(|c| *c > 0).unwrap_or(1);
    lab.cut_one_way(NodeId::Broker(victim), NodeId::Broker(leader))?;
    log.note(format!("cut follower {victim} -> leader {leader} one way (it heartbeats on)"));
    let lag_ms = lab.spec().replica_lag_time_max_ms;
    // The leader checks lag every lag/2 ms, so it proposes between `lag` and 1.5 × `lag`
    // after the follower's last fetch (up to a long poll, 500 ms, before the cut): the
    // controller is silent from before the earliest until past the latest plus a timeout.
    after(lag_ms.saturating_sub(500)).await;
    lab.pause(NodeId::Controller(controller));
    log.note(format!("SIGSTOP controller {controller} as leader {leader} comes to propose the shrink"));
    after(SLOW_CONTROLLER_PAUSE_MS).await;
    lab.resume(NodeId::Controller(controller));
    let needle = format!("{}-0: AlterPartition answered", roles.topic);
    let retried = lab.log_tail(NodeId::Broker(leader), 500).matches(&needle).count();
    log.note(format!(
        "SIGCONT controller {controller} after {SLOW_CONTROLLER_PAUSE_MS} ms; leader {leader} retried AlterPartition {retried} time(s)"
    ));
    Ok(())
}

/// Fills the leader's data directory while producers write, holds it full, then frees the
/// space and restarts the broker so its offline replica comes back (and truncates to the
/// new leader).
async fn disk_full_leader(
    lab: &mut LabCluster,
    roles: &Roles,
    workload: &Workload,
    log: &mut FaultLog<'_>,
) -> Result<(), LabError> {
    let leader = roles.leader;
    let filled = lab.fill_disk(leader).await?;
    log.note(format!("filled leader {leader}'s disk ({} MiB of filler)", filled >> 20));
    let before = workload.acknowledged();
    after(DISK_FULL_HOLD_MS).await;
    let offline = lab.log_contains(NodeId::Broker(leader), &format!("replica of {}-0 taken OFFLINE", roles.topic));
    log.note(format!(
        "{} acknowledged while the disk was full; leader {leader} {} a replica offline",
        workload.acknowledged() - before,
        if offline { "took" } else { "did NOT take" }
    ));
    lab.free_disk(leader)?;
    let killed = lab.stop(&[NodeId::Broker(leader)], Duration::from_secs(10)).await;
    lab.start_node(NodeId::Broker(leader))?;
    log.note(format!(
        "freed the space and restarted broker {leader}{}",
        if killed.is_empty() { "" } else { " (SIGKILLed: it ignored SIGTERM for 10 s)" }
    ));
    Ok(())
}

/// Kills the leader while it alone holds acks=1 acknowledged writes.
async fn leader_killed_right_after_acks(
    lab: &mut LabCluster,
    roles: &Roles,
    workload: &Workload,
    log: &mut FaultLog<'_>,
) {
    let Roles { leader, f1, f2, .. } = *roles;
    // Followers cut off well within replica.lag.time.max.ms, so they stay in the ISR
    // and one of them is elected cleanly; the leader alone acknowledges acks=1.
    lab.pause(NodeId::Broker(f1));
    lab.pause(NodeId::Broker(f2));
    let before = workload.acknowledged();
    log.note(format!("SIGSTOP followers {f1} and {f2}"));
    after(300).await;
    lab.kill(NodeId::Broker(leader));
    log.note(format!(
        "SIGKILL leader {leader} right after {} acks=1 acknowledgements only it had",
        workload.acknowledged() - before
    ));
    lab.resume(NodeId::Broker(f1));
    lab.resume(NodeId::Broker(f2));
    log.note("SIGCONT both followers".into());
}

/// The KIP-101 double failover: F2 ends up leading with a stale HW after two leaders die.
async fn kip101_double_failover(lab: &mut LabCluster, roles: &Roles, session_ms: u64, log: &mut FaultLog<'_>) {
    let Roles { leader, f1, f2, .. } = *roles;
    // 1. F1 stops fetching: the HW stops at F1's log end, acks=all writes wait.
    lab.pause(NodeId::Broker(f1));
    log.note(format!("SIGSTOP F1 = broker {f1}"));
    after(300).await;
    // 2. F2 has fetched the waiting writes; stop it too, and let its long-poll
    //    fetch (replica.fetch.wait.max.ms 500) expire, so no fetch of F2's is
    //    parked at the leader when the HW moves: F2 cannot learn the new HW.
    lab.pause(NodeId::Broker(f2));
    log.note(format!("SIGSTOP F2 = broker {f2}"));
    after(700).await;
    // 3. F1 catches up: the HW passes the waiting writes, they are acknowledged.
    lab.resume(NodeId::Broker(f1));
    log.note("SIGCONT F1 (the leader acknowledges what F2 holds above its HW)".into());
    after(200).await;
    // 4. The leader dies; F2 resumes with its stale HW; all within the lag time.
    lab.kill(NodeId::Broker(leader));
    log.note(format!("SIGKILL leader {leader}"));
    after(100).await;
    lab.resume(NodeId::Broker(f2));
    log.note("SIGCONT F2".into());
    // 5. F1 dies before the leader's session expires: the controller still elects
    //    it, F2 starts following it (a pre-KIP-101 F2 truncates to its HW now) but
    //    cannot fetch; when F1 is fenced too, F2 is the only ISR member and leads.
    after(session_ms / 2).await;
    lab.kill(NodeId::Broker(f1));
    log.note("SIGKILL F1 (elected next, before F2 could fetch from it)".into());
}

/// Heals the cluster, reads `topic`-0 back through its leader and from every broker's files
/// (stopped cleanly first), and checks `ops` against those reads. Also returns whether the
/// cluster healed in time.
async fn heal_and_check(
    lab: &mut LabCluster,
    topic: &str,
    ops: &[Op],
    phase: &(dyn Fn(&str) + Sync),
    notes: &mut Vec<String>,
) -> Result<(CheckResult, Result<(), String>), LabError> {
    phase("healing");
    let restarted = lab.heal()?;
    if !restarted.is_empty() {
        let names: Vec<String> = restarted.iter().map(ToString::to_string).collect();
        notes.push(format!("healing: restarted/resumed {}", names.join(", ")));
    }
    let healed = lab.wait_healed(topic, 1, Duration::from_secs(60)).await.map_err(|e| e.to_string());

    phase("reading back");
    let consumer = match read_through_leader(&lab.bootstrap(), topic, 0, Duration::from_secs(20)).await {
        Ok(c) => Some(c),
        Err(e) => {
            notes.push(format!("consumer read failed ({e}); judging by the replicas alone"));
            None
        }
    };
    // Stop every broker cleanly so its HW checkpoint is current, then read its files.
    let brokers: Vec<NodeId> = (1..=BROKERS).map(NodeId::Broker).collect();
    let killed = lab.stop(&brokers, Duration::from_secs(15)).await;
    if !killed.is_empty() {
        notes.push(format!("{killed:?} ignored SIGTERM for 15 s and were killed (HW checkpoints may be stale)"));
    }
    for b in 1..=BROKERS {
        for line in unsafe_truncations(lab, b, topic) {
            notes.push(format!("broker {b}: {line}"));
        }
    }
    let mut replicas = Vec::new();
    for b in 1..=BROKERS {
        replicas.push(lab.read_replica(b, topic, 0)?);
    }
    let reads = Reads { replicas, consumer };
    Ok((check(ops, &reads), healed))
}

/// The unsafe broker's own account of what it truncated (its loud WARN lines).
fn unsafe_truncations(lab: &LabCluster, broker: i32, topic: &str) -> Vec<String> {
    if !lab.log_contains(NodeId::Broker(broker), "UNSAFE truncation") {
        return Vec::new();
    }
    let needle = format!("{topic}-0: UNSAFE truncation");
    lab.log_tail(NodeId::Broker(broker), 100_000)
        .lines()
        .filter(|l| l.contains(&needle))
        .map(|l| l[l.find(&needle).unwrap_or(0)..].to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Stats;

    fn scenario(id: &str) -> Scenario {
        all_scenarios().into_iter().find(|s| s.id == id).expect(id)
    }

    fn result(lost: usize, errors: &[(&str, usize)]) -> CheckResult {
        let mut stats = Stats { lost, ..Default::default() };
        for (name, n) in errors {
            stats.errors.insert(name.to_string(), *n);
        }
        let anomalies = (0..lost)
            .map(|i| Anomaly::LostAcknowledged { value: format!("v{i}"), acked_offset: Some(i as i64) })
            .collect();
        CheckResult { stats, anomalies }
    }

    #[test]
    fn the_matrix_has_126_cells_and_three_controls() {
        let all = all_scenarios();
        assert_eq!(all.iter().filter(|s| s.kind == ScenarioKind::Matrix).count(), 126);
        assert_eq!(all.len(), 129);
        let ids: std::collections::BTreeSet<&str> = all.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), all.len(), "ids are unique");
    }

    #[test]
    fn patterns_select_by_glob_or_substring() {
        assert!(matches("all/2/*", "all/2/kill-leader"));
        assert!(!matches("all/2/*", "all/1/kill-leader"));
        assert!(matches("*kill-leader", "1/3/kill-leader"));
        assert!(!matches("*kill-leader", "1/3/restart-follower-then-kill-leader-x"));
        assert!(matches("kill-both", "0/1/kill-both-followers"));
        assert!(matches("*/2/*follower*", "all/2/kill-one-follower"));
        assert_eq!(select(&["negative".into()]).len(), 2);
        assert_eq!(select(&[]).len(), all_scenarios().len());
    }

    #[test]
    fn edge_faults_follow_kafkas_predictions() {
        // acks=all loses nothing behind any cut, pause or full disk.
        for fault in
            ["isolate-leader", "cut-leader-from-controller", "disk-full-leader", "one-way-cut-follower-to-leader"]
        {
            assert_eq!(expectation(&scenario(&format!("all/2/{fault}"))).loss, LossRule::MustNotLose, "{fault}");
        }
        // A deposed leader (the zombie) may lose acks=1 writes; a leader that lives may not.
        assert_eq!(expectation(&scenario("1/2/isolate-leader")).loss, LossRule::MayLose);
        assert_eq!(expectation(&scenario("1/2/cut-leader-from-followers")).loss, LossRule::MustNotLose);
        assert_eq!(expectation(&scenario("1/2/one-way-cut-follower-to-leader")).loss, LossRule::MustNotLose);
        // The leader cut from its followers shrinks the ISR to itself: NOT_ENOUGH_REPLICAS.
        assert_eq!(expectation(&scenario("all/2/cut-leader-from-followers")).not_enough_replicas, ErrorRule::Required);
        assert_eq!(expectation(&scenario("all/3/disk-full-leader")).not_enough_replicas, ErrorRule::Required);
        // Producers waiting on a deposed leader may never meet the smaller ISR.
        assert_eq!(expectation(&scenario("all/3/cut-leader-from-controller")).not_enough_replicas, ErrorRule::Allowed);
        assert_eq!(
            expectation(&scenario("all/2/one-way-cut-follower-to-leader")).not_enough_replicas,
            ErrorRule::Forbidden
        );
        assert!(Fault::DiskFullLeader.needs_small_disks() && !Fault::IsolateLeader.needs_small_disks());
        // With the ISR at min.insync or above, none of them may answer NOT_ENOUGH_REPLICAS.
        for id in ["all/2/isolate-leader", "all/2/disk-full-leader", "all/1/cut-leader-from-followers"] {
            assert_eq!(expectation(&scenario(id)).not_enough_replicas, ErrorRule::Forbidden, "{id}");
        }
    }

    #[test]
    fn the_seeds_table_for_min_insync_2() {
        // ISR 3 → ok, ISR 2 → ok, ISR 1 → NOT_ENOUGH_REPLICAS.
        assert_eq!(expectation(&scenario("all/2/none")).not_enough_replicas, ErrorRule::Forbidden);
        assert_eq!(expectation(&scenario("all/2/kill-one-follower")).not_enough_replicas, ErrorRule::Forbidden);
        assert_eq!(expectation(&scenario("all/2/kill-both-followers")).not_enough_replicas, ErrorRule::Required);
        // min.insync=1: two brokers can fail and writes are still accepted.
        assert_eq!(expectation(&scenario("all/1/kill-both-followers")).not_enough_replicas, ErrorRule::Forbidden);
        // min.insync=3: no broker failure is tolerated.
        assert_eq!(expectation(&scenario("all/3/kill-one-follower")).not_enough_replicas, ErrorRule::Required);
    }

    #[test]
    fn loss_rules_follow_the_acks_level() {
        assert_eq!(expectation(&scenario("all/2/kill-leader")).loss, LossRule::MustNotLose);
        assert_eq!(expectation(&scenario("1/2/kill-leader")).loss, LossRule::MayLose);
        assert_eq!(expectation(&scenario("1/2/kill-both-followers")).loss, LossRule::MustNotLose);
        assert_eq!(expectation(&scenario("0/2/none")).loss, LossRule::MayLose);
    }

    #[test]
    fn verdicts() {
        let all_kill = expectation(&scenario("all/2/kill-leader"));
        assert_eq!(judge(&all_kill, &result(0, &[]), Ok(())).0, Verdict::Ok);
        assert_eq!(judge(&all_kill, &result(2, &[]), Ok(())).0, Verdict::Violation);
        assert_eq!(judge(&all_kill, &result(0, &[]), Err("slow".into())).0, Verdict::Violation);
        let acks1_kill = expectation(&scenario("1/2/kill-leader"));
        assert_eq!(judge(&acks1_kill, &result(2, &[]), Ok(())).0, Verdict::OkLossAllowed);
        let isr1 = expectation(&scenario("all/2/kill-both-followers"));
        assert_eq!(judge(&isr1, &result(0, &[]), Ok(())).0, Verdict::Violation);
        assert_eq!(judge(&isr1, &result(0, &[("NOT_ENOUGH_REPLICAS", 9)]), Ok(())).0, Verdict::Ok);
        let isr2 = expectation(&scenario("all/2/kill-one-follower"));
        assert_eq!(judge(&isr2, &result(0, &[("NOT_ENOUGH_REPLICAS", 1)]), Ok(())).0, Verdict::Violation);
        let negative = expectation(&scenario("negative/1/2/leader-killed-after-acks"));
        assert_eq!(judge(&negative, &result(3, &[]), Ok(())).0, Verdict::Caught);
        assert_eq!(judge(&negative, &result(0, &[]), Ok(())).0, Verdict::Missed);
    }

    #[test]
    fn a_duplicate_is_a_violation_unless_the_producer_retried() {
        let e = expectation(&scenario("all/2/kill-leader"));
        let mut r = result(0, &[]);
        r.anomalies.push(Anomaly::Duplicate { value: "v".into(), offsets: vec![1, 2], retried: true });
        assert_eq!(judge(&e, &r, Ok(())).0, Verdict::Ok);
        r.anomalies.push(Anomaly::Duplicate { value: "w".into(), offsets: vec![3, 4], retried: false });
        assert_eq!(judge(&e, &r, Ok(())).0, Verdict::Violation);
    }

    #[test]
    fn seeds_differ_per_scenario_and_replay() {
        assert_eq!(scenario_seed(7, "all/2/none"), scenario_seed(7, "all/2/none"));
        assert_ne!(scenario_seed(7, "all/2/none"), scenario_seed(7, "all/3/none"));
    }
}
