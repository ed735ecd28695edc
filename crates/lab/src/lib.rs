//! insync-lab: the durability lab behind `insync lab`. It launches its own cluster of real
//! `insync-broker` processes (`cluster`), streams writes from concurrent producers while a
//! fault strikes (`workload`, `scenario`), heals the cluster, reads every replica back, and
//! judges the history with a pure Jepsen-style checker (`history`, `checker`) against what
//! Kafka's rules promise for each acks × min.insync.replicas × fault; `chaos` does the same
//! under a seeded random fault schedule; `groups` checks that a SIGKILLed group coordinator
//! loses no committed offset; `report` renders tables, Markdown and JSON.
//!
//! The CLI entry is [`run`] with [`LabArgs`]; tests call [`run_scenarios`] directly.
pub mod chaos;
pub mod checker;
pub mod cluster;
pub mod groups;
pub mod history;
pub mod netcut;
pub mod process;
pub mod report;
pub mod scenario;
pub mod workload;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::chaos::{run_chaos, ChaosConfig};
use crate::cluster::{ClusterSpec, LabCluster};
use crate::scenario::{expectation, run_scenario, RunConfig, Scenario, ScenarioResult, Verdict};

/// What can go wrong running the lab (as opposed to what the lab finds).
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{} not found: build the binaries first (`cargo build --workspace --bins`), or pass --bin-dir", path.display())]
    MissingBinary { path: PathBuf },
    #[error("cannot start {node}: {source}")]
    Spawn { node: String, source: std::io::Error },
    #[error("timed out after {timeout_ms} ms waiting for {what}")]
    Timeout { what: String, timeout_ms: u64 },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("reading a replica: {0}")]
    Log(#[from] insync_log::LogError),
    #[error("corrupt record batch in {}: {source}", path.display())]
    Batch { path: PathBuf, source: insync_log::BatchError },
    #[error(transparent)]
    Client(#[from] insync_client::ClientError),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    NetCut(#[from] crate::netcut::NetCutError),
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> LabError {
        LabError::Io { what: what.into(), source }
    }
}

/// `insync lab`: run the durability matrix (default) or chaos.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Durability lab: acks x min.insync.replicas x fault scenarios on a cluster it launches, judged by a checker",
    after_help = "Scenario ids are acks/min.insync/fault, e.g. all/2/kill-leader; `--list` shows them all.\n\
                  Examples:\n  insync lab                              # the whole matrix (8-9 minutes on 2 cores)\n  \
                  insync lab --scenario 'all/2/*'         # acks=all, min.insync.replicas=2 only\n  \
                  insync lab --scenario negative          # the negative controls\n  \
                  insync lab chaos --faults 200 --seed 7  # random faults; replay a failure with its seed"
)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: Option<LabCommand>,
    /// Run only matching scenarios: a glob (`all/2/*`) or a substring (`kill-leader`);
    /// repeatable or comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub scenario: Vec<String>,
    /// Write the result table as Markdown to FILE too.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// List the scenarios with what each is expected to show, and exit.
    #[arg(long)]
    pub list: bool,
    /// Seed of every random choice (fault timing, victims, chaos schedule): a run prints its
    /// seed, and the same seed replays the same choices.
    #[arg(long, global = true)]
    pub seed: Option<u64>,
    /// Concurrent producers (default: 4 per scenario; for chaos, 2 per partition).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub producers: Option<u16>,
    /// Keep the cluster's data directory and logs (kept anyway after a violation).
    #[arg(long, global = true)]
    pub keep_data: bool,
    /// Where `insync-broker` is (default: next to this executable).
    #[arg(long, global = true, env = "INSYNC_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// One JSON object per line (set from `insync --json`).
    #[arg(skip)]
    pub json: bool,
}

