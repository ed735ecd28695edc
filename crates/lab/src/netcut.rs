//! Network partitions on one machine: cut and heal the links between the nodes of a local
//! cluster with iptables, while every process keeps running. Shared by the lab
//! ([`crate::cluster::LabCluster`]) and the test harness (`tests/src/lib.rs`);
//! `scripts/cluster.sh partition` writes the same rules from bash.
//!
//! It works because every node of a local cluster listens on its own loopback address
//! (broker N on 127.0.1.N, controller N on 127.0.2.N: [`crate::process::node_ip`]) and opens
//! its own connections from that address (`insync_proto::set_local_address`), so a packet's
//! addresses say which node sent it. Clients (CLIs, producers, the lab's workload) connect
//! from 127.0.0.1 and are never cut: a node cut off from the cluster stays reachable by a
//! producer, which is how a zombie leader is met.
//!
//! A cut `from → to` drops every packet of the TCP connections `from` opens to `to`'s gRPC
//! port, both ways: each call `from` makes to `to` times out, while calls `to` makes to
//! `from` still work (a one-way partition at the level of calls; at packet level one
//! direction alone breaks TCP both ways). Cutting both directions separates two nodes
//! entirely. Rules name both addresses and the destination port, so clusters side by side
//! (tests running at once, a `cluster.sh` cluster) never cut each other's links.
//!
//! Each [`NetCuts`] owns an iptables chain of its own, `INSYNC-P<pid>-<n>`, jumped to from
//! INPUT (loopback packets pass it), so healing flushes exactly its rules and nobody
//! else's. Dropping it removes the rules and the chain, also when a test panics; a chain
//! left by a process that died without unwinding (SIGKILL) is removed by the next
//! [`NetCuts::new`] on the machine. Needs root (CAP_NET_ADMIN) and `iptables`.
use std::net::SocketAddrV4;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One node as the packet filter sees it: its name (for messages and rule comments) and
/// its gRPC address, which is also the source address of the connections it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub address: SocketAddrV4,
}

/// Why links could not be cut or healed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetCutError(String);

/// The prefix of every chain a [`NetCuts`] creates (`scripts/cluster.sh` uses `INSYNC`).
const CHAIN_PREFIX: &str = "INSYNC-P";

static NEXT_CHAIN: AtomicU32 = AtomicU32::new(0);

/// The links cut so far, as iptables rules in a chain of our own.
#[derive(Debug)]
pub struct NetCuts {
    chain: String,
    /// (from, to) of each cut, in the order made.
    cuts: Vec<(Peer, Peer)>,
}

impl NetCuts {
    /// Checks that iptables is there and usable, removes chains left by dead processes, and
    /// creates this one's (empty) chain.
    pub fn new() -> Result<NetCuts, NetCutError> {
        iptables(&["-S", "INPUT"]).map_err(|e| {
            NetCutError(format!(
                "network partitions need iptables, run as root (CAP_NET_ADMIN): {e}; \
                 install it with `apt-get install -y iptables` (scripts/cluster.sh and scripts/test.sh do)"
            ))
        })?;
        remove_stale_chains();
        let chain = format!("{CHAIN_PREFIX}{}-{}", std::process::id(), NEXT_CHAIN.fetch_add(1, Ordering::Relaxed));
        // A chain of that name can only be left by an earlier process with our pid: reuse it.
        let _ = iptables(&["-N", &chain]);
        iptables(&["-F", &chain]).map_err(|e| NetCutError(format!("cannot create iptables chain {chain}: {e}")))?;
        if iptables(&["-C", "INPUT", "-j", &chain]).is_err() {
            iptables(&["-I", "INPUT", "1", "-j", &chain])
                .map_err(|e| NetCutError(format!("cannot hook iptables chain {chain} into INPUT: {e}")))?;
        }
        Ok(NetCuts { chain, cuts: Vec::new() })
    }

