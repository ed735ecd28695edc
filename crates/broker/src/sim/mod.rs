//! A deterministic, seeded, in-process replication harness in the style of raft-rs's test
//! network, and the schedule driver: three brokers (ids 1–3) each holding real `Partition`s
//! on real logs in a temporary directory, a controller model running the real controller
//! rules, an idempotent producer, and a lossy network between them, all driven by one
//! discrete-event loop on a simulated millisecond clock. No processes, no tokio, no
//! threads of its own, no sleeps: a schedule is a function of its seed.
//!
//! A schedule: the brokers register, the controller creates topic `sim` (1 or 2
//! partitions, replicas [1,2,3] / [2,3,1], min.insync.replicas 2), the producer writes while
//! the seed drops, delays, duplicates and reorders messages, crashes and restarts brokers,
//! and cuts links (a broker from everyone, from the controller only, or from one peer).
//! Then everything heals and the run must converge. The invariants (`checker.rs`) are
//! checked after every step; on a violation the seed is run again with tracing on and the
//! failure shows the last events.
//!
//! What is modelled, and what is not: a crash is a process crash (bytes written to a log
//! survive it; an unflushed tail is not lost, except where a scripted schedule cuts a down
//! broker's log itself: `Node::lose_log_tail`); the controller quorum is one node that never
//! fails (its rules and state machine are the real ones, Raft is not); a leader answers a
//! Fetch at once, and a follower whose answer was empty waits as long as the long poll
//! would; the log's own roll-flush thread runs when a tiny segment size makes logs roll.
//!
//! Run: `cargo test -p insync-broker sim -- --nocapture`. Environment:
//! `INSYNC_SIM_SCHEDULES=N` (how many), `INSYNC_SIM_FIRST_SEED=S` (from which seed),
//! `INSYNC_SIM_SEED=S` (just that one, with its trace on failure; with `INSYNC_SIM_TRACE=N`
//! also its last N events when it passes), `INSYNC_SIM_DIR` (where the logs go; by default
//! /dev/shm when it exists).
mod checker;
mod client;
mod controller;
mod effects;
mod faults;
mod fetch;
mod network;
mod node;
mod rng;
mod scenario;
mod tests;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use insync_types::BrokerId;

use checker::{Checker, LeaderView, Violation, ViolationKind};
use client::Producer;
use controller::{ControllerModel, BROKERS};
use effects::{Coverage, FaultTimer, Io, Target, Timer};
use network::{Address, Endpoint, Envelope, Network, NetworkFaults, SendFate};
use node::{Node, NodeConfig};
use rng::Rng;
use scenario::{Scenario, Script};

/// The simulated clock's settings, in ms: Kafka's defaults shrunk (heartbeat 2 s, session
/// 9 s, replica.lag.time.max.ms 30 s) so that a schedule of a few simulated seconds sees
/// fencing, ISR shrinks and expansions many times. Their ratios are what matters.
pub mod timing {
    pub const HEARTBEAT_MS: u64 = 50;
    pub const BROKER_SESSION_TIMEOUT_MS: u64 = 300;
    pub const LIVENESS_CHECK_MS: u64 = 50;
    pub const METADATA_REPUBLISH_MS: u64 = 200;
    pub const REGISTER_RETRY_MS: u64 = 150;
    pub const REPLICA_LAG_TIME_MAX_MS: u64 = 250;
    pub const CHECKPOINT_MS: u64 = 100;
    /// What a follower waits after an empty answer (the leader's long poll, max_wait_ms).
    pub const FETCH_IDLE_MS: u64 = 20;
    pub const FETCH_TIMEOUT_MS: u64 = 150;
    /// After an answer asking to back off (`fetcher.rs` sleeps 100 ms).
    pub const FETCH_BACKOFF_MS: u64 = 100;
    /// After a failed call, or while not registered (`fetcher.rs` sleeps 200 ms).
    pub const FETCH_ERROR_BACKOFF_MS: u64 = 200;
    /// Nothing to fetch from this leader yet (`fetcher.rs` sleeps 50 ms).
    pub const FETCH_EMPTY_BACKOFF_MS: u64 = 50;
    pub const ALTER_PARTITION_TIMEOUT_MS: u64 = 150;
    /// Between re-sends of an unanswered AlterPartition (`run_alter_partition` sleeps 200 ms).
    pub const ALTER_PARTITION_RETRY_MS: u64 = 50;
    /// The produce request's timeout_ms (the broker answers REQUEST_TIMED_OUT).
    pub const PRODUCE_TIMEOUT_MS: u64 = 300;
    /// The client's request.timeout.ms (it gives up on the answer and retries).
    pub const CLIENT_REQUEST_TIMEOUT_MS: u64 = 400;
    pub const CLIENT_RETRY_BACKOFF_MS: u64 = 20;
    /// How long a healed cluster may take to converge before the run counts as stuck.
    pub const HEAL_TIMEOUT_MS: u64 = 20_000;
    pub const QUIET_CHECK_MS: u64 = 50;
}

