//! `insync-broker` command line: Kafka-named settings with insync's laptop-sized defaults
//! (see docs/design.md "Defaults").
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Kafka's `process.roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

impl std::str::FromStr for Roles {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut roles = Roles { broker: false, controller: false };
        for part in s.split(',').map(str::trim) {
            match part {
                "broker" => roles.broker = true,
                "controller" => roles.controller = true,
                other => {
                    return Err(format!("unknown role '{other}': expected broker, controller or broker,controller"))
                }
            }
        }
        Ok(roles)
    }
}

#[derive(Debug, Clone, Parser)]
#[command(name = "insync-broker", version, about = "insync broker and/or controller node (Kafka process.roles)")]
pub struct BrokerArgs {
    /// broker, controller, or broker,controller (Kafka process.roles).
    #[arg(long, default_value = "broker")]
    pub roles: Roles,
    /// Kafka node.id. Broker ids and controller ids are separate namespaces here, so
    /// `--node-id 1` may be both broker 1 and controller 1.
    #[arg(long)]
    pub node_id: i32,
    /// Address to bind (gRPC).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address clients and peers dial; defaults to --listen.
    #[arg(long)]
    pub advertise: Option<String>,
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Controller voters, Kafka controller.quorum.voters: `1@127.0.0.1:9191,2@...`.
    #[arg(long, default_value = "1@127.0.0.1:9191")]
    pub controller_quorum: String,
    /// Kafka replica.lag.time.max.ms (Kafka default 30000).
    #[arg(long, default_value_t = 10_000)]
    pub replica_lag_time_max_ms: u64,
    /// Kafka replica.fetch.wait.max.ms: how long a follower fetch long-polls.
    #[arg(long, default_value_t = 500)]
    pub replica_fetch_wait_max_ms: u64,
    /// Kafka min.insync.replicas, cluster default (topics may override).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub min_insync_replicas: i32,
    /// Kafka message.max.bytes: the largest record batch accepted. At most half the gRPC
    /// message limit, so one batch plus the framing of a fetch answer always fits a gRPC
    /// message and replication cannot stall on a batch it cannot carry.
    #[arg(long, default_value_t = 1_048_576, value_parser = parse_message_max_bytes)]
    pub message_max_bytes: usize,
    /// Kafka fetch.max.bytes (default 55 MiB, at least 1024): the most record bytes one fetch
    /// answer carries, whatever the request's max_bytes; a request's 0 means this. Only the
    /// first partition with data may exceed it, by one batch (KIP-74).
    #[arg(long, default_value_t = 57_671_680, value_parser = clap::value_parser!(u32).range(1024..))]
    pub fetch_max_bytes: u32,
    /// Kafka broker.session.timeout.ms (Kafka default 9000): controller fences a broker
    /// silent for longer.
    #[arg(long, default_value_t = 3_000)]
    pub broker_session_timeout_ms: u64,
    /// Controllers (not in Kafka): a broker whose session stream to the active controller
    /// closed (a killed process's kernel closes it at once) and stayed closed this long, with
    /// no heartbeat since, is fenced without waiting out the session timeout; after such an
    /// early fencing only the session timeout fences that broker for 60 s (flap guard).
    /// 0: only the session timeout fences.
    #[arg(long, default_value_t = 250)]
    pub broker_session_close_grace_ms: u64,
    /// Kafka broker.heartbeat.interval.ms (Kafka default 2000).
    #[arg(long, default_value_t = 500)]
    pub broker_heartbeat_interval_ms: u64,
    /// Kafka log.segment.bytes.
    #[arg(long, default_value_t = 128 * 1024 * 1024)]
    pub log_segment_bytes: u64,
    /// Kafka log.retention.ms (Kafka's default log.retention.hours = 168): segments older
    /// than this are deleted; -1 keeps them forever. Topics override it with retention.ms.
    #[arg(long, default_value_t = 604_800_000, value_parser = clap::value_parser!(i64).range(-1..))]
    pub log_retention_ms: i64,
    /// Kafka log.retention.bytes: per partition, the oldest segments are deleted while the
    /// log is bigger; -1: no limit. Topics override it with retention.bytes.
    #[arg(long, default_value_t = -1, value_parser = clap::value_parser!(i64).range(-1..))]
    pub log_retention_bytes: i64,
    /// Kafka log.roll.ms (default log.roll.hours = 168): the active segment rolls once its
    /// first record is older. Topics override it with segment.ms.
    #[arg(long, default_value_t = 604_800_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub log_roll_ms: i64,
    /// Kafka log.retention.check.interval.ms (Kafka default 300000): how often retention
    /// runs over every hosted log.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub log_retention_check_interval_ms: u64,
    /// Kafka log.flush.interval.messages: fsync after this many messages (default: never,
    /// durability comes from replication, as in Kafka).
    #[arg(long)]
    pub flush_every_messages: Option<u64>,
    /// Kafka replica.high.watermark.checkpoint.interval.ms.
    #[arg(long, default_value_t = 5_000)]
    pub high_watermark_checkpoint_interval_ms: u64,
    /// Threads that run the node's async work (Kafka sizes its thread pools with
    /// num.network.threads and num.io.threads); 0: tokio's default (TOKIO_WORKER_THREADS, else
    /// one per core). Several nodes sharing
    /// a machine each do better with their share of its cores: every extra thread costs
    /// cross-thread wake-ups on each request (`scripts/cluster.sh` gives each of its nodes
    /// cores / 3, at least 1; see docs/benchmarks.md). Blocking disk work runs on its own
    /// threads either way.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub worker_threads: u16,
    /// How long a SIGTERM'd broker waits for the controller to move its leaderships away.
    #[arg(long, default_value_t = 10_000)]
    pub controlled_shutdown_timeout_ms: u64,
    /// How long one AlterPartition call waits for the controller's answer before it is sent
    /// again (Kafka: the broker-to-controller channel's request timeout). The proposal stays
    /// pending meanwhile: an unanswered request may have been committed (KIP-497).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub controller_request_timeout_ms: u64,
    /// Kafka auto.leader.rebalance.enable (controllers): move leadership back to each
    /// partition's preferred replica once it is in sync again.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_leader_rebalance_enable: bool,
    /// Kafka leader.imbalance.check.interval.seconds (Kafka default 300; 30 here, so that on
    /// a laptop leadership visibly comes back after a failover).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub leader_imbalance_check_interval_seconds: u64,
    /// Kafka leader.imbalance.per.broker.percentage: a broker's share of its preferred
    /// partitions led elsewhere above which the check moves them back.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub leader_imbalance_per_broker_percentage: u32,
    /// UNSAFE, for `insync lab`'s negative control only: behave like a pre-KIP-101 follower
    /// (truncate to the local high watermark whenever following a leader, and fetch without
    /// leader-epoch validation). Loses acknowledged acks=all writes; hidden from --help, and
    /// only in a broker built with the `unsafe-truncation` feature.
    #[cfg(feature = "unsafe-truncation")]
    #[arg(long, hide = true)]
    pub unsafe_truncate_to_high_watermark: bool,
    /// Prometheus metrics HTTP address (`GET /metrics`), or `none`. Default 127.0.0.1:(9290+N)
    /// for a node with the broker role and 127.0.0.1:(9390+N) for a controller-only node, so
    /// a local cluster's nodes never share a port; a taken default port is only a warning.
    #[arg(long, value_name = "ADDR|none")]
    pub metrics_listen: Option<OptionalListen>,
    /// Kafka wire-protocol listener for unmodified Kafka clients (Kafka `listeners`), or
    /// `none`. Default 127.0.0.1:(19091+N) for a node with the broker role (19092, 19093,
    /// 19094); a taken default port is only a warning, an address given here must work.
    #[arg(long, value_name = "ADDR|none")]
    pub kafka_listen: Option<OptionalListen>,
    /// Kafka max.connections: Kafka-listener connections served at once; further clients
    /// wait in the accept backlog until one closes. Kafka's default is 2147483647; insync
    /// bounds it so that connections x their buffers stay within a laptop's memory.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Kafka max.connections.per.ip: Kafka-listener connections from one address; more are
    /// closed at once (Kafka's default is 2147483647).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: u32,
    /// Kafka connections.max.idle.ms: a Kafka connection that sends no request for this
    /// long is closed.
    #[arg(long, default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections_max_idle_ms: u64,
    /// How long a Kafka request may take to arrive once its first byte has; a connection
    /// whose request stops arriving is closed (insync's own: Kafka relies on
    /// connections.max.idle.ms, which a client trickling one byte at a time never trips).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_receive_timeout_ms: u64,
    /// Kafka queued.max.request.bytes: bytes of Kafka requests received and not yet
    /// answered, across all connections; a connection whose next request does not fit stops
    /// being read until it does. Raised to the largest request if set below it (Kafka
    /// requires it to be at least socket.request.max.bytes). Kafka's default -1 is
    /// unbounded; insync's is 100 MiB.
    #[arg(long, default_value_t = 104_857_600, value_parser = clap::value_parser!(u64).range(65_536..=1 << 40))]
    pub queued_max_request_bytes: u64,
    /// gRPC connections served at once (the gRPC counterpart of max.connections).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_connections: u32,
    /// gRPC connections from one address; more are closed at once, so that one host cannot
    /// take the slots the other brokers' fetchers and heartbeats need.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_connections_per_ip: u32,
    /// HTTP/2 streams one gRPC connection may have open at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_concurrent_streams: u32,
    /// Kafka group.initial.rebalance.delay.ms (default 3000): how long the first rebalance of
    /// an empty consumer group waits for more members before it completes (KIP-134).
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(0..=300_000))]
    pub group_initial_rebalance_delay_ms: u64,
    /// host:port Kafka clients are told to dial in Metadata and FindCoordinator answers
    /// (Kafka `advertised.listeners`); defaults to the Kafka listen address.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_advertise: Option<String>,
    /// Kafka offsets.topic.num.partitions: partitions of `__consumer_offsets`, created on the
    /// first group request. Kafka's default is 50; 12 spreads group coordinators over a
    /// laptop cluster while keeping its replicas few (12 x 3 logs). Read at creation only.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub offsets_topic_num_partitions: i32,
    /// Kafka offsets.topic.replication.factor (default 3): until that many brokers are alive
    /// the topic is not created and group requests get COORDINATOR_NOT_AVAILABLE.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=32))]
    pub offsets_topic_replication_factor: i32,
    /// Kafka offsets.retention.minutes (default 10080, 7 days; KIP-211): an Empty consumer
    /// group's committed offsets are deleted (tombstoned) this long after it became Empty, a
    /// standalone consumer's this long after each commit.
    #[arg(long, default_value_t = 10_080, value_parser = clap::value_parser!(u64).range(1..=52_560_000))]
    pub offsets_retention_minutes: u64,
    /// Kafka offsets.retention.check.interval.ms (default 600000): how often expired offsets
    /// are looked for.
    #[arg(long, default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub offsets_retention_check_interval_ms: u64,
}

