//! `scripts/cluster.sh` as a user drives it: `up` starts a controller and three brokers and
//! waits for them, `up` twice starts no duplicates, kill/start/pause/resume work, `down`
//! stops everything and succeeds with nothing running. Runs on its own port range
//! (INSYNC_PORT_OFFSET) and state directory, with the debug binaries.
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
    let up = script(state.path(), &["up"]);
    let result = (|| -> anyhow::Result<()> {
        anyhow::ensure!(up.status.success(), "up failed: {}{}", text(&up.stdout), text(&up.stderr));
        assert!(text(&up.stdout).contains("bootstrap: 127.0.0.1:40092,127.0.0.1:40093,127.0.0.1:40094"));
        assert_eq!(running_nodes(state.path()), 4, "controller + 3 brokers");

        let again = script(state.path(), &["up"]);
        assert!(again.status.success(), "{}", text(&again.stderr));
        assert!(text(&again.stdout).contains("already running"));
        assert_eq!(running_nodes(state.path()), 4, "no duplicates");

        assert!(script(state.path(), &["kill", "2"]).status.success());
        wait_for("broker 2 gone", Duration::from_secs(10), || (running_nodes(state.path()) == 3).then_some(()))?;
        let status = script(state.path(), &["status"]);
        assert!(text(&status.stdout).contains("broker-2: stopped"), "{}", text(&status.stdout));
        assert!(script(state.path(), &["start", "2"]).status.success());
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
            stderr.contains("made for controller quorum 1@127.0.0.1:21191, not 1@127.0.0.1:21191,2@")
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