impl LabArgs {
    /// Sets the JSON output switch (the `insync` binary's global `--json`).
    pub fn with_json(mut self, json: bool) -> LabArgs {
        self.json = json;
        self
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LabCommand {
    /// Random faults (SIGKILL / SIGSTOP / restarts of brokers and of 3 controllers,
    /// back-to-back failovers, network partitions, a full disk; as root) against acks=all,
    /// min.insync.replicas=2; exits non-zero on any violation and prints the seed to replay it.
    Chaos(ChaosArgs),
    /// Consumer-group offsets: commit through the group's coordinator over the Kafka
    /// protocol, SIGKILL it mid-stream, and check that the new coordinator has every
    /// acknowledged commit before any new commit (and after more, and once the killed broker
    /// is back); ends with a negative control that destroys the offsets and must be caught.
    Groups,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Number of faults to inject.
    #[arg(long, default_value_t = 30)]
    pub faults: usize,
    /// Partitions of the chaos topic (their leaders spread over the brokers).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=16))]
    pub partitions: i32,
}

/// How a lab run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabExit {
    /// Scenarios that violated their expectation, negative controls that missed, errors.
    pub failures: usize,
    /// The command that replays the run.
    pub replay: String,
}

impl LabExit {
    /// `Err` (so the binary exits non-zero) when anything failed.
    pub fn into_result(self) -> anyhow::Result<()> {
        if self.failures == 0 {
            Ok(())
        } else {
            anyhow::bail!("{} scenario(s) failed; replay with `{}`", self.failures, self.replay)
        }
    }
}

fn default_bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent().map(PathBuf::from).ok_or_else(|| anyhow::anyhow!("cannot locate the directory of {}", exe.display()))
}

fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        % 1_000_000
}

/// Runs `insync lab` (the matrix or chaos). Ctrl-C stops it and every process it started.
pub async fn run(args: LabArgs) -> anyhow::Result<LabExit> {
    let work = async {
        match &args.command {
            Some(LabCommand::Chaos(chaos)) => run_chaos_command(&args, chaos).await,
            Some(LabCommand::Groups) => run_groups_command(&args).await,
            None => run_matrix_command(&args).await,
        }
    };
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; every process the lab started was killed"),
    }
}

fn progress_bar(len: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One line per finished scenario, above the bar (or plainly on stderr without a terminal).
fn announce(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

async fn run_matrix_command(args: &LabArgs) -> anyhow::Result<LabExit> {
    let mut scenarios = scenario::select(&args.scenario);
    if args.list {
        for s in &scenarios {
            println!("{:<62} {}", s.id, expectation(s).summary);
        }
        return Ok(LabExit { failures: 0, replay: String::new() });
    }
    anyhow::ensure!(!scenarios.is_empty(), "no scenario matches {:?} (see `insync lab --list`)", args.scenario);
    let seed = args.seed.unwrap_or_else(fresh_seed);
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => default_bin_dir()?,
    };
    check_negative_controls(&mut scenarios, &bin_dir, !args.scenario.is_empty())?;
    let mut replay = format!("insync lab --seed {seed}");
    for p in &args.scenario {
        replay.push_str(&format!(" --scenario '{p}'"));
    }
    if !args.json {
        eprintln!(
            "insync lab: {} scenario(s), seed {seed}; launching 1 controller + 3 brokers from {}",
            scenarios.len(),
            bin_dir.display()
        );
    }
    let config = RunConfig { seed, producers: args.producers.map_or(4, usize::from), ..RunConfig::default() };
    let bar = progress_bar(scenarios.len() as u64, args.json);
    let started = Instant::now();
    let bar_for_lines = bar.clone();
    let outcome = run_scenarios_with(
        &bin_dir,
        &scenarios,
        &config,
        args.keep_data,
        &|phase: &str| bar.set_message(phase.to_string()),
        &|result: &ScenarioResult| {
            bar_for_lines.inc(1);
            if !args.json {
                announce(
                    &bar_for_lines,
                    format!(
                        "{:<58} {:>5.1} s  {}",
                        result.scenario.id,
                        result.duration_ms as f64 / 1000.0,
                        report::verdict_cell(result)
                    ),
                );
            } else {
                println!("{}", serde_json::to_string(result).unwrap_or_default());
            }
        },
    )
    .await;
    bar.finish_and_clear();
    let (results, kept) = outcome?;
    let failures = results.iter().filter(|r| r.verdict.is_failure()).count();
    let took = started.elapsed();
    if let Some(file) = &args.markdown {
        std::fs::write(file, report::markdown(&results, seed))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "summary": {
                    "scenarios": results.len(),
                    "failures": failures,
                    "seed": seed,
                    "seconds": took.as_secs_f64(),
                    "replay": replay,
                    "data_dir": kept.as_ref().map(|p| p.display().to_string()),
                }
            })
        );
    } else {
        println!("{}", report::table(&results));
        print!("{}", report::details(&results));
        let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
        println!(
            "\n{} scenario(s) in {:.0} s: {} ok, {} ok with allowed loss, {} negative control(s) caught, {} violation(s), {} missed, {} error(s)",
            results.len(),
            took.as_secs_f64(),
            count(Verdict::Ok),
            count(Verdict::OkLossAllowed),
            count(Verdict::Caught),
            count(Verdict::Violation),
            count(Verdict::Missed),
            count(Verdict::Error)
        );
        println!("seed {seed}: replay with `{replay}`");
        if let Some(dir) = kept {
            println!("cluster data and logs kept in {}", dir.display());
        }
    }
    Ok(LabExit { failures, replay })
}