/// A bound on one schedule's steps, far above what any schedule takes.
const MAX_STEPS: u64 = 2_000_000;

/// How schedules are run (the seed picks everything else).
#[derive(Debug, Clone, Copy, Default)]
pub struct SimOptions {
    /// The pre-KIP-101 negative control on every replica (`Partition::open`'s flag).
    pub unsafe_truncation: bool,
    /// None: the seed chooses 1 or 2 partitions.
    pub partitions: Option<i32>,
    /// A scripted schedule instead of random faults (`scenario.rs`).
    pub scenario: Option<Scenario>,
    /// Fail when a restarted broker leads the leader epoch it led before its crash (see
    /// `Checker::check_leader`), instead of only counting it.
    pub strict_restarts: bool,
}

/// A schedule's parameters, drawn from its seed.
#[derive(Debug, Clone)]
struct Params {
    partitions: i32,
    run_ms: u64,
    max_in_flight: usize,
    produce_every_ms: u64,
    fetch_max_bytes: usize,
    segment_bytes: u64,
    fault_gap_ms: u64,
    network: NetworkFaults,
}

impl Params {
    fn draw(rng: &mut Rng, options: &SimOptions) -> Params {
        let mut params = Params::draw_random(rng, options);
        if options.scenario.is_some() {
            // Scripted: one partition, no random faults, nothing lost but what the script
            // loses, and long enough for the script to play out.
            params.partitions = 1;
            params.run_ms = 6_000;
            params.network = NetworkFaults::reliable();
        }
        params
    }

    fn draw_random(rng: &mut Rng, options: &SimOptions) -> Params {
        Params {
            partitions: options.partitions.unwrap_or_else(|| rng.pick(&[1, 1, 2])),
            run_ms: rng.range(1_500, 4_000),
            max_in_flight: rng.pick(&[1, 1, 2, 3]),
            produce_every_ms: rng.range(5, 30),
            // About one batch, a few, or everything per fetch.
            fetch_max_bytes: rng.pick(&[100, 400, 1 << 20]),
            // Mostly one segment; sometimes tiny ones, so truncation crosses segments.
            segment_bytes: rng.pick(&[128 << 20, 128 << 20, 128 << 20, 1024]),
            fault_gap_ms: rng.range(60, 400),
            network: NetworkFaults::from_rng(rng),
        }
    }
}

/// What a passing schedule did.
#[derive(Debug, Clone, Default)]
pub struct ScheduleReport {
    pub steps: u64,
    pub sim_ms: u64,
    pub coverage: Coverage,
}

/// A failing schedule, with what is needed to replay and understand it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub now_ms: u64,
    pub violation: Violation,
    params: String,
    trace: Vec<String>,
    /// The traced re-run failed the same way at the same step (it must: determinism).
    reproduced: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sim: seed {} failed at step {} (t = {} ms): {}",
            self.seed, self.step, self.now_ms, self.violation
        )?;
        writeln!(f, "  schedule: {}", self.params)?;
        if !self.reproduced {
            writeln!(f, "  NOTE: the traced re-run did not fail identically: the harness is not deterministic")?;
        }
        writeln!(f, "  last {} events (step, time, event; `·` = what it caused):", self.trace.len())?;
        for line in &self.trace {
            writeln!(f, "    {line}")?;
        }
        write!(f, "  replay: INSYNC_SIM_SEED={} cargo test -p insync-broker sim:: -- --nocapture", self.seed)
    }
}

