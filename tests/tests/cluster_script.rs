//! `scripts/cluster.sh` as a user drives it: `up` starts a controller and three brokers and
//! waits for them, `up` twice starts no duplicates, kill/start/pause/resume work, `down`
//! stops everything and succeeds with nothing running, `partition` / `isolate` / `heal` cut
//! and restore links (root and iptables needed by that test only). Runs on its own port
//! range (INSYNC_PORT_OFFSET) and state directory, with the debug binaries.
use std::process::Command;
use std::time::Duration;

use insync_tests::{bin_dir, run_bounded, text, wait_for};

fn script(state: &std::path::Path, args: &[&str]) -> std::process::Output {
    script_at(state, "31000", args)
}

/// `script` on another port range: each test has its own, so two tests running at once
/// (scripts/test.sh runs two threads) never fight over a port.
fn script_at(state: &std::path::Path, port_offset: &str, args: &[&str]) -> std::process::Output {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    run_bounded(
        Command::new("bash")
            .arg(root.join("scripts/cluster.sh"))
            .args(args)
            .env("INSYNC_CLUSTER_DIR", state)
            .env("INSYNC_PORT_OFFSET", port_offset)
            .env("INSYNC_BIN_DIR", bin_dir()),
        None,
    )
}

/// insync-broker processes whose data dir is under this test's state directory.
fn running_nodes(state: &std::path::Path) -> usize {
    let out = Command::new("pgrep").args(["-f", &format!("insync-broker .*--data-dir {}/", state.display())]).output();
    out.map(|o| text(&o.stdout).lines().count()).unwrap_or(0)
}

/// Pids of the insync-broker processes under this test's state directory.
fn node_pids(state: &std::path::Path) -> Vec<u32> {
    let out = Command::new("pgrep").args(["-f", &format!("insync-broker .*--data-dir {}/", state.display())]).output();
    out.map(|o| text(&o.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()).unwrap_or_default()
}

/// The command line of `pid`.
fn node_args(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Runs `down` however the test ends, so no process outlives it.
struct Down<'a>(&'a std::path::Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = script(self.0, &["down"]);
    }
}

#[test]
fn cluster_script_up_is_idempotent_and_down_always_succeeds() -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let down = script(state.path(), &["down"]);
    assert!(down.status.success(), "down with nothing running succeeds: {}", text(&down.stderr));

    let _down = Down(state.path());
    for bad in ["x", "5000"] {
        let refused = script(state.path(), &["up", "--worker-threads", bad]);
        assert!(!refused.status.success(), "--worker-threads {bad} is refused");
        assert!(text(&refused.stderr).contains("--worker-threads must be 0-1024"), "{}", text(&refused.stderr));
        assert_eq!(running_nodes(state.path()), 0, "a refusal starts nothing");
    }
    let up = script(state.path(), &["up"]);
    let result = (|| -> anyhow::Result<()> {
        anyhow::ensure!(up.status.success(), "up failed: {}{}", text(&up.stdout), text(&up.stderr));
        assert!(text(&up.stdout).contains("bootstrap: 127.0.1.1:40092,127.0.1.2:40093,127.0.1.3:40094"));
        assert_eq!(running_nodes(state.path()), 4, "controller + 3 brokers");
        // Three nodes share the machine's cores: each runs cores / 3 (at least 1) workers,
        // cores as the script counts them (nproc).
        let nproc = Command::new("nproc").output()?;
        let cores: usize = text(&nproc.stdout).trim().parse()?;
        let expected = (cores / 3).max(1);
        let pids = node_pids(state.path());
        assert_eq!(pids.len(), 4);
        for pid in pids {
            let args = node_args(pid);
            let workers = args.iter().position(|a| a == "--worker-threads").and_then(|i| args.get(i + 1));
            assert_eq!(workers, Some(&expected.to_string()), "pid {pid} on {cores} cores: {args:?}");
        }

        let again = script(state.path(), &["up"]);
        assert!(again.status.success(), "{}", text(&again.stderr));
        assert!(text(&again.stdout).contains("already running"));
        assert_eq!(running_nodes(state.path()), 4, "no duplicates");

        assert!(script(state.path(), &["kill", "2"]).status.success());
        wait_for("broker 2 gone", Duration::from_secs(10), || (running_nodes(state.path()) == 3).then_some(()))?;
        let status = script(state.path(), &["status"]);
        assert!(text(&status.stdout).contains("broker-2: stopped"), "{}", text(&status.stdout));
        assert!(script(state.path(), &["start", "2"]).status.success());
        // A restarted node gets the recorded thread count again.
        let restarted = node_pids(state.path()).into_iter().map(node_args);
        assert!(restarted.filter(|a| a.windows(2).any(|w| w[0] == "--worker-threads")).count() == 4);
        assert!(script(state.path(), &["pause", "3"]).status.success());
        let status = script(state.path(), &["status"]);
        assert!(text(&status.stdout).contains("broker-3: paused"), "{}", text(&status.stdout));
        assert!(script(state.path(), &["resume", "3"]).status.success());
        let logs = script(state.path(), &["logs", "1"]);
        assert!(text(&logs.stdout).contains("listening on"));
        assert!(!script(state.path(), &["kill", "7"]).status.success(), "no broker 7");
        Ok(())
    })();
    let down = script(state.path(), &["down"]);
    assert!(down.status.success());
    wait_for("everything stopped", Duration::from_secs(30), || (running_nodes(state.path()) == 0).then_some(()))?;
    result
}

