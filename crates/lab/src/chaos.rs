//! Chaos mode: a seeded random schedule of faults — SIGKILL, SIGSTOP and restarts of
//! brokers and of controllers (a 3-voter quorum), leader kills, back-to-back failovers and
//! the KIP-101 restart-then-kill — against acks=all with min.insync.replicas=2, while
//! producers stream. At the end the cluster is healed, every partition is read back from
//! every replica, and any anomaly is a violation (acks=all + min.insync=2 must lose
//! nothing). The seed decides every choice, so a failing run is replayed with its seed
//! (the timing of real processes still varies).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::checker::{check, Anomaly, CheckResult, Reads};
use crate::cluster::{LabCluster, NodeId, BROKERS};
use crate::history::Op;
use crate::scenario::{anomaly_counts, judge, ErrorRule, Expectation, LossRule, RunConfig, Verdict};
use crate::workload::{read_through_leader, Workload, WorkloadConfig};
use crate::LabError;
use insync_types::Acks;

/// Chaos settings.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub faults: usize,
    pub partitions: i32,
    pub run: RunConfig,
}

/// What a chaos run found.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosResult {
    pub seed: u64,
    pub faults: usize,
    pub topic: String,
    pub duration_ms: u64,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub stats: crate::checker::Stats,
    pub anomaly_counts: BTreeMap<crate::checker::AnomalyKind, usize>,
    pub anomalies: Vec<Anomaly>,
    /// The fault schedule as it was carried out.
    pub schedule: Vec<String>,
}

/// A node taken out, and after how many more faults it comes back.
struct Out {
    node: NodeId,
    paused: bool,
    steps_left: usize,
}

const TOPIC: &str = "chaos";