/// The last lines of a traced run, and a digest of all of them.
#[derive(Debug)]
pub struct Trace {
    capacity: usize,
    lines: VecDeque<String>,
    hasher: DefaultHasher,
    count: u64,
}

impl Trace {
    pub fn new(capacity: usize) -> Trace {
        Trace { capacity, lines: VecDeque::new(), hasher: DefaultHasher::new(), count: 0 }
    }

    fn push(&mut self, line: String) {
        line.hash(&mut self.hasher);
        self.count += 1;
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn lines(&self) -> impl Iterator<Item = &String> {
        self.lines.iter()
    }

    /// (number of lines, hash of them all): equal for two runs of one seed.
    pub fn digest(&self) -> (u64, u64) {
        (self.count, self.hasher.finish())
    }
}

/// Runs one schedule; on a violation, runs it again traced to report its last events.
pub fn run_schedule(seed: u64, options: &SimOptions) -> Result<ScheduleReport, Failure> {
    let (violation, step, now_ms) = match run_caught(seed, options, None) {
        Ok(report) => return Ok(report),
        Err(failed) => failed,
    };
    let mut trace = Trace::new(50);
    let again = run_caught(seed, options, Some(&mut trace));
    let reproduced = matches!(&again, Err((v, s, _)) if *v == violation && *s == step);
    let params = Params::draw(&mut Rng::new(seed), options);
    Err(Failure {
        seed,
        step,
        now_ms,
        violation,
        params: format!("{params:?}"),
        trace: trace.lines.into_iter().collect(),
        reproduced,
    })
}

/// Runs one schedule, turning a panic in the code under test into a violation.
pub fn run_caught(
    seed: u64,
    options: &SimOptions,
    trace: Option<&mut Trace>,
) -> Result<ScheduleReport, (Violation, u64, u64)> {
    let mut position = (0, 0);
    let outcome = catch_unwind(AssertUnwindSafe(|| Sim::new(seed, options, trace).run(&mut position)));
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err((Violation::new(ViolationKind::Panic, message), position.0, position.1))
        }
    }
}

/// A data directory removed when the schedule ends. On tmpfs when there is one: the logs
/// fsync their epoch checkpoints on every leader change, which a disk makes slow.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let base = match std::env::var_os("INSYNC_SIM_DIR") {
            Some(dir) => PathBuf::from(dir),
            None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
            None => std::env::temp_dir(),
        };
        let name = format!("insync-sim-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        TempDir(base.join(name))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug)]
enum Event {
    Deliver(Envelope),
    Timer(Timer),
}

/// One schedule in progress.
struct Sim<'t> {
    params: Params,
    now: u64,
    steps: u64,
    next_seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    /// Draws the faults (the network has a generator of its own).
    rng: Rng,
    network: Network,
    nodes: Vec<Node>,
    controller: ControllerModel,
    client: Producer,
    checker: Checker,
    io: Io,
    /// When the heal phase began.
    healing_since: Option<u64>,
    script: Option<Script>,
    trace: Option<&'t mut Trace>,
    _dir: TempDir,
}