/// Data made by a 1-controller cluster cannot serve a 3-controller one (the Raft store keeps its
/// voter set, and the brokers then wait forever for metadata): `up --controllers 3` on it must
/// refuse at once, in one line that names the fix, start nothing, and the fix must work.
#[test]
fn cluster_script_up_refuses_data_of_another_quorum_at_once() -> anyhow::Result<()> {
    // Below the ephemeral port range (ports up to 31094), apart from the other test's range.
    const OFFSET: &str = "12000";
    let state = tempfile::tempdir()?;
    let _down = Down(state.path());
    let result = (|| -> anyhow::Result<()> {
        let up = script_at(state.path(), OFFSET, &["up"]);
        anyhow::ensure!(up.status.success(), "up failed: {}{}", text(&up.stdout), text(&up.stderr));
        let down = script_at(state.path(), OFFSET, &["down"]);
        anyhow::ensure!(down.status.success(), "down failed: {}", text(&down.stderr));

        let started = std::time::Instant::now();
        let refused = script_at(state.path(), OFFSET, &["up", "--controllers", "3"]);
        let took = started.elapsed();
        let stderr = text(&refused.stderr);
        assert!(!refused.status.success(), "up on another quorum's data succeeded: {}", text(&refused.stdout));
        assert!(took < Duration::from_secs(10), "the refusal took {took:?}, not at once");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("made for controller quorum 1@127.0.2.1:21191, not 1@127.0.2.1:21191,2@")
                && stderr.contains("down --clean"),
            "names both quorums and the fix: {stderr}"
        );
        assert_eq!(running_nodes(state.path()), 0, "a refused up starts nothing");

        let clean = script_at(state.path(), OFFSET, &["down", "--clean"]);
        anyhow::ensure!(clean.status.success(), "down --clean failed: {}", text(&clean.stderr));
        let up3 = script_at(state.path(), OFFSET, &["up", "--controllers", "3"]);
        anyhow::ensure!(
            up3.status.success(),
            "up after down --clean failed: {}{}",
            text(&up3.stdout),
            text(&up3.stderr)
        );
        assert_eq!(running_nodes(state.path()), 6, "3 controllers + 3 brokers");
        Ok(())
    })();
    let down = script_at(state.path(), OFFSET, &["down"]);
    assert!(down.status.success());
    wait_for("everything stopped", Duration::from_secs(30), || (running_nodes(state.path()) == 0).then_some(()))?;
    result
}