/// Runs chaos on `lab` (3 controllers). `progress(done, line)` is told of each fault.
pub async fn run_chaos(
    lab: &mut LabCluster,
    config: &ChaosConfig,
    progress: &(dyn Fn(usize, &str) + Sync),
) -> Result<ChaosResult, LabError> {
    let started = Instant::now();
    let seed = config.run.seed;
    let mut rng = StdRng::seed_from_u64(seed);
    let session_ms = lab.spec().broker_session_timeout_ms;
    let controllers: Vec<i32> = lab
        .node_ids()
        .into_iter()
        .filter_map(|n| match n {
            NodeId::Controller(c) => Some(c),
            _ => None,
        })
        .collect();
    lab.create_topic(TOPIC, config.partitions, 2, Duration::from_secs(30)).await?;
    let workload = Workload::start(
        &lab.bootstrap(),
        WorkloadConfig {
            topic: TOPIC.into(),
            partitions: config.partitions,
            acks: Acks::All,
            producers: config.run.producers,
            pace: config.run.pace,
            request_timeout: config.run.request_timeout,
            delivery_timeout: config.run.delivery_timeout,
            tag: format!("chaos{seed}"),
        },
    )?;
    let t0 = Instant::now();
    let mut schedule: Vec<String> = Vec::new();
    let mut out: Vec<Out> = Vec::new();
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    for step in 0..config.faults {
        // Bring back what is due.
        for o in out.iter_mut() {
            o.steps_left = o.steps_left.saturating_sub(1);
        }
        let due: Vec<Out> = {
            let (due, keep): (Vec<Out>, Vec<Out>) = out.into_iter().partition(|o| o.steps_left == 0);
            out = keep;
            due
        };
        for o in due {
            bring_back(lab, &o, &mut schedule, t0)?;
        }
        // Keep two of three brokers and two of three controllers reachable most of the time,
        // so faults keep striking a cluster that works (and failovers have somewhere to go).
        while out.iter().filter(|o| matches!(o.node, NodeId::Broker(_))).count() >= 2 {
            let o = out.remove(0);
            bring_back(lab, &o, &mut schedule, t0)?;
        }
        while out.iter().filter(|o| matches!(o.node, NodeId::Controller(_))).count() >= 1 && rng.gen_bool(0.5) {
            let index = out.iter().position(|o| matches!(o.node, NodeId::Controller(_))).unwrap_or(0);
            let o = out.remove(index);
            bring_back(lab, &o, &mut schedule, t0)?;
        }
        let down_brokers: Vec<i32> = out
            .iter()
            .filter_map(|o| match o.node {
                NodeId::Broker(b) => Some(b),
                _ => None,
            })
            .collect();
        let up_brokers: Vec<i32> = (1..=BROKERS).filter(|b| !down_brokers.contains(b)).collect();
        let controller_out = out.iter().any(|o| matches!(o.node, NodeId::Controller(_)));
        let partition = rng.gen_range(0..config.partitions);
        let steps_left = rng.gen_range(1..=3);
        let stamp = |t0: Instant| format!("[{:>6} ms] fault {:>3}:", t0.elapsed().as_millis(), step + 1);
        let choice = rng.gen_range(0..100);
        let line = match choice {
            // SIGKILL a broker (often the leader of a partition).
            0..=24 => {
                let victim = if rng.gen_bool(0.5) { leader_among(lab, partition, &up_brokers).await } else { None }
                    .unwrap_or_else(|| *up_brokers.choose(&mut rng).unwrap_or(&1));
                lab.kill(NodeId::Broker(victim));
                out.push(Out { node: NodeId::Broker(victim), paused: false, steps_left });
                format!("SIGKILL broker {victim}")
            }
            // SIGSTOP a broker; for 1–3 faults it may outlive the session timeout (a zombie).
            25..=44 => {
                let victim = if rng.gen_bool(0.5) { leader_among(lab, partition, &up_brokers).await } else { None }
                    .unwrap_or_else(|| *up_brokers.choose(&mut rng).unwrap_or(&1));
                lab.pause(NodeId::Broker(victim));
                out.push(Out { node: NodeId::Broker(victim), paused: true, steps_left });
                format!("SIGSTOP broker {victim}")
            }
            // Clean restart of a broker (SIGTERM: controlled shutdown, then start).
            45..=54 => {
                let victim = *up_brokers.choose(&mut rng).unwrap_or(&1);
                lab.stop(&[NodeId::Broker(victim)], Duration::from_secs(10)).await;
                lab.start_node(NodeId::Broker(victim))?;
                format!("SIGTERM + restart broker {victim}")
            }
            // Back-to-back failovers: kill the leader, and the next one as soon as it leads.
            55..=66 if up_brokers.len() == BROKERS as usize => {
                let first = leader_among(lab, partition, &up_brokers).await.unwrap_or(1);
                lab.kill(NodeId::Broker(first));
                let deadline = Instant::now() + Duration::from_millis(session_ms * 3);
                let mut second = None;
                while Instant::now() < deadline {
                    if let Some(p) = lab.partition(TOPIC, partition).await {
                        if p.leader > 0 && p.leader != first {
                            second = Some(p.leader);
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                out.push(Out { node: NodeId::Broker(first), paused: false, steps_left });
                match second {
                    Some(s) => {
                        lab.kill(NodeId::Broker(s));
                        out.push(Out { node: NodeId::Broker(s), paused: false, steps_left });
                        format!("back-to-back failover of partition {partition}: SIGKILL leader {first}, then new leader {s}")
                    }
                    None => format!("SIGKILL leader {first} of partition {partition} (no new leader in time)"),
                }
            }
            // The KIP-101 set-up: restart a follower, kill the leader before it rejoined.
            55..=74 if up_brokers.len() == BROKERS as usize => {
                let leader = leader_among(lab, partition, &up_brokers).await.unwrap_or(1);
                let followers: Vec<i32> = up_brokers.iter().copied().filter(|b| *b != leader).collect();
                let follower = *followers.choose(&mut rng).unwrap_or(&1);
                lab.kill(NodeId::Broker(follower));
                tokio::time::sleep(Duration::from_millis(200)).await;
                lab.start_node(NodeId::Broker(follower))?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                lab.kill(NodeId::Broker(leader));
                out.push(Out { node: NodeId::Broker(leader), paused: false, steps_left });
                format!("restart follower {follower}, then SIGKILL leader {leader} of partition {partition}")
            }
            // Controllers: kill or pause one (often the active one).
            _ if !controller_out => {
                let active = lab.metadata().await.map(|m| m.controller_id).filter(|c| *c > 0);
                let victim = match active {
                    Some(a) if rng.gen_bool(0.6) => a,
                    _ => *controllers.choose(&mut rng).unwrap_or(&1),
                };
                if rng.gen_bool(0.5) {
                    lab.kill(NodeId::Controller(victim));
                    out.push(Out { node: NodeId::Controller(victim), paused: false, steps_left });
                    format!("SIGKILL controller {victim}{}", if active == Some(victim) { " (active)" } else { "" })
                } else {
                    lab.pause(NodeId::Controller(victim));
                    out.push(Out { node: NodeId::Controller(victim), paused: true, steps_left });
                    format!("SIGSTOP controller {victim}{}", if active == Some(victim) { " (active)" } else { "" })
                }
            }
            _ => {
                let victim = *up_brokers.choose(&mut rng).unwrap_or(&1);
                lab.kill(NodeId::Broker(victim));
                out.push(Out { node: NodeId::Broker(victim), paused: false, steps_left });
                format!("SIGKILL broker {victim}")
            }
        };
        let line = format!("{} {line} ({} acknowledged so far)", stamp(t0), workload.acknowledged());
        progress(step + 1, &line);
        schedule.push(line);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1_500))).await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let ops = workload.stop().await;

    schedule.push(format!("[{:>6} ms] healing everything", t0.elapsed().as_millis()));
    lab.heal()?;
    let healed = lab.wait_healed(TOPIC, config.partitions, Duration::from_secs(90)).await.map_err(|e| e.to_string());
    let mut result = CheckResult::default();
    let mut consumers = Vec::new();
    for p in 0..config.partitions {
        consumers.push(read_through_leader(&lab.bootstrap(), TOPIC, p, Duration::from_secs(30)).await.ok());
    }
    let brokers: Vec<NodeId> = (1..=BROKERS).map(NodeId::Broker).collect();
    lab.stop(&brokers, Duration::from_secs(15)).await;
    for (p, consumer) in consumers.into_iter().enumerate() {
        let p = p as i32;
        let mut replicas = Vec::new();
        for b in 1..=BROKERS {
            replicas.push(lab.read_replica(b, TOPIC, p)?);
        }
        let partition_ops: Vec<Op> = ops.iter().filter(|o| o.partition == p).cloned().collect();
        result.merge(check(&partition_ops, &Reads { replicas, consumer }));
    }
    let expectation = Expectation {
        loss: LossRule::MustNotLose,
        not_enough_replicas: ErrorRule::Allowed,
        no_errors: false,
        negative_control: false,
        summary: "acks=all, min.insync.replicas=2: lose nothing".into(),
    };
    let (verdict, reasons) = judge(&expectation, &result, healed);
    Ok(ChaosResult {
        seed,
        faults: config.faults,
        topic: TOPIC.into(),
        duration_ms: started.elapsed().as_millis() as u64,
        verdict,
        reasons,
        anomaly_counts: anomaly_counts(&result),
        anomalies: result.anomalies.iter().take(20).cloned().collect(),
        stats: result.stats,
        schedule,
    })
}

/// The current leader of the partition if it is among `candidates`.
async fn leader_among(lab: &mut LabCluster, partition: i32, candidates: &[i32]) -> Option<i32> {
    lab.partition(TOPIC, partition).await.map(|p| p.leader).filter(|l| candidates.contains(l))
}

fn bring_back(lab: &mut LabCluster, o: &Out, schedule: &mut Vec<String>, t0: Instant) -> Result<(), LabError> {
    if o.paused {
        lab.resume(o.node);
        schedule.push(format!("[{:>6} ms]   SIGCONT {}", t0.elapsed().as_millis(), o.node));
    } else {
        lab.start_node(o.node)?;
        schedule.push(format!("[{:>6} ms]   restart {}", t0.elapsed().as_millis(), o.node));
    }
    Ok(())
}