/// The largest `--message-max-bytes`: half the gRPC message limit (see the flag).
pub const MESSAGE_MAX_BYTES_CEILING: usize = insync_proto::MAX_GRPC_MESSAGE_BYTES / 2;

fn parse_message_max_bytes(s: &str) -> Result<usize, String> {
    let value: usize = s.parse().map_err(|e| format!("'{s}': {e}"))?;
    if value == 0 || value > MESSAGE_MAX_BYTES_CEILING {
        return Err(format!("{value} is outside 1..={MESSAGE_MAX_BYTES_CEILING} (half the gRPC message limit)"));
    }
    Ok(value)
}

/// `--kafka-listen` / `--metrics-listen`: an address, or `none` to serve no such listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionalListen {
    Disabled,
    At(SocketAddr),
}

impl std::str::FromStr for OptionalListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(OptionalListen::Disabled);
        }
        s.parse()
            .map(OptionalListen::At)
            .map_err(|e| format!("'{s}': expected host:port (e.g. 0.0.0.0:19092) or none: {e}"))
    }
}

impl BrokerArgs {
    /// Whether this broker runs the lab's pre-KIP-101 negative control (never, unless built
    /// with the `unsafe-truncation` feature and started with its flag).
    pub fn unsafe_truncation(&self) -> bool {
        #[cfg(feature = "unsafe-truncation")]
        return self.unsafe_truncate_to_high_watermark;
        #[cfg(not(feature = "unsafe-truncation"))]
        false
    }