/// The scenarios that need brokers with the pre-KIP-101 negative control, when the brokers in
/// `bin_dir` do not have it (shipped builds): named ones are an error that says how to build
/// them; in the default matrix they are left out with one line saying so.
fn check_negative_controls(
    scenarios: &mut Vec<Scenario>,
    bin_dir: &std::path::Path,
    named: bool,
) -> anyhow::Result<()> {
    let needing: Vec<String> = scenarios.iter().filter(|s| s.unsafe_brokers).map(|s| s.id.clone()).collect();
    if needing.is_empty() || process::broker_has_unsafe_truncation(bin_dir) {
        return Ok(());
    }
    let why = format!(
        "{} need(s) brokers built with the unsafe-truncation feature, which {} lacks: `{}`, or pass --bin-dir",
        needing.join(", "),
        bin_dir.join("insync-broker").display(),
        process::UNSAFE_TRUNCATION_BUILD
    );
    anyhow::ensure!(!named, "{why}");
    eprintln!("insync lab: not running {why}");
    scenarios.retain(|s| !s.unsafe_brokers);
    Ok(())
}

/// Runs `scenarios` on clusters launched from `bin_dir` (one with correct brokers, one
/// with the unsafe flag when a negative control needs it), in order. For tests.
pub async fn run_scenarios(
    bin_dir: &std::path::Path,
    scenarios: &[Scenario],
    config: &RunConfig,
) -> Result<Vec<ScenarioResult>, LabError> {
    run_scenarios_with(bin_dir, scenarios, config, false, &|_| {}, &|_| {}).await.map(|(r, _)| r)
}

type KeptDir = Option<PathBuf>;

/// The size of each broker's data directory when a disk-full scenario runs: room for every
/// scenario's data, and quick to fill.
const LAB_DISK_MIB: u64 = 512;

/// The same for chaos, whose producers write for minutes (a 300-fault run used a few MiB
/// per broker; each fill takes the rest of this in RAM).
const CHAOS_DISK_MIB: u64 = 1024;