/// The iptables rules of chain `chain` (empty when it does not exist).
fn chain_rules(chain: &str) -> String {
    let out = Command::new("iptables").args(["-w", "10", "-S", chain]).output();
    out.map(|o| text(&o.stdout)).unwrap_or_default()
}

/// `partition`, `isolate` and `heal` as a user types them: the cuts show in `status` and in
/// the cluster's own view (an isolated broker is fenced), `heal` restores every link and
/// removes the chain, and `down` heals too. Needs root and iptables (the script installs
/// it where apt-get can): without them this test fails, saying so.
#[test]
fn cluster_script_partitions_isolates_and_heals() -> anyhow::Result<()> {
    // Below the ephemeral port range (ports up to 32094), apart from the other tests' ranges.
    const OFFSET: &str = "13000";
    const CHAIN: &str = "INSYNC-13000";
    let state = tempfile::tempdir()?;
    let _down = DownAt(state.path(), OFFSET);
    let run = |args: &[&str]| script_at(state.path(), OFFSET, args);
    let result = (|| -> anyhow::Result<()> {
        let up = run(&["up"]);
        anyhow::ensure!(up.status.success(), "up failed: {}{}", text(&up.stdout), text(&up.stderr));
        let cut = run(&["partition", "1", "2"]);
        anyhow::ensure!(cut.status.success(), "partition failed: {}{}", text(&cut.stdout), text(&cut.stderr));
        assert!(text(&cut.stdout).contains("cut broker-1 <-> broker-2"), "{}", text(&cut.stdout));
        let one_way = run(&["partition", "3", "controller-1", "--one-way"]);
        assert!(one_way.status.success(), "{}", text(&one_way.stderr));
        let status = text(&run(&["status"]).stdout);
        assert!(status.contains("link cut: broker-1 <-> broker-2"), "{status}");
        assert!(status.contains("link cut: broker-3 -> controller-1"), "{status}");
        assert!(!status.contains("controller-1 -> broker-3"), "one way only: {status}");
        let rules = chain_rules(CHAIN);
        assert!(rules.contains("-s 127.0.1.1/32 -d 127.0.1.2/32 -p tcp -m tcp --dport 22093"), "{rules}");
        assert!(!run(&["partition", "1", "controller-2"]).status.success(), "no controller-2");

        assert!(run(&["heal"]).status.success());
        assert!(chain_rules(CHAIN).is_empty(), "heal removes the chain");
        assert!(!text(&run(&["status"]).stdout).contains("link cut"));

        let isolate = run(&["isolate", "2"]);
        anyhow::ensure!(isolate.status.success(), "isolate failed: {}", text(&isolate.stderr));
        let status = text(&run(&["status"]).stdout);
        for cut in ["broker-2 <-> controller-1", "broker-2 <-> broker-1", "broker-2 <-> broker-3"] {
            assert!(status.contains(cut), "{cut} missing: {status}");
        }
        // The controller no longer hears from broker 2: it fences it (session timeout 3 s).
        wait_for("broker 2 fenced", Duration::from_secs(20), || {
            let out = run(&["status"]);
            text(&out.stdout).lines().any(|l| l.contains("127.0.1.2:22093") && l.contains("fenced")).then_some(())
        })?;
        let down = run(&["down"]);
        assert!(down.status.success(), "{}", text(&down.stderr));
        assert!(text(&down.stdout).contains("healed"), "down heals: {}", text(&down.stdout));
        assert!(chain_rules(CHAIN).is_empty(), "down removes the chain");
        Ok(())
    })();
    let down = run(&["down"]);
    assert!(down.status.success());
    wait_for("everything stopped", Duration::from_secs(30), || (running_nodes(state.path()) == 0).then_some(()))?;
    result
}

/// `down` (which heals) on the given port range however the test ends.
struct DownAt<'a>(&'a std::path::Path, &'a str);

impl Drop for DownAt<'_> {
    fn drop(&mut self) {
        let _ = script_at(self.0, self.1, &["down"]);
    }
}