    pub fn advertised_address(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// The source address of this node's own connections (to controllers and leaders): the
    /// --listen IP when it is a specific one, so that a packet filter can tell the nodes of a
    /// one-machine cluster apart by address (`scripts/cluster.sh partition`); none for a
    /// wildcard listener (0.0.0.0 or ::), where the kernel picks as usual.
    pub fn outgoing_address(&self) -> Option<std::net::IpAddr> {
        let ip = self.listen.ip();
        (!ip.is_unspecified()).then_some(ip)
    }

    /// Where to serve the Kafka protocol, and whether the operator chose it (`--kafka-listen`)
    /// or it is derived from the node id (then a taken port is not fatal, as for metrics).
    /// Controller-only nodes serve none: Kafka clients talk to brokers.
    pub fn kafka_listen_address(&self) -> Option<(SocketAddr, bool)> {
        match self.kafka_listen {
            Some(OptionalListen::Disabled) => None,
            Some(OptionalListen::At(address)) => Some((address, true)),
            None if !self.roles.broker => None,
            None => {
                let port = u16::try_from(19091 + i64::from(self.node_id)).ok()?;
                Some((SocketAddr::from(([127, 0, 0, 1], port)), false))
            }
        }
    }

    /// What Kafka clients are told to dial, for a listener bound at `bound`.
    pub fn kafka_advertised_address(&self, bound: SocketAddr) -> String {
        self.kafka_advertise.clone().unwrap_or_else(|| bound.to_string())
    }

    /// Where to serve metrics, and whether the operator chose it (`--metrics-listen`) or it
    /// is derived from the node id (then a port already taken is not fatal: several test
    /// clusters on one machine share node ids).
    pub fn metrics_address(&self) -> Option<(SocketAddr, bool)> {
        match self.metrics_listen {
            Some(OptionalListen::Disabled) => None,
            Some(OptionalListen::At(address)) => Some((address, true)),
            None => {
                let base = if self.roles.broker { 9290 } else { 9390 };
                let port = u16::try_from(base + i64::from(self.node_id)).ok()?;
                Some((SocketAddr::from(([127, 0, 0, 1], port)), false))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_like_kafka_process_roles() {
        assert_eq!("broker".parse::<Roles>(), Ok(Roles { broker: true, controller: false }));
        assert_eq!("broker,controller".parse::<Roles>(), Ok(Roles { broker: true, controller: true }));
        assert!("brokr".parse::<Roles>().is_err());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let a = BrokerArgs::parse_from([
            "insync-broker",
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:9092",
            "--data-dir",
            "/tmp/x",
        ]);
        assert_eq!(a.replica_lag_time_max_ms, 10_000);
        assert_eq!(a.replica_fetch_wait_max_ms, 500);
        assert_eq!(a.min_insync_replicas, 1);
        assert_eq!(a.message_max_bytes, 1_048_576);
        assert_eq!(a.broker_session_timeout_ms, 3_000);
        assert_eq!(a.fetch_max_bytes, 55 * 1024 * 1024, "Kafka's fetch.max.bytes default");
        assert_eq!(a.controller_request_timeout_ms, 5_000);
        assert!(a.auto_leader_rebalance_enable);
        assert_eq!((a.leader_imbalance_check_interval_seconds, a.leader_imbalance_per_broker_percentage), (30, 10));
    }

    #[test]
    fn byte_limits_are_bounded_like_kafka_and_by_the_grpc_limit() {
        let parse = |extra: &[&str]| {
            let mut argv =
                vec!["insync-broker", "--node-id", "1", "--listen", "127.0.0.1:9092", "--data-dir", "/tmp/x"];
            argv.extend_from_slice(extra);
            BrokerArgs::try_parse_from(argv)
        };
        // Kafka fetch.max.bytes: atLeast(1024).
        assert!(parse(&["--fetch-max-bytes", "1023"]).is_err());
        assert_eq!(parse(&["--fetch-max-bytes", "1024"]).map(|a| a.fetch_max_bytes).ok(), Some(1024));
        let ceiling = MESSAGE_MAX_BYTES_CEILING.to_string();
        let above = (MESSAGE_MAX_BYTES_CEILING + 1).to_string();
        assert_eq!(
            parse(&["--message-max-bytes", &ceiling]).map(|a| a.message_max_bytes).ok(),
            Some(MESSAGE_MAX_BYTES_CEILING)
        );
        assert!(parse(&["--message-max-bytes", &above]).is_err());
        assert!(parse(&["--message-max-bytes", "0"]).is_err());
    }

    #[test]
    fn kafka_listen_defaults_from_the_node_id_and_can_be_disabled() {
        let parse = |extra: &[&str]| {
            let mut argv =
                vec!["insync-broker", "--node-id", "2", "--listen", "127.0.0.1:9093", "--data-dir", "/tmp/x"];
            argv.extend_from_slice(extra);
            BrokerArgs::parse_from(argv)
        };
        let default = parse(&[]);
        assert_eq!(default.kafka_listen_address(), Some(("127.0.0.1:19093".parse().unwrap(), false)));
        assert_eq!(default.kafka_advertised_address("127.0.0.1:19093".parse().unwrap()), "127.0.0.1:19093");
        assert_eq!(parse(&["--roles", "controller"]).kafka_listen_address(), None);
        assert_eq!(parse(&["--kafka-listen", "none"]).kafka_listen_address(), None);
        let chosen = parse(&["--kafka-listen", "0.0.0.0:9092", "--kafka-advertise", "broker-2:9092"]);
        assert_eq!(chosen.kafka_listen_address(), Some(("0.0.0.0:9092".parse().unwrap(), true)));
        assert_eq!(chosen.kafka_advertised_address("0.0.0.0:9092".parse().unwrap()), "broker-2:9092");
        assert!(BrokerArgs::try_parse_from([
            "insync-broker",
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:9092",
            "--data-dir",
            "/tmp/x",
            "--kafka-listen",
            "nowhere"
        ])
        .is_err());
    }

    #[test]
    fn metrics_listen_defaults_from_the_node_id_and_can_be_disabled() {
        let parse = |extra: &[&str]| {
            let mut argv =
                vec!["insync-broker", "--node-id", "2", "--listen", "127.0.0.1:9093", "--data-dir", "/tmp/x"];
            argv.extend_from_slice(extra);
            BrokerArgs::parse_from(argv)
        };
        assert_eq!(parse(&[]).metrics_address(), Some(("127.0.0.1:9292".parse().unwrap(), false)));
        assert_eq!(
            parse(&["--roles", "controller"]).metrics_address(),
            Some(("127.0.0.1:9392".parse().unwrap(), false))
        );
        assert_eq!(
            parse(&["--roles", "broker,controller"]).metrics_address(),
            Some(("127.0.0.1:9292".parse().unwrap(), false))
        );
        assert_eq!(parse(&["--metrics-listen", "none"]).metrics_address(), None);
        assert_eq!(
            parse(&["--metrics-listen", "0.0.0.0:9290"]).metrics_address(),
            Some(("0.0.0.0:9290".parse().unwrap(), true))
        );
        assert!(BrokerArgs::try_parse_from([
            "insync-broker",
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:9092",
            "--data-dir",
            "/tmp/x",
            "--metrics-listen",
            "nowhere"
        ])
        .is_err());
    }

    #[test]
    fn outgoing_connections_start_from_a_specific_listen_address_only() {
        let listen = |address: &str| {
            BrokerArgs::parse_from(["insync-broker", "--node-id", "2", "--listen", address, "--data-dir", "/tmp/x"])
        };
        assert_eq!(listen("127.0.1.2:9093").outgoing_address(), Some("127.0.1.2".parse().unwrap()));
        assert_eq!(listen("0.0.0.0:9092").outgoing_address(), None);
        assert_eq!(listen("[::]:9092").outgoing_address(), None);
    }
}