async fn run_scenarios_with(
    bin_dir: &std::path::Path,
    scenarios: &[Scenario],
    config: &RunConfig,
    keep_data: bool,
    phase: &(dyn Fn(&str) + Sync),
    done: &(dyn Fn(&ScenarioResult) + Sync),
) -> Result<(Vec<ScenarioResult>, KeptDir), LabError> {
    let mut results = Vec::new();
    let mut kept = None;
    // Correct brokers first (1 controller, then a 3-voter quorum for the scenarios that cut
    // it), then the unsafe ones; one cluster each, a new topic per scenario.
    for (unsafe_brokers, quorum) in [(false, false), (false, true), (true, false)] {
        let group: Vec<(usize, &Scenario)> = scenarios
            .iter()
            .enumerate()
            .filter(|(_, s)| s.unsafe_brokers == unsafe_brokers && s.fault.needs_quorum() == quorum)
            .collect();
        if group.is_empty() {
            continue;
        }
        phase(match (unsafe_brokers, quorum) {
            (true, _) => "launching brokers with --unsafe-truncate-to-high-watermark",
            (false, true) => "launching a cluster with 3 controllers",
            (false, false) => "launching cluster",
        });
        if unsafe_brokers && !process::broker_has_unsafe_truncation(bin_dir) {
            return Err(LabError::Setup(format!(
                "the negative control needs brokers built with the unsafe-truncation feature: `{}`",
                process::UNSAFE_TRUNCATION_BUILD
            )));
        }
        let mut spec = ClusterSpec::new(bin_dir.to_path_buf());
        spec.unsafe_truncate_to_high_watermark = unsafe_brokers;
        spec.controllers = if quorum { 3 } else { 1 };
        // Size-limited data directories only when a disk-full scenario runs (they need root).
        spec.disk_limit_mib = group.iter().any(|(_, s)| s.fault.needs_small_disks()).then_some(LAB_DISK_MIB);
        let mut lab = LabCluster::start(spec).await?;
        let mut failed = false;
        for (index, scenario) in group {
            phase(&scenario.id);
            let result = run_scenario(&mut lab, scenario, index, config, &|p: &str| {
                phase(&format!("{}: {p}", scenario.id));
            })
            .await;
            failed |= result.verdict.is_failure();
            done(&result);
            results.push(result);
        }
        if keep_data || failed {
            kept = Some(lab.keep_data());
        }
    }
    results.sort_by_key(|r| scenarios.iter().position(|s| s.id == r.scenario.id));
    Ok((results, kept))
}

async fn run_chaos_command(args: &LabArgs, chaos: &ChaosArgs) -> anyhow::Result<LabExit> {
    let seed = args.seed.unwrap_or_else(fresh_seed);
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => default_bin_dir()?,
    };
    let replay = format!("insync lab chaos --faults {} --seed {seed}", chaos.faults);
    if !args.json {
        eprintln!(
            "insync lab chaos: {} faults, seed {seed}; launching 3 controllers + 3 brokers from {}",
            chaos.faults,
            bin_dir.display()
        );
    }
    let mut spec = ClusterSpec::new(bin_dir);
    spec.controllers = 3;
    // Room for a long run's data; the disk-full fault fills what is left.
    spec.disk_limit_mib = Some(CHAOS_DISK_MIB);
    let mut lab = LabCluster::start(spec).await?;
    let bar = progress_bar(chaos.faults as u64, args.json);
    let bar_for_lines = bar.clone();
    let json = args.json;
    let config = ChaosConfig {
        faults: chaos.faults,
        partitions: chaos.partitions,
        run: RunConfig {
            seed,
            producers: args.producers.map_or(2 * chaos.partitions as usize, usize::from),
            ..RunConfig::default()
        },
    };
    let result = run_chaos(&mut lab, &config, &|done, line| {
        bar_for_lines.set_position(done as u64);
        if !json {
            announce(&bar_for_lines, line.to_string());
        }
    })
    .await;
    bar.finish_and_clear();
    let result = result?;
    let failures = usize::from(result.verdict.is_failure());
    let kept = if failures > 0 || args.keep_data { Some(lab.keep_data()) } else { None };
    if json {
        let mut value = serde_json::to_value(&result)?;
        value["replay"] = serde_json::Value::String(replay.clone());
        value["data_dir"] = serde_json::json!(kept.as_ref().map(|p| p.display().to_string()));
        println!("{value}");
    } else {
        print!("{}", report::chaos_summary(&result, &replay));
        if let Some(dir) = kept {
            println!("cluster data and logs kept in {}", dir.display());
        }
    }
    Ok(LabExit { failures, replay })
}

async fn run_groups_command(args: &LabArgs) -> anyhow::Result<LabExit> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => default_bin_dir()?,
    };
    if !args.json {
        eprintln!("insync lab groups: launching 1 controller + 3 brokers from {}", bin_dir.display());
    }
    let result = groups::run_group_offsets(&bin_dir, &groups::GroupRunConfig::default()).await?;
    let failures = usize::from(result.verdict.is_failure());
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print!("{}", groups::summary(&result));
    }
    Ok(LabExit { failures, replay: "insync lab groups".into() })
}
