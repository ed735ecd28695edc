#!/usr/bin/env bash
#! scripts/capture-kafka-corpus.sh — regenerates crates/kafka-wire/corpus/: starts a local
#! cluster whose brokers advertise a recording proxy (scripts/capture-kafka-frames.py) as
#! their Kafka address, drives kcat, confluent-kafka and kafka-python sessions through it,
#! then stops everything it started and replaces the corpus's *.bin files with the frames
#! recorded. Every step is bounded in time; an EXIT trap always stops the proxy and cluster.
#
# Usage: scripts/capture-kafka-corpus.sh [OUT_DIR]      (default crates/kafka-wire/corpus)
# Needs: target/debug/insync-broker and insync (cargo build --workspace --bins; or set
# INSYNC_BIN_DIR), and the clients from scripts/install-kafka-clients.sh.
# Environment: CAPTURE_PORT_OFFSET (default 600) shifts the cluster's ports like
# INSYNC_PORT_OFFSET does for scripts/cluster.sh; the proxy listens 1000 above each Kafka
# listener (broker N: Kafka on 19091+N+offset, proxy on 20091+N+offset).
# CAPTURE_MAX_PER_KEY (default 3): distinct frames kept per (api, version, client).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/crates/kafka-wire/corpus}"
OFFSET="${CAPTURE_PORT_OFFSET:-600}"
PROXY_SHIFT=1000
REAL_BIN="${INSYNC_BIN_DIR:-$ROOT/target/debug}"
VENV="${INSYNC_KAFKA_VENV:-$ROOT/target/kafka-clients-venv}"
WORK="$ROOT/target/kafka-capture"
MAX_PER_KEY="${CAPTURE_MAX_PER_KEY:-3}"
PY="$VENV/bin/python"

die() { echo "capture-kafka-corpus.sh: $*" >&2; exit 1; }
step() { echo "== $*" >&2; }

[ -x "$REAL_BIN/insync-broker" ] && [ -x "$REAL_BIN/insync" ] ||
  die "no $REAL_BIN/insync-broker: run 'cargo build --workspace --bins' first (or set INSYNC_BIN_DIR)"
command -v kcat >/dev/null 2>&1 || die "kcat not found: run scripts/install-kafka-clients.sh"
"$PY" -c 'import confluent_kafka, kafka' 2>/dev/null || die "no Python clients in $VENV: run scripts/install-kafka-clients.sh"
command -v timeout >/dev/null 2>&1 || die "coreutils timeout not found"

kafka_port() { echo $((19091 + $1 + OFFSET)); }
proxy_port() { echo $((19091 + $1 + OFFSET + PROXY_SHIFT)); }
BOOT="127.0.0.1:$(proxy_port 1),127.0.0.1:$(proxy_port 2),127.0.0.1:$(proxy_port 3)"
GRPC_BOOT="127.0.1.1:$((9092 + OFFSET)),127.0.1.2:$((9093 + OFFSET)),127.0.1.3:$((9094 + OFFSET))"

# Leftovers of an earlier run that was SIGKILLed (its trap never ran): its proxy, its nodes.
if [ -f "$WORK/proxy.pid" ]; then
  old=$(cat "$WORK/proxy.pid")
  if grep -q capture-kafka-frames "/proc/$old/cmdline" 2>/dev/null; then kill -TERM "$old" 2>/dev/null; fi
fi
if [ -d "$WORK/cluster/pids" ]; then
  INSYNC_CLUSTER_DIR="$WORK/cluster" INSYNC_PORT_OFFSET="$OFFSET" INSYNC_BIN_DIR="$WORK/bin" \
    timeout 120 "$ROOT/scripts/cluster.sh" down >&2 || true
fi
rm -rf "$WORK"
mkdir -p "$WORK/bin" "$WORK/frames" "$WORK/sessions"
export INSYNC_CLUSTER_DIR="$WORK/cluster" INSYNC_PORT_OFFSET="$OFFSET" INSYNC_BIN_DIR="$WORK/bin"