    /// The iptables chain holding the rules.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Cuts `from → to`: every call `from` makes to `to` times out (calls the other way
    /// still work). Cutting a cut link again does nothing.
    pub fn cut(&mut self, from: &Peer, to: &Peer) -> Result<(), NetCutError> {
        if self.cuts.iter().any(|(f, t)| f == from && t == to) {
            return Ok(());
        }
        for rule in rules(from, to) {
            let mut args = vec!["-A", self.chain.as_str()];
            args.extend(rule.iter().map(String::as_str));
            iptables(&args).map_err(|e| NetCutError(format!("cannot cut {} -> {}: {e}", from.name, to.name)))?;
        }
        self.cuts.push((from.clone(), to.clone()));
        Ok(())
    }

    /// Resets every TCP connection `from` has open to `to` and refuses `from`'s new ones with
    /// an RST until `heal`: a connection reset followed by an outage, both processes running.
    /// `ss -K` aborts `from`'s end, so the kernel sends `to` an RST, as a crashed peer's
    /// kernel or a middlebox would; only SYNs are refused, so that RST gets through. Needs
    /// `ss` (iproute2) with socket destroy support, and root.
    pub fn reset(&mut self, from: &Peer, to: &Peer) -> Result<(), NetCutError> {
        let (from_ip, to_ip, to_port) = (from.address.ip().to_string(), to.address.ip().to_string(), to.address.port());
        let comment = format!("{} -> {} reset", from.name, to.name);
        let port = to_port.to_string();
        let rule: [&str; 19] = [
            "-A",
            self.chain.as_str(),
            "-s",
            from_ip.as_str(),
            "-d",
            to_ip.as_str(),
            "-p",
            "tcp",
            "--dport",
            port.as_str(),
            "--syn",
            "-m",
            "comment",
            "--comment",
            comment.as_str(),
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ];
        iptables(&rule).map_err(|e| NetCutError(format!("cannot refuse {} -> {}: {e}", from.name, to.name)))?;
        let output = Command::new("ss")
            .args(["-t", "-K", "src", &from_ip, "dst", &format!("{to_ip}:{to_port}")])
            .output()
            .map_err(|e| NetCutError(format!("cannot run ss (apt-get install -y iproute2): {e}")))?;
        if !output.status.success() {
            return Err(NetCutError(format!(
                "ss -K {} -> {} failed ({}): {}",
                from.name,
                to.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        // A kernel without socket destroy support (CONFIG_INET_DIAG_DESTROY) lets `ss -K`
        // succeed while closing nothing: look again, so that fails here and says why.
        let left = Command::new("ss")
            .args(["-t", "-n", "-H", "state", "established", "src", &from_ip, "dst", &format!("{to_ip}:{to_port}")])
            .output()
            .map_err(|e| NetCutError(format!("cannot run ss: {e}")))?;
        let left = String::from_utf8_lossy(&left.stdout);
        if !left.trim().is_empty() {
            return Err(NetCutError(format!(
                "ss -K left {} -> {} connections open (kernel without CONFIG_INET_DIAG_DESTROY?): {}",
                from.name,
                to.name,
                left.trim()
            )));
        }
        Ok(())
    }

    /// Cuts `a → b` and `b → a`: the two nodes no longer reach each other at all.
    pub fn cut_both(&mut self, a: &Peer, b: &Peer) -> Result<(), NetCutError> {
        self.cut(a, b)?;
        self.cut(b, a)
    }

    /// Cuts `node` off from each of `others` both ways (clients still reach it).
    pub fn isolate(&mut self, node: &Peer, others: &[Peer]) -> Result<(), NetCutError> {
        for other in others.iter().filter(|o| *o != node) {
            self.cut_both(node, other)?;
        }
        Ok(())
    }

    /// Restores every link cut so far.
    pub fn heal(&mut self) -> Result<(), NetCutError> {
        iptables(&["-F", &self.chain]).map_err(|e| NetCutError(format!("cannot heal ({}): {e}", self.chain)))?;
        self.cuts.clear();
        Ok(())
    }

    /// The links cut now, as (from, to) node names.
    pub fn cuts(&self) -> Vec<(String, String)> {
        self.cuts.iter().map(|(f, t)| (f.name.clone(), t.name.clone())).collect()
    }

    /// The rules in this chain as iptables lists them (`iptables -S <chain>`).
    pub fn listing(&self) -> Result<String, NetCutError> {
        iptables(&["-S", &self.chain]).map_err(NetCutError)
    }
}

impl Drop for NetCuts {
    /// Every rule goes, whatever happened: the chain is unhooked, flushed and deleted.
    fn drop(&mut self) {
        remove_chain(&self.chain);
    }
}

/// The rule specifications (after `-A <chain>`) that cut `from → to`: packets from `from`'s
/// address to `to`'s port, and `to`'s answers from that port back to `from`'s address.
fn rules(from: &Peer, to: &Peer) -> [Vec<String>; 2] {
    let (from_ip, to_ip, to_port) = (from.address.ip().to_string(), to.address.ip().to_string(), to.address.port());
    let comment = format!("{} -> {}", from.name, to.name);
    let rule = |src: &str, dst: &str, port_flag: &str| -> Vec<String> {
        [
            "-s",
            src,
            "-d",
            dst,
            "-p",
            "tcp",
            port_flag,
            &to_port.to_string(),
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    [rule(&from_ip, &to_ip, "--dport"), rule(&to_ip, &from_ip, "--sport")]
}

/// Runs `iptables -w 10 <args>` (waiting for the xtables lock another process may hold);
/// its stdout, or what went wrong.
fn iptables(args: &[&str]) -> Result<String, String> {
    let output = Command::new("iptables")
        .args(["-w", "10"])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("# Warning")).collect();
        Err(format!("iptables {} failed ({}): {}", args.join(" "), output.status, why.join(" ").trim()))
    }
}

/// Unhooks (every jump, should there be several), flushes and deletes `chain`; errors are
/// ignored (it may be gone already).
fn remove_chain(chain: &str) {
    while iptables(&["-D", "INPUT", "-j", chain]).is_ok() {}
    let _ = iptables(&["-F", chain]);
    let _ = iptables(&["-X", chain]);
}

/// Removes the chains of processes that died without dropping their [`NetCuts`].
fn remove_stale_chains() {
    let Ok(listing) = iptables(&["-S"]) else { return };
    for chain in listing.lines().filter_map(|l| l.strip_prefix("-N ")) {
        if let Some(pid) = chain_owner(chain) {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                remove_chain(chain);
            }
        }
    }
}

/// The pid in a chain name `INSYNC-P<pid>-<n>`.
fn chain_owner(chain: &str) -> Option<u32> {
    let (pid, n) = chain.strip_prefix(CHAIN_PREFIX)?.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, address: &str) -> Peer {
        Peer { name: name.into(), address: address.parse().unwrap() }
    }

    #[test]
    fn a_cut_drops_calls_to_the_port_and_their_answers() {
        let [out, back] = rules(&peer("broker-1", "127.0.1.1:4000"), &peer("controller-1", "127.0.2.1:5000"));
        assert_eq!(
            out.join(" "),
            "-s 127.0.1.1 -d 127.0.2.1 -p tcp --dport 5000 -m comment --comment broker-1 -> controller-1 -j DROP"
        );
        assert_eq!(
            back.join(" "),
            "-s 127.0.2.1 -d 127.0.1.1 -p tcp --sport 5000 -m comment --comment broker-1 -> controller-1 -j DROP"
        );
    }

    #[test]
    fn only_our_chain_names_have_an_owner() {
        assert_eq!(chain_owner("INSYNC-P1234-0"), Some(1234));
        assert_eq!(chain_owner("INSYNC-P1234-x"), None);
        assert_eq!(chain_owner("INSYNC"), None);
        assert_eq!(chain_owner("INSYNC-31000"), None);
        assert_eq!(chain_owner("DOCKER-USER"), None);
    }
}
