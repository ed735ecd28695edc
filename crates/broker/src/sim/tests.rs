//! The harness's tests: many random schedules (the CI run, which also proves the harness
//! reaches every corner the issue names), the pre-KIP-101 negative control (which proves the
//! checker can fail), determinism (same seed, same trace), and scripted tests of the two bugs
//! the harness found in the broker (both fixed).
use std::time::Instant;

use super::checker::ViolationKind;
use super::effects::Coverage;
use super::scenario::Scenario;
use super::{run_caught, run_schedule, SimOptions, Trace};

/// Schedules per CI run: about 30–60 s in a debug build on two cores.
const DEFAULT_SCHEDULES: u64 = 4000;

/// Seeds are `FIRST_SEED + i`: fixed, so CI runs the same schedules every time.
const FIRST_SEED: u64 = 0x1A5_0000;

/// Events each run must have reached at least once (with the default number of schedules).
const REQUIRED_COVERAGE: &[&str] = &[
    // Every AlterPartition answer the rules give (see `ControllerModel::count_alter_answer`).
    "alter_answer_ok_changed",
    "alter_answer_INVALID_UPDATE_VERSION",
    "alter_answer_FENCED_LEADER_EPOCH",
    "alter_answer_INELIGIBLE_REPLICA",
    // Unanswered: re-sent while pending; given up once not; a re-send of a committed change.
    "alter_unanswered_resent",
    "alter_unanswered_given_up",
    "alter_retry_after_commit",
    "alter_overtaken_by_controller_change",
    // ISR expand and shrink interleavings.
    "isr_expand_committed",
    "isr_shrink_committed",
    "isr_shrink_by_controller",
    "isr_expand_and_shrink_in_one_leader_epoch",
    // Leader changes and the truncation they cause.
    "leader_elected",
    "partition_offline",
    "fetch_diverging_epoch",
    "log_truncated",
    // Idempotent-producer retries across a leader change.
    "produce_retry_new_broker",
    "produce_deduplicated",
    "produce_deduplicated_on_new_leader",
    "produce_acked_after_leader_change",
    "produce_answer_NOT_LEADER_OR_FOLLOWER",
    "produce_answer_NOT_ENOUGH_REPLICAS",
    "produce_answer_NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "produce_answer_REQUEST_TIMED_OUT",
    // Faults.
    "fault_leader_crashed",
    "broker_fenced_by_session_timeout",
    "fault_cut_from_controller",
    "registration_not_newer",
];

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

#[test]
fn randomized_schedules() {
    if let (Some(seed), Some(lines)) = (env_u64("INSYNC_SIM_SEED"), env_u64("INSYNC_SIM_TRACE")) {
        // Development aid: the last `lines` events of one schedule, pass or fail.
        let mut trace = Trace::new(lines as usize);
        let outcome = run_caught(seed, &SimOptions::default(), Some(&mut trace));
        trace.lines().for_each(|line| eprintln!("{line}"));
        eprintln!("{:?}", outcome.map(|r| (r.steps, r.sim_ms)));
    }
    let seeds: Vec<u64> = match env_u64("INSYNC_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("INSYNC_SIM_FIRST_SEED").unwrap_or(FIRST_SEED);
            (0..env_u64("INSYNC_SIM_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES)).map(|i| first + i).collect()
        }
    };
    let options = SimOptions::default();
    // Exploration aid: report every failing seed instead of stopping at the first.
    let keep_going = std::env::var_os("INSYNC_SIM_KEEP_GOING").is_some();
    let started = Instant::now();
    let mut coverage = Coverage::default();
    let mut steps = 0;
    let mut failures = Vec::new();
    for &seed in &seeds {
        match run_caught(seed, &options, None) {
            Ok(report) => {
                steps += report.steps;
                coverage.merge(&report.coverage);
            }
            Err((violation, ..)) if keep_going => failures.push(format!("seed {seed}: {violation}")),
            Err(_) => panic!("{}", run_schedule(seed, &options).expect_err("a failing seed fails again")),
        }
    }
    assert!(failures.is_empty(), "{} of {} schedules failed:\n{}", failures.len(), seeds.len(), failures.join("\n"));
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "sim: {} schedules, {steps} steps, {:.1} schedules/s, coverage {coverage}",
        seeds.len(),
        seeds.len() as f64 / seconds
    );
    if seeds.len() as u64 >= DEFAULT_SCHEDULES {
        let missing: Vec<&str> = REQUIRED_COVERAGE.iter().copied().filter(|k| coverage.get(k) == 0).collect();
        assert!(missing.is_empty(), "the schedules never reached {missing:?}");
    }
}

/// With the pre-KIP-101 rule (a new follower truncates to its local HW, which lags the
/// leader's, and fetches by offset alone), some schedule must lose an acknowledged write:
/// otherwise the checker could not tell a broken protocol from a correct one.
#[test]
fn negative_control_unsafe_truncation_loses_an_acknowledged_write() {
    const MAX_SEEDS: u64 = 300;
    let options = SimOptions { unsafe_truncation: true, partitions: Some(1), ..SimOptions::default() };
    for seed in FIRST_SEED..FIRST_SEED + MAX_SEEDS {
        if let Err((violation, ..)) = run_caught(seed, &options, None) {
            if violation.kind == ViolationKind::AckedWriteMissing {
                let failure = run_schedule(seed, &options).expect_err("the seed failed once");
                eprintln!("negative control found after {} seeds:\n{failure}", seed - FIRST_SEED + 1);
                return;
            }
        }
    }
    panic!("no schedule lost an acknowledged write with unsafe truncation in {MAX_SEEDS} seeds");
}

