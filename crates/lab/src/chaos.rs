//! Chaos mode: a seeded random schedule of faults — SIGKILL, SIGSTOP and restarts of
//! brokers and of controllers (a 3-voter quorum), leader kills, back-to-back failovers, the
//! KIP-101 restart-then-kill, network partitions (a broker isolated, cut from the
//! controllers, a one-way cut, a controller cut from the quorum) and a full disk — against acks=all with min.insync.replicas=2, while
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

/// A node taken out, how, and after how many more faults it comes back.
struct Out {
    node: NodeId,
    how: How,
    steps_left: usize,
}

/// How a node was taken out, which says how it comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// SIGKILLed: restarted.
    Killed,
    /// SIGSTOPped: SIGCONTed.
    Paused,
    /// Links cut (the process runs): every cut is healed.
    Cut,
    /// Its data directory filled: the space is freed and the broker restarted (an offline
    /// log directory comes back with a restart, as in Kafka).
    DiskFull,
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
    let workload = start_workload(lab, config).await?;
    let mut faults = Faults {
        rng: StdRng::seed_from_u64(seed),
        session_ms: lab.spec().broker_session_timeout_ms,
        controllers: lab.controller_ids(),
        partitions: config.partitions,
        out: Vec::new(),
        schedule: Vec::new(),
        t0: Instant::now(),
    };
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    for step in 0..config.faults {
        faults.bring_back_due(lab).await?;
        let line = faults.inject(lab).await?;
        let stamp = format!("[{:>6} ms] fault {:>3}:", faults.t0.elapsed().as_millis(), step + 1);
        let line = format!("{stamp} {line} ({} acknowledged so far)", workload.acknowledged());
        progress(step + 1, &line);
        faults.schedule.push(line);
        tokio::time::sleep(Duration::from_millis(faults.rng.gen_range(300..1_500))).await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let ops = workload.stop().await;

    // Bring back what is still out the way it was taken out: a full disk needs its space
    // freed and its broker restarted, which the lab's generic heal knows nothing of.
    for o in std::mem::take(&mut faults.out) {
        bring_back(lab, &o, &mut faults.schedule, faults.t0).await?;
    }
    let Faults { mut schedule, t0, .. } = faults;
    schedule.push(format!("[{:>6} ms] healing everything", t0.elapsed().as_millis()));
    let (result, healed) = heal_and_check(lab, config.partitions, &ops).await?;
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

/// Creates the chaos topic (min.insync.replicas=2) and starts the acks=all producers on it.
async fn start_workload(lab: &mut LabCluster, config: &ChaosConfig) -> Result<Workload, LabError> {
    lab.create_topic(TOPIC, config.partitions, 2, Duration::from_secs(30)).await?;
    Workload::start(
        &lab.bootstrap(),
        WorkloadConfig {
            topic: TOPIC.into(),
            partitions: config.partitions,
            acks: Acks::All,
            producers: config.run.producers,
            pace: config.run.pace,
            request_timeout: config.run.request_timeout,
            delivery_timeout: config.run.delivery_timeout,
            tag: format!("chaos{}", config.run.seed),
        },
    )
}

/// Heals the cluster, reads every partition back through its leader and then from every
/// broker's files (stopped cleanly first, so HW checkpoints are current), and checks `ops`
/// against those reads. Also returns whether the cluster healed in time.
async fn heal_and_check(
    lab: &mut LabCluster,
    partitions: i32,
    ops: &[Op],
) -> Result<(CheckResult, Result<(), String>), LabError> {
    lab.heal()?;
    let healed = lab.wait_healed(TOPIC, partitions, Duration::from_secs(90)).await.map_err(|e| e.to_string());
    let mut result = CheckResult::default();
    let mut consumers = Vec::new();
    for p in 0..partitions {
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
    Ok((result, healed))
}

/// The fault schedule in progress. Every random choice comes from `rng`, in a fixed order,
/// so that a run is replayed from its seed: keep the order of `rng` calls when editing.
struct Faults {
    rng: StdRng,
    session_ms: u64,
    controllers: Vec<i32>,
    partitions: i32,
    /// Nodes taken out and not yet brought back.
    out: Vec<Out>,
    /// The log of what was done, for the result.
    schedule: Vec<String>,
    /// When the producers started; the schedule's timestamps count from here.
    t0: Instant,
}

impl Faults {
    /// Brings `o` back. Healing one cut heals them all, so every other cut entry leaves
    /// `out` too (it would count a reachable node as out).
    async fn bring_back(&mut self, lab: &mut LabCluster, o: &Out) -> Result<(), LabError> {
        bring_back(lab, o, &mut self.schedule, self.t0).await?;
        if o.how == How::Cut {
            self.out.retain(|other| other.how != How::Cut);
        }
        Ok(())
    }

    /// Brings back the nodes whose time is up, and more if too many are out.
    async fn bring_back_due(&mut self, lab: &mut LabCluster) -> Result<(), LabError> {
        for o in self.out.iter_mut() {
            o.steps_left = o.steps_left.saturating_sub(1);
        }
        let (due, keep): (Vec<Out>, Vec<Out>) =
            std::mem::take(&mut self.out).into_iter().partition(|o| o.steps_left == 0);
        self.out = keep;
        for o in due {
            self.bring_back(lab, &o).await?;
        }
        // Keep two of three brokers and two of three controllers reachable most of the time,
        // so faults keep striking a cluster that works (and failovers have somewhere to go).
        while self.out.iter().filter(|o| matches!(o.node, NodeId::Broker(_))).count() >= 2 {
            let o = self.out.remove(0);
            self.bring_back(lab, &o).await?;
        }
        while self.out.iter().any(|o| matches!(o.node, NodeId::Controller(_))) && self.rng.gen_bool(0.5) {
            let index = self.out.iter().position(|o| matches!(o.node, NodeId::Controller(_))).unwrap_or(0);
            let o = self.out.remove(index);
            self.bring_back(lab, &o).await?;
        }
        Ok(())
    }

    /// Picks and carries out one fault; returns its description for the schedule.
    async fn inject(&mut self, lab: &mut LabCluster) -> Result<String, LabError> {
        let down_brokers: Vec<i32> = self
            .out
            .iter()
            .filter_map(|o| match o.node {
                NodeId::Broker(b) => Some(b),
                _ => None,
            })
            .collect();
        let up_brokers: Vec<i32> = (1..=BROKERS).filter(|b| !down_brokers.contains(b)).collect();
        let all_up = up_brokers.len() == BROKERS as usize;
        let controller_out = self.out.iter().any(|o| matches!(o.node, NodeId::Controller(_)));
        let partition = self.rng.gen_range(0..self.partitions);
        let steps_left = self.rng.gen_range(1..=3);
        let line = match self.rng.gen_range(0..100) {
            // SIGKILL a broker (often the leader of a partition).
            0..=19 => self.stop_broker(lab, partition, &up_brokers, false, steps_left).await,
            // SIGSTOP a broker; for 1–3 faults it may outlive the session timeout (a zombie).
            20..=34 => self.stop_broker(lab, partition, &up_brokers, true, steps_left).await,
            // Clean restart of a broker (SIGTERM: controlled shutdown, then start).
            35..=44 => {
                let victim = *up_brokers.choose(&mut self.rng).unwrap_or(&1);
                lab.stop(&[NodeId::Broker(victim)], Duration::from_secs(10)).await;
                lab.start_node(NodeId::Broker(victim))?;
                format!("SIGTERM + restart broker {victim}")
            }
            // The failovers need all three brokers up: the first and the second leader, and the
            // remaining follower.
            45..=54 if all_up => self.back_to_back_failover(lab, partition, &up_brokers, steps_left).await,
            45..=62 if all_up => {
                self.restart_follower_then_kill_leader(lab, partition, &up_brokers, steps_left).await?
            }
            // Network partitions: a broker isolated (a zombie if it leads), cut from the
            // controllers only, or a follower's calls to its leader cut one way.
            63..=78 if all_up => self.cut_broker(lab, partition, &up_brokers, steps_left).await?,
            // A full disk on one broker (its replicas go offline until it restarts).
            79..=86 if all_up => self.fill_disk(lab, partition, &up_brokers, steps_left).await?,
            // Controllers: one out at a time, so the quorum keeps a majority.
            _ if !controller_out => self.stop_controller(lab, steps_left).await?,
            // The fault the arms above could not strike: SIGKILL any broker that is up.
            _ => {
                let victim = *up_brokers.choose(&mut self.rng).unwrap_or(&1);
                lab.kill(NodeId::Broker(victim));
                self.out.push(Out { node: NodeId::Broker(victim), how: How::Killed, steps_left });
                format!("SIGKILL broker {victim}")
            }
        };
        Ok(line)
    }

    /// Half the time the partition's leader (when it is up), else any broker that is up.
    async fn leader_or_any(&mut self, lab: &mut LabCluster, partition: i32, up_brokers: &[i32]) -> i32 {
        // Both draws always, so the schedule follows the seed whatever the cluster answers.
        let (pick_leader, any) = (self.rng.gen_bool(0.5), *up_brokers.choose(&mut self.rng).unwrap_or(&1));
        let leader = if pick_leader { leader_among(lab, partition, up_brokers).await } else { None };
        leader.unwrap_or(any)
    }

    /// SIGKILLs or SIGSTOPs (`pause`) a broker that is up: half the time the partition's leader.
    async fn stop_broker(
        &mut self,
        lab: &mut LabCluster,
        partition: i32,
        up_brokers: &[i32],
        pause: bool,
        steps_left: usize,
    ) -> String {
        let victim = self.leader_or_any(lab, partition, up_brokers).await;
        if pause {
            lab.pause(NodeId::Broker(victim));
        } else {
            lab.kill(NodeId::Broker(victim));
        }
        self.out.push(Out {
            node: NodeId::Broker(victim),
            how: if pause { How::Paused } else { How::Killed },
            steps_left,
        });
        format!("{} broker {victim}", if pause { "SIGSTOP" } else { "SIGKILL" })
    }

    /// Back-to-back failovers: kills the partition's leader, and the next one as soon as it leads.
    async fn back_to_back_failover(
        &mut self,
        lab: &mut LabCluster,
        partition: i32,
        up_brokers: &[i32],
        steps_left: usize,
    ) -> String {
        let first = leader_among(lab, partition, up_brokers).await.unwrap_or(1);
        lab.kill(NodeId::Broker(first));
        let deadline = Instant::now() + Duration::from_millis(self.session_ms * 3);
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
        self.out.push(Out { node: NodeId::Broker(first), how: How::Killed, steps_left });
        match second {
            Some(s) => {
                lab.kill(NodeId::Broker(s));
                self.out.push(Out { node: NodeId::Broker(s), how: How::Killed, steps_left });
                format!("back-to-back failover of partition {partition}: SIGKILL leader {first}, then new leader {s}")
            }
            None => format!("SIGKILL leader {first} of partition {partition} (no new leader in time)"),
        }
    }

    /// The KIP-101 set-up: restarts a follower and kills the leader before the follower rejoined.
    async fn restart_follower_then_kill_leader(
        &mut self,
        lab: &mut LabCluster,
        partition: i32,
        up_brokers: &[i32],
        steps_left: usize,
    ) -> Result<String, LabError> {
        let leader = leader_among(lab, partition, up_brokers).await.unwrap_or(1);
        let followers: Vec<i32> = up_brokers.iter().copied().filter(|b| *b != leader).collect();
        let follower = *followers.choose(&mut self.rng).unwrap_or(&1);
        lab.kill(NodeId::Broker(follower));
        tokio::time::sleep(Duration::from_millis(200)).await;
        lab.start_node(NodeId::Broker(follower))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        lab.kill(NodeId::Broker(leader));
        self.out.push(Out { node: NodeId::Broker(leader), how: How::Killed, steps_left });
        Ok(format!("restart follower {follower}, then SIGKILL leader {leader} of partition {partition}"))
    }

    /// Kills, pauses or cuts from the quorum one controller, often the active one.
    async fn stop_controller(&mut self, lab: &mut LabCluster, steps_left: usize) -> Result<String, LabError> {
        let (pick_active, any) = (self.rng.gen_bool(0.6), *self.controllers.choose(&mut self.rng).unwrap_or(&1));
        let active = lab.metadata().await.map(|m| m.controller_id).filter(|c| *c > 0);
        let victim = match active {
            Some(a) if pick_active => a,
            _ => any,
        };
        let which = if active == Some(victim) { " (active)" } else { "" };
        let node = NodeId::Controller(victim);
        Ok(match self.rng.gen_range(0..3) {
            0 => {
                lab.kill(node);
                self.out.push(Out { node, how: How::Killed, steps_left });
                format!("SIGKILL controller {victim}{which}")
            }
            1 => {
                lab.pause(node);
                self.out.push(Out { node, how: How::Paused, steps_left });
                format!("SIGSTOP controller {victim}{which}")
            }
            _ => {
                // Cut from the other voters only: brokers still reach it, and it must stop
                // acting as the controller once it cannot commit.
                for other in self.controllers.clone().into_iter().filter(|c| *c != victim) {
                    lab.cut(node, NodeId::Controller(other))?;
                }
                self.out.push(Out { node, how: How::Cut, steps_left });
                format!("cut controller {victim}{which} from the quorum")
            }
        })
    }

    /// Cuts links around a broker, half the time the partition's leader: isolates it from
    /// every node, cuts it from the controllers, or cuts a follower's calls to the leader.
    async fn cut_broker(
        &mut self,
        lab: &mut LabCluster,
        partition: i32,
        up_brokers: &[i32],
        steps_left: usize,
    ) -> Result<String, LabError> {
        let victim = self.leader_or_any(lab, partition, up_brokers).await;
        let leader = leader_among(lab, partition, up_brokers).await;
        let node = NodeId::Broker(victim);
        let line = match (self.rng.gen_range(0..3), leader) {
            (0, _) => {
                lab.isolate(node)?;
                format!("isolate broker {victim} from every node (clients still reach it)")
            }
            (1, _) => {
                for c in self.controllers.clone() {
                    lab.cut(node, NodeId::Controller(c))?;
                }
                format!("cut broker {victim} from the controllers")
            }
            (_, Some(l)) if l != victim => {
                lab.cut_one_way(node, NodeId::Broker(l))?;
                format!("cut broker {victim} -> leader {l} of partition {partition} one way")
            }
            _ => {
                let other = *up_brokers.iter().find(|b| **b != victim).unwrap_or(&1);
                lab.cut_one_way(NodeId::Broker(other), node)?;
                format!("cut broker {other} -> broker {victim} one way")
            }
        };
        self.out.push(Out { node, how: How::Cut, steps_left });
        Ok(line)
    }

    /// Fills the disk of a broker, half the time the partition's leader.
    async fn fill_disk(
        &mut self,
        lab: &mut LabCluster,
        partition: i32,
        up_brokers: &[i32],
        steps_left: usize,
    ) -> Result<String, LabError> {
        let victim = self.leader_or_any(lab, partition, up_brokers).await;
        let filled = lab.fill_disk(victim).await?;
        self.out.push(Out { node: NodeId::Broker(victim), how: How::DiskFull, steps_left });
        Ok(format!("fill the disk of broker {victim} ({} MiB)", filled >> 20))
    }
}

/// The current leader of the partition if it is among `candidates`.
async fn leader_among(lab: &mut LabCluster, partition: i32, candidates: &[i32]) -> Option<i32> {
    lab.partition(TOPIC, partition).await.map(|p| p.leader).filter(|l| candidates.contains(l))
}

/// Brings `o` back. Healing cuts heals every cut (the other cut entries stay in `out` and
/// find nothing left to heal when their turn comes).
async fn bring_back(lab: &mut LabCluster, o: &Out, schedule: &mut Vec<String>, t0: Instant) -> Result<(), LabError> {
    let what = match o.how {
        How::Paused => {
            lab.resume(o.node);
            format!("SIGCONT {}", o.node)
        }
        How::Killed => {
            lab.start_node(o.node)?;
            format!("restart {}", o.node)
        }
        How::Cut => {
            let cuts = lab.cut_links();
            lab.heal_links()?;
            if cuts.is_empty() {
                return Ok(());
            }
            let names: Vec<String> = cuts.iter().map(|(from, to)| format!("{from} -> {to}")).collect();
            format!("heal links ({})", names.join(", "))
        }
        How::DiskFull => {
            if let NodeId::Broker(b) = o.node {
                lab.free_disk(b)?;
            }
            lab.stop(&[o.node], Duration::from_secs(10)).await;
            lab.start_node(o.node)?;
            format!("free the disk of {} and restart it", o.node)
        }
    };
    schedule.push(format!("[{:>6} ms]   {what}", t0.elapsed().as_millis()));
    Ok(())
}