impl<'t> Sim<'t> {
    fn new(seed: u64, options: &SimOptions, trace: Option<&'t mut Trace>) -> Sim<'t> {
        let mut rng = Rng::new(seed);
        let params = Params::draw(&mut rng, options);
        let dir = TempDir::new();
        let config = NodeConfig {
            unsafe_truncation: options.unsafe_truncation,
            fetch_max_bytes: params.fetch_max_bytes,
            segment_bytes: params.segment_bytes,
        };
        let nodes = BROKERS.iter().map(|&id| Node::new(id, dir.0.join(format!("broker-{id}")), config)).collect();
        let mut io = Io::default();
        if trace.is_some() {
            io.notes = Some(Vec::new());
        }
        Sim {
            network: Network::new(rng.fork(), params.network),
            controller: ControllerModel::new(params.partitions),
            client: Producer::new(params.partitions, params.max_in_flight, params.produce_every_ms),
            params,
            now: 0,
            steps: 0,
            next_seq: 0,
            queue: BTreeMap::new(),
            rng,
            nodes,
            checker: Checker::new(options.strict_restarts),
            io,
            healing_since: None,
            script: options.scenario.map(Script::new),
            trace,
            _dir: dir,
        }
    }

    /// The event loop: one event per step, then its effects routed and the invariants
    /// checked. `position` tracks (step, time) for a panic's report.
    fn run(mut self, position: &mut (u64, u64)) -> Result<ScheduleReport, (Violation, u64, u64)> {
        self.boot();
        loop {
            let result = self.step();
            *position = (self.steps, self.now);
            match result {
                Ok(false) => {}
                Ok(true) => {
                    let coverage = std::mem::take(&mut self.io.coverage);
                    return Ok(ScheduleReport { steps: self.steps, sim_ms: self.now, coverage });
                }
                Err(violation) => return Err((violation, self.steps, self.now)),
            }
        }
    }

    fn boot(&mut self) {
        for node in &mut self.nodes {
            node.start(&mut self.io, self.rng.below(timing::HEARTBEAT_MS));
        }
        self.controller.start(&mut self.io);
        self.client.start(&mut self.io);
        if self.script.is_none() {
            self.io.after(self.params.fault_gap_ms, Timer::Fault(FaultTimer::Inject));
        }
        self.io.after(self.params.run_ms, Timer::Fault(FaultTimer::HealAll));
        // Routing the boot effects cannot fail: nothing has been acknowledged yet.
        let _ = self.flush_io();
    }

    /// Runs one event; true once the healed run converged and passed the final checks.
    fn step(&mut self) -> Result<bool, Violation> {
        let Some(((at, _), event)) = self.queue.pop_first() else {
            return Err(Violation::new(ViolationKind::NotConverged, "no event left to run"));
        };
        self.now = at;
        self.io.now = at;
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(Violation::new(ViolationKind::NotConverged, format!("more than {MAX_STEPS} steps")));
        }
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:>6} {:>5}ms {}", self.steps, at, describe_event(&event)));
        }
        let done = match event {
            Event::Deliver(envelope) => {
                self.deliver(envelope);
                false
            }
            Event::Timer(timer) => self.fire(timer)?,
        };
        self.flush_io()?;
        self.check_step()?;
        self.drive_script();
        Ok(done)
    }

    fn push(&mut self, at: u64, event: Event) {
        self.next_seq += 1;
        self.queue.insert((at, self.next_seq), event);
    }

    fn fire(&mut self, timer: Timer) -> Result<bool, Violation> {
        match timer {
            Timer::Node { broker, incarnation, timer } => {
                self.nodes[(broker - 1) as usize].on_timer(incarnation, timer, &mut self.io);
            }
            Timer::Controller(timer) => self.controller.on_timer(timer, &mut self.io),
            Timer::Client(timer) => self.client.on_timer(timer, &mut self.io),
            Timer::Fault(fault) => return self.on_fault(fault),
        }
        Ok(false)
    }

    fn node_mut(&mut self, broker: BrokerId) -> &mut Node {
        &mut self.nodes[(broker - 1) as usize]
    }

    fn deliver(&mut self, envelope: Envelope) {
        let Envelope { from, to, message } = envelope;
        if !self.network.connected(from.endpoint, to.endpoint) {
            self.io.coverage.bump("message_lost_to_cut");
            self.io.note(|| "(lost: the link is cut)".to_string());
            return;
        }
        match to.endpoint {
            Endpoint::Controller => self.controller.handle(from, message, &mut self.io),
            Endpoint::Client => self.client.handle(message, &mut self.io),
            Endpoint::Broker(broker) => {
                let node = &mut self.nodes[(broker - 1) as usize];
                if node.incarnation != to.incarnation || !node.is_up() {
                    // The connection died with the process it was to.
                    self.io.coverage.bump("message_to_dead_process");
                    self.io.note(|| "(lost: that process is gone)".to_string());
                    return;
                }
                node.handle(from, message, &mut self.io);
            }
        }
    }

    fn incarnation_of(&self, endpoint: Endpoint) -> u64 {
        match endpoint {
            Endpoint::Broker(broker) => self.nodes[(broker - 1) as usize].incarnation,
            Endpoint::Controller | Endpoint::Client => 0,
        }
    }

    /// Routes the step's effects: messages through the network, timers into the queue,
    /// acknowledgements and appends to the checker.
    fn flush_io(&mut self) -> Result<(), Violation> {
        for (from, target, message) in std::mem::take(&mut self.io.sends) {
            let to = match target {
                Target::Exact(address) => address,
                Target::Current(endpoint) => Address { endpoint, incarnation: self.incarnation_of(endpoint) },
            };
            let scripted_loss = self.script.as_mut().is_some_and(|s| s.loses(self.now, to, &message));
            if scripted_loss {
                self.io.note(|| format!("(the script loses {} to {})", message.describe(), to.endpoint));
            }
            let fate = if scripted_loss { SendFate::Dropped } else { self.network.send(from.endpoint, to.endpoint) };
            match fate {
                SendFate::Dropped => self.io.coverage.bump("message_dropped"),
                SendFate::Deliver(delays) => {
                    if delays.len() > 1 {
                        self.io.coverage.bump("message_duplicated");
                    }
                    for delay in delays {
                        let envelope = Envelope { from, to, message: message.clone() };
                        self.push(self.now + delay, Event::Deliver(envelope));
                    }
                }
            }
        }
        for (at, timer) in std::mem::take(&mut self.io.timers) {
            self.push(at, Event::Timer(timer));
        }
        for append in std::mem::take(&mut self.io.appends) {
            self.checker.record_append(append, &mut self.io.coverage);
        }
        self.flush_notes();
        for ack in std::mem::take(&mut self.io.acks) {
            if let Some(trace) = &mut self.trace {
                trace.push(format!("    · ack {ack:?}"));
            }
            self.checker.record_ack(ack)?;
        }
        match self.io.anomalies.first() {
            Some(anomaly) => Err(Violation::new(ViolationKind::UnexpectedAnswer, anomaly.clone())),
            None => Ok(()),
        }
    }

    fn flush_notes(&mut self) {
        if let (Some(notes), Some(trace)) = (&mut self.io.notes, &mut self.trace) {
            for note in notes.drain(..) {
                trace.push(format!("    · {note}"));
            }
        }
    }

    /// The per-step invariants (`checker.rs`): mirrors follow the logs, then every leader,
    /// then every acknowledged write against the controller's ISR.
    fn check_step(&mut self) -> Result<(), Violation> {
        for node in &self.nodes {
            let Some(live) = &node.live else { continue };
            for (tp, partition) in &live.partitions {
                self.checker.sync_replica(node.id, tp.partition, partition, &mut self.io.coverage)?;
            }
        }
        for node in &self.nodes {
            let Some(live) = &node.live else { continue };
            for (tp, partition) in &live.partitions {
                if let Some(view) = LeaderView::of(node.id, node.incarnation, tp.partition, partition) {
                    self.checker.check_leader(&view, &mut self.io.coverage)?;
                }
            }
        }
        let isr: BTreeMap<i32, Vec<BrokerId>> = (0..self.params.partitions)
            .filter_map(|p| self.controller.partition(p).map(|s| (p, s.isr.clone())))
            .collect();
        self.checker.check_acked(&isr)
    }
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::Deliver(Envelope { from, to, message }) => format!(
            "{}.{} -> {}.{} {}",
            from.endpoint,
            from.incarnation,
            to.endpoint,
            to.incarnation,
            message.describe()
        ),
        Event::Timer(timer) => format!("timer {timer:?}"),
    }
}