#[test]
fn same_seed_same_trace() {
    let options = SimOptions::default();
    for seed in [FIRST_SEED, FIRST_SEED + 1, FIRST_SEED + 2] {
        let mut first = Trace::new(1);
        let mut second = Trace::new(1);
        let a = run_caught(seed, &options, Some(&mut first)).map(|r| r.steps);
        let b = run_caught(seed, &options, Some(&mut second)).map(|r| r.steps);
        assert_eq!(a, b, "seed {seed}");
        assert_eq!(first.digest(), second.digest(), "seed {seed}: the traces differ");
        assert!(first.digest().0 > 100, "seed {seed}: a schedule has more than 100 events");
    }
}

/// A leader cut from the controller only goes on believing it leads: it must be fenced, its
/// unreplicated batches truncated once it follows the new leader, and the client's retries of
/// them written once.
#[test]
fn zombie_leader_is_fenced_and_truncates_its_unreplicated_tail() {
    let options = SimOptions { scenario: Some(Scenario::ZombieLeader), ..SimOptions::default() };
    let mut coverage = Coverage::default();
    for seed in FIRST_SEED..FIRST_SEED + 5 {
        match run_schedule(seed, &options) {
            Ok(report) => coverage.merge(&report.coverage),
            Err(failure) => panic!("{failure}"),
        }
    }
    for key in [
        "broker_fenced_by_session_timeout",
        "alter_unanswered_resent",
        "alter_answer_FENCED_LEADER_EPOCH",
        "fetch_diverging_epoch",
        "log_truncated",
        "produce_retry_new_broker",
        "produce_acked_after_leader_change",
    ] {
        assert!(coverage.get(key) > 0, "the zombie scenario never reached {key}: {coverage}");
    }
}

/// KIP-497: an AlterPartition that was committed but whose answer was lost must keep the
/// leader counting the new member until the commit reaches it, even when the re-sent request
/// is answered INVALID_UPDATE_VERSION (the controller is already past that partition epoch).
///
/// An expand commits, its answer is lost, and the resend is answered INVALID_UPDATE_VERSION.
/// Before the fix, `Partition::on_alter_partition_result` dropped the pending change on any
/// error, so the HW passed broker 3, which the controller had in the ISR, and acknowledged
/// writes were missing from it (an election of 3 would have lost them); random schedules
/// reached it too (seed 3003790). Kafka drops a pending change only on INELIGIBLE_REPLICA /
/// OPERATION_NOT_ATTEMPTED (`Partition.handleAlterPartitionError`), and so does insync now.
#[test]
fn lost_expand_answer_keeps_the_hw_behind_the_new_member() {
    let options = SimOptions { scenario: Some(Scenario::LostExpandAnswer), ..SimOptions::default() };
    for seed in FIRST_SEED..FIRST_SEED + 5 {
        match run_schedule(seed, &options) {
            Ok(report) => {
                assert!(
                    report.coverage.get("scenario_expand_answer_lost") > 0,
                    "seed {seed}: the script did not play out"
                );
                assert!(report.coverage.get("alter_answer_INVALID_UPDATE_VERSION") > 0, "seed {seed}");
            }
            Err(failure) => panic!("{failure}"),
        }
    }
}

/// The controller fences a broker that registers again so that it cannot keep leading with
/// a log that may have lost its unflushed tail (`rules::register_broker`). The broker used to
/// apply the metadata feed before its new registration was committed (`server.rs` starts
/// both together), so a broker restarted before its session expired could lead, from its
/// checkpointed HW, the very epoch it led before the crash: its HW went back within the
/// epoch, and had the crash lost the log's tail, it would have written new records at offsets
/// its followers hold other records for, under the same epoch, where KIP-101 truncation
/// cannot see the difference (seed 27590662). Like Kafka's broker, it now takes no leadership
/// until the metadata shows its own registration (`caught_up_with_registration`); the random
/// schedules count the held-back leaderships (`leadership_held_until_registered`).
#[test]
fn restarted_broker_never_resumes_its_epoch() {
    let options = SimOptions { strict_restarts: true, ..SimOptions::default() };
    for seed in FIRST_SEED..FIRST_SEED + 200 {
        if let Err(failure) = run_schedule(seed, &options) {
            panic!("{failure}");
        }
    }
}

/// KIP-903: a follower's progress belongs to the incarnation that made it. Broker 3 fetches
/// far while leader 1's proposal to add it back to the ISR is held up, crashes, loses the
/// tail of its log that holds acknowledged writes, restarts and registers again, and only
/// then does the proposal reach the controller (`Scenario::RestartedFollowerStaleExpand`).
/// The controller used to commit it (broker 3 is registered and unfenced again), putting
/// into the ISR a replica missing acknowledged writes, which an election of 3 would lose.
/// The AlterPartition now names the broker epoch each new member fetched with, and the
/// controller refuses one that is not its current registration's (INELIGIBLE_REPLICA).
#[test]
fn restarted_follower_does_not_join_the_isr_on_its_previous_incarnation() {
    let options = SimOptions { scenario: Some(Scenario::RestartedFollowerStaleExpand), ..SimOptions::default() };
    for seed in FIRST_SEED..FIRST_SEED + 5 {
        match run_schedule(seed, &options) {
            Ok(report) => {
                for key in
                    ["scenario_log_tail_lost", "scenario_stale_expand_released", "alter_answer_INELIGIBLE_REPLICA"]
                {
                    assert!(report.coverage.get(key) > 0, "seed {seed}: the script never reached {key}");
                }
            }
            Err(failure) => panic!("{failure}"),
        }
    }
}