# scripts/cluster.sh starts the nodes; this wrapper adds --kafka-advertise (Kafka
# advertised.listeners) = the proxy port for the broker's --kafka-listen port, then execs
# the real binary (same pid, so cluster.sh's pid files and `down` still work).
cat >"$WORK/bin/insync-broker" <<EOF
#!/usr/bin/env bash
args=("\$@"); extra=()
for ((i = 0; i < \${#args[@]}; i++)); do
  if [ "\${args[i]}" = --kafka-listen ]; then
    port="\${args[i+1]##*:}"; extra=(--kafka-advertise "127.0.0.1:\$((port + $PROXY_SHIFT))")
  fi
done
exec "$WORK/bin/insync-broker.real" "\${args[@]}" "\${extra[@]}"
EOF
chmod +x "$WORK/bin/insync-broker"
# Private copies, so that a concurrent cargo build cannot swap the binaries mid-run.
cp "$REAL_BIN/insync-broker" "$WORK/bin/insync-broker.real"
cp "$REAL_BIN/insync" "$WORK/bin/insync"

PROXY_PID=""
WATCHDOG_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$WATCHDOG_PID" ]; then kill "$WATCHDOG_PID" 2>/dev/null; wait "$WATCHDOG_PID" 2>/dev/null; fi
  if [ -n "$PROXY_PID" ] && kill -0 "$PROXY_PID" 2>/dev/null; then
    kill -TERM "$PROXY_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PROXY_PID" 2>/dev/null
    wait "$PROXY_PID" 2>/dev/null
  fi
  step "stopping the cluster"
  timeout 120 "$ROOT/scripts/cluster.sh" down >&2 || true
  rm -f "$WORK/bin/insync-broker.real" "$WORK/bin/insync"  # ~280 MB of binary copies
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Whole-run bound: a stuck step cannot keep the cluster up forever.
(
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  sleep "${CAPTURE_TIMEOUT_S:-900}" & sleeper=$!
  wait "$sleeper" && { echo "capture-kafka-corpus.sh: overall timeout, stopping" >&2; kill -TERM $$; }
) &
WATCHDOG_PID=$!

step "starting the cluster (nodes under $INSYNC_CLUSTER_DIR)"
timeout 120 "$ROOT/scripts/cluster.sh" up >&2 || die "cluster did not start; see $INSYNC_CLUSTER_DIR/logs/"
insync() { timeout 30 "$WORK/bin/insync" --bootstrap "$GRPC_BOOT" "$@"; }
insync topic create corpus --partitions 3 --replication-factor 3 >&2 || die "topic create corpus failed"
insync topic create corpus-one --partitions 1 --replication-factor 3 >&2 || die "topic create corpus-one failed"

step "starting the recording proxy"
"$PY" -u "$ROOT/scripts/capture-kafka-frames.py" --out "$WORK/frames" --max-per-key "$MAX_PER_KEY" --caps-file "$WORK/caps" \
  "$(proxy_port 1)=127.0.0.1:$(kafka_port 1)" "$(proxy_port 2)=127.0.0.1:$(kafka_port 2)" \
  "$(proxy_port 3)=127.0.0.1:$(kafka_port 3)" 2>"$WORK/proxy.log" &
PROXY_PID=$!
echo "$PROXY_PID" >"$WORK/proxy.pid"
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$(proxy_port 3)") 2>/dev/null && break
  kill -0 "$PROXY_PID" 2>/dev/null || die "proxy exited: $(cat "$WORK/proxy.log")"
  sleep 0.1
done
# Wait until every broker answers through the proxy with all three brokers known.
for _ in $(seq 60); do
  [ "$(timeout 10 kcat -b "$BOOT" -X client.id=kcat -L 2>/dev/null | grep -c '^ *broker [0-9]* at ')" -ge 3 ] && break
  sleep 0.5
done

# ---------------------------------------------------------------- kcat (Debian librdkafka)
# Every client names itself with client.id = its label, which the proxy uses in file names.
K=(kcat -b "$BOOT" -X client.id=kcat)
run() { local limit="$1"; shift; timeout "$limit" "$@" >>"$WORK/sessions.log" 2>&1 || echo "   (exit $?: $*)" >&2; }
ago_ms() { echo $(( ($(date +%s) - 3600) * 1000 )); }
kcat_sessions() {  # full | short
  run 20 "${K[@]}" -L
  printf 'k1:keyed-1\nk2:keyed-2\nk3:keyed-3\n' | run 30 "${K[@]}" -P -t corpus -K: -H trace-id=abc -H source=kcat
  run 30 "${K[@]}" -C -t corpus -o beginning -e -q
  # balanced consumer group: FindCoordinator, JoinGroup, SyncGroup, OffsetFetch, Heartbeat,
  # OffsetCommit (auto commit), LeaveGroup. -e exits at the end of every partition.
  run 40 "${K[@]}" -G "corpus-kcat-$1" corpus -o beginning -e -q -X auto.commit.interval.ms=200 -X heartbeat.interval.ms=300
  [ "$1" = full ] || return 0
  run 20 "${K[@]}" -L -t corpus -J
  for acks in all 1 0; do
    printf 'kcat-acks%s-a\nkcat-acks%s-b\nkcat-acks%s-c\n' "$acks" "$acks" "$acks" |
      run 30 "${K[@]}" -P -t corpus -X acks="$acks"
  done
  printf 'p0-a\np0-b\n' | run 30 "${K[@]}" -P -t corpus-one -p 0 -X enable.idempotence=true -H h=v
  printf 'batched-%s\n' $(seq 1 40) | run 30 "${K[@]}" -P -t corpus -X linger.ms=50 -X acks=all
  run 30 "${K[@]}" -C -t corpus-one -p 0 -o -1 -e -q
  run 30 "${K[@]}" -C -t corpus-one -p 0 -o end -e -q
  run 30 "${K[@]}" -C -t corpus -o "s@$(ago_ms)" -e -q
  run 20 "${K[@]}" -Q -t "corpus-one:0:$(ago_ms)"
  run 40 "${K[@]}" -G "corpus-kcat-$1" corpus -e -q -X enable.auto.commit=true
}
step "kcat sessions"
kcat_sessions full

# ---------------------------------------------------------- confluent-kafka (bundled librdkafka)
step "confluent-kafka sessions"
cat >"$WORK/sessions/confluent.py" <<'EOF'
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
boot = sys.argv[1]
base = {"bootstrap.servers": boot, "client.id": "confluent-kafka"}

def produce(conf, topic, n, keys=False, headers=False, partition=None):
    p = Producer({**base, "linger.ms": 5, "message.timeout.ms": 15000, **conf})
    for i in range(n):
        kw = {}
        if keys:
            kw["key"] = f"key-{i}".encode()
        if headers:
            kw["headers"] = [("trace-id", f"t-{i}".encode()), ("source", b"confluent-kafka"), ("empty", b"")]
        if partition is not None:
            kw["partition"] = partition
        p.produce(topic, value=f"confluent-{conf.get('acks', 'default')}-{i}".encode(), **kw)
        p.poll(0)
    left = p.flush(20)
    print(f"produce {conf} unflushed={left}", flush=True)

for acks in ("all", "1", "0"):
    produce({"acks": acks, "enable.idempotence": False}, "corpus", 4, keys=(acks == "1"), headers=(acks == "all"))
produce({"enable.idempotence": True}, "corpus", 6, keys=True, headers=True)
produce({"enable.idempotence": True, "acks": "all"}, "corpus-one", 3, partition=0)

# Consumer group: subscribe, poll, commit, committed, watermarks, offsets_for_times, close.
c = Consumer({**base, "group.id": "corpus-confluent", "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 300})
c.subscribe(["corpus", "corpus-one"])
got, deadline = 0, time.time() + 15
while time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and m.error() is None:
        got += 1
        if got % 10 == 0:
            c.commit(message=m, asynchronous=False)
    elif got and m is None:
        break
print(f"consumed {got}", flush=True)
if got:
    c.commit(asynchronous=False)
parts = [TopicPartition("corpus", p) for p in range(3)] + [TopicPartition("corpus-one", 0)]
print("committed", c.committed(parts, timeout=10), flush=True)
print("watermarks", c.get_watermark_offsets(TopicPartition("corpus-one", 0), timeout=10), flush=True)
ts = int(time.time() * 1000) - 3_600_000
print("offsets_for_times", c.offsets_for_times([TopicPartition("corpus", p, ts) for p in range(3)], timeout=10), flush=True)
time.sleep(1.5)  # a few heartbeats
c.poll(0.1)
c.close()

# Static membership (JoinGroup with group.instance.id) and the cooperative protocol.
c = Consumer({**base, "group.id": "corpus-confluent-static", "group.instance.id": "static-1",
              "partition.assignment.strategy": "cooperative-sticky", "auto.offset.reset": "latest",
              "session.timeout.ms": 6000, "heartbeat.interval.ms": 300})
c.subscribe(["corpus"])
deadline = time.time() + 6
while time.time() < deadline:
    c.poll(0.3)
c.close()

# Manual assignment, no group: ListOffsets + Fetch only.
c = Consumer({**base, "group.id": "unused", "enable.auto.commit": False, "auto.offset.reset": "earliest"})
c.assign([TopicPartition("corpus-one", 0, 0)])
deadline = time.time() + 4
while time.time() < deadline:
    c.poll(0.3)
c.close()

a = AdminClient(base)
md = a.list_topics(timeout=10)
print("brokers", sorted(md.brokers), "topics", sorted(md.topics), flush=True)
md = a.list_topics(topic="corpus", timeout=10)
EOF
run 120 "$PY" -u "$WORK/sessions/confluent.py" "$BOOT"

# ------------------------------------------------------------------------- kafka-python
# One session per api_version: kafka-python then caps every API at that broker release's
# versions (kafka/protocol/broker_version_data.py), so the sweep yields most versions of
# each API. 0.11 is the oldest release whose versions insync serves (Produce >= 3).
step "kafka-python sessions"
cat >"$WORK/sessions/kafka_python.py" <<'EOF'
import sys, time, logging
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
logging.basicConfig(level=logging.ERROR)
boot, api = sys.argv[1].split(","), sys.argv[2]
base = {"bootstrap_servers": boot, "client_id": "kafka-python", "request_timeout_ms": 10000}
if api != "auto":
    base["api_version"] = tuple(int(x) for x in api.split("."))
tag = api.replace(".", "_")

for acks in ("all", 1, 0):
    p = KafkaProducer(acks=acks, linger_ms=5, **base)
    for i in range(3):
        headers = [("trace-id", f"kp-{i}".encode()), ("source", b"kafka-python")] if acks == "all" else None
        key = f"key-{i}".encode() if acks == 1 else None
        f = p.send("corpus", value=f"kafka-python-{tag}-acks{acks}-{i}".encode(), key=key, headers=headers)
    p.flush(20)
    p.close(10)
try:
    p = KafkaProducer(acks="all", enable_idempotence=True, **base)
    for i in range(3):
        p.send("corpus-one", value=f"kafka-python-{tag}-idempotent-{i}".encode(), key=b"k", partition=0)
    p.flush(20)
    p.close(10)
except Exception as e:
    print("idempotent producer:", repr(e), flush=True)

c = KafkaConsumer("corpus", "corpus-one", group_id=f"corpus-kafka-python-{tag}", auto_offset_reset="earliest",
                  enable_auto_commit=False, consumer_timeout_ms=4000, heartbeat_interval_ms=300,
                  session_timeout_ms=6000, **base)
n = sum(1 for _ in c)
print(f"{api}: consumed {n}", flush=True)
c.commit()
print("committed", c.committed(TopicPartition("corpus-one", 0)), flush=True)
c.close()

c = KafkaConsumer(**base)
tps = [TopicPartition("corpus", p) for p in range(3)]
c.assign(tps)
print("beginning", c.beginning_offsets(tps), "end", c.end_offsets(tps), flush=True)
print("times", c.offsets_for_times({tp: int(time.time() * 1000) - 3_600_000 for tp in tps}), flush=True)
c.seek_to_beginning()
c.poll(timeout_ms=1500)
c.close()

try:
    a = KafkaAdminClient(**base)
    print("topics", sorted(a.list_topics()), flush=True)
    print("cluster", a.describe_cluster(), flush=True)
    a.close()
except Exception as e:
    print("admin:", repr(e), flush=True)
EOF
for api in auto 0.11 1.0 1.1 2.0 2.1 2.2 2.3 2.4 2.5 2.7 2.8; do
  echo "   kafka-python api_version=$api" >&2
  run 90 "$PY" -u "$WORK/sessions/kafka_python.py" "$BOOT" "$api"
done
# 3.0 caps OffsetFetch at v8, which insync does not serve (it closes the connection and
# kafka-python retries until the timeout): kept, briefly, for those real v8 frames.
echo "   kafka-python api_version=3.0 (OffsetFetch v8 is refused)" >&2
run 20 "$PY" -u "$WORK/sessions/kafka_python.py" "$BOOT" 3.0

# Releases before 0.11 use Produce < 3 and Fetch < 4, which insync does not serve, but
# their group, metadata and ListOffsets versions are served: a session with no produce and
# no fetch (join, sync, heartbeats, commit, committed, offsets, leave) records those.
cat >"$WORK/sessions/kafka_python_old.py" <<'EOF'
import sys, time, logging
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
logging.basicConfig(level=logging.ERROR)
boot, api = sys.argv[1].split(","), sys.argv[2]
version = tuple(int(x) for x in api.split("."))
base = {"bootstrap_servers": boot, "client_id": "kafka-python", "request_timeout_ms": 10000, "api_version": version}
c = KafkaConsumer(group_id=f"corpus-kafka-python-{api.replace('.', '_')}", enable_auto_commit=False,
                  heartbeat_interval_ms=300, session_timeout_ms=6000, **base)
c.subscribe(["corpus", "corpus-one"])
deadline = time.time() + 10
while time.time() < deadline and not c._coordinator.poll(timeout_ms=1000):
    pass
time.sleep(1.5)  # heartbeats
c._coordinator.poll(timeout_ms=500)
assigned = sorted(c.assignment())
print(f"{api}: assigned {assigned}", flush=True)
if assigned:
    c.commit({tp: OffsetAndMetadata(1, "corpus-seed", -1) for tp in assigned})
    print("committed", [c.committed(tp) for tp in assigned], flush=True)
if version >= (0, 10, 1):  # ListOffsets v1; v0 (older) is not served
    print("beginning", c.beginning_offsets(assigned), "end", c.end_offsets(assigned), flush=True)
    print("times", c.offsets_for_times({tp: int(time.time() * 1000) - 3_600_000 for tp in assigned}), flush=True)
c.close(autocommit=False)
EOF
for api in 0.9 0.10.0 0.10.1 0.10.2; do
  echo "   kafka-python api_version=$api (group, metadata and offsets only)" >&2
  run 40 "$PY" -u "$WORK/sessions/kafka_python_old.py" "$BOOT" "$api"
done

# ---------------------------------------------------- capped ApiVersions answers
# Versions between the clients' oldest and newest that neither client picks on its own
# (no kafka-python release table stops there, librdkafka always takes the newest): the
# proxy lowers the advertised max in ApiVersions answers (--caps-file) and each client
# encodes that version itself. JoinGroup 8-9 stay out of reach: kafka-python stops at 7,
# librdkafka at 5.
step "sessions against capped ApiVersions answers"
for caps in "Produce=4 Fetch=4 Metadata=3 OffsetCommit=5 LeaveGroup=3" "Fetch=9 Metadata=10"; do
  echo "$caps" >"$WORK/caps"
  echo "   caps: $caps" >&2
  kcat_sessions short
  run 120 "$PY" -u "$WORK/sessions/confluent.py" "$BOOT"
  run 90 "$PY" -u "$WORK/sessions/kafka_python.py" "$BOOT" auto
done
rm -f "$WORK/caps"

step "stopping the proxy"
kill -TERM "$PROXY_PID" 2>/dev/null
for _ in $(seq 50); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
wait "$PROXY_PID" 2>/dev/null
PROXY_PID=""
sed -n '/^api /,$p' "$WORK/proxy.log" >&2

count=$(find "$WORK/frames" -name '*.bin' | wc -l)
[ "$count" -gt 0 ] || die "no frames recorded; see $WORK/proxy.log and $WORK/sessions.log"
mkdir -p "$OUT"
find "$OUT" -maxdepth 1 -name '*.bin' -delete
cp "$WORK/frames"/*.bin "$OUT"/
echo "wrote $count frames ($(du -cb "$OUT"/*.bin | tail -1 | cut -f1) bytes) to $OUT" >&2
echo "session output: $WORK/sessions.log; proxy log: $WORK/proxy.log" >&2
