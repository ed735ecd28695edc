#!/usr/bin/env bash
#! scripts/cluster.sh — run a local insync cluster: 1 (or 3) controllers + brokers 1–3 as
#! background processes, with data and logs under .cluster/ in the repo.
#
# Usage:
#   scripts/cluster.sh up [--controllers 1|3] [--replica-lag-time-max-ms MS]
#                         [--min-insync-replicas N] [--broker-session-timeout-ms MS]
#                         [--broker-session-close-grace-ms MS]   (0: fence by session timeout only)
#                         [--worker-threads N]   (each node's async threads; default: cores / 3, at least 1)
#   scripts/cluster.sh down [--clean]        stop everything (SIGTERM, then SIGKILL); --clean wipes .cluster/
#   scripts/cluster.sh status                processes and the cluster's own view
#   scripts/cluster.sh kill N                SIGKILL broker N   (N, broker-N or controller-N)
#   scripts/cluster.sh stop N                SIGTERM (controlled shutdown) and wait
#   scripts/cluster.sh start N               start a stopped/killed node again, same flags
#   scripts/cluster.sh pause N | resume N    SIGSTOP / SIGCONT
#   scripts/cluster.sh logs N [-f]           the node's log
#   scripts/cluster.sh partition A B [--one-way]   cut the links between nodes A and B (both
#                                            ways; --one-way: only A's calls to B time out);
#                                            A and B may be lists: partition 1,controller-1 2,3
#   scripts/cluster.sh isolate N             cut N off from every other node (clients still reach it)
#   scripts/cluster.sh heal                  restore every link cut (`down` heals too)
#
# Addresses (docs/design.md "Topology: controllers and brokers"): each node on its own loopback
# address, broker N on 127.0.1.N:(9091+N), controller N on 127.0.2.N:(9190+N); nodes connect
# from that address too, so iptables rules (root, installed if missing) can cut any link while
# clients, connecting from 127.0.0.1, are never cut. Prometheus metrics of broker N on
# 127.0.0.1:(9290+N), of controller N on 127.0.0.1:(9390+N); the Kafka wire protocol (kcat,
# librdkafka, kafka-python) of broker N on 127.0.0.1:(19091+N).
# INSYNC_CLUSTER_DIR overrides .cluster/; INSYNC_PORT_OFFSET shifts every port (for running
# a second cluster beside the first).
# `up` records the controller quorum in .cluster/quorum and refuses another one at once: the
# controllers' Raft data keeps its voter set, so a 1-controller directory started with 3 never
# elects a quorum the brokers can use (they wait forever for cluster metadata).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${INSYNC_CLUSTER_DIR:-$ROOT/.cluster}"
OFFSET="${INSYNC_PORT_OFFSET:-0}"
BIN="${INSYNC_BIN_DIR:-$ROOT/target/release}"
BROKERS=(1 2 3)

die() { echo "cluster.sh: $*" >&2; exit 1; }
broker_port() { echo $((9091 + $1 + OFFSET)); }
controller_port() { echo $((9190 + $1 + OFFSET)); }
# Prometheus metrics: broker N on 9290+N, controller N on 9390+N (shifted like every port).
broker_metrics_port() { echo $((9290 + $1 + OFFSET)); }
controller_metrics_port() { echo $((9390 + $1 + OFFSET)); }
# Kafka wire-protocol listener: broker N on 19091+N (19092, 19093, 19094), shifted likewise.
broker_kafka_port() { echo $((19091 + $1 + OFFSET)); }
# Each node's own loopback address (gRPC listener and the source of its connections).
broker_ip() { echo "127.0.1.$1"; }
controller_ip() { echo "127.0.2.$1"; }
kafka_bootstrap() { local out="" n; for n in "${BROKERS[@]}"; do out+="${out:+,}127.0.0.1:$(broker_kafka_port "$n")"; done; echo "$out"; }
bootstrap() { local out="" n; for n in "${BROKERS[@]}"; do out+="${out:+,}$(broker_ip "$n"):$(broker_port "$n")"; done; echo "$out"; }

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) first"
}

build() {
  if [ -n "${INSYNC_BIN_DIR:-}" ]; then return; fi
  ensure_cargo
  echo "building release binaries (first time takes a few minutes)..." >&2
  (cd "$ROOT" && cargo build --release --quiet -p insync-broker -p insync-cli) || die "build failed"
}

# node name normalisation: "2" / "broker-2" → broker-2; "controller-2" → controller-2
node_name() {
  case "$1" in
    [0-9]*) echo "broker-$1" ;;
    broker-[0-9]*|controller-[0-9]*) echo "$1" ;;
    *) die "unknown node '$1': use N, broker-N or controller-N" ;;
  esac
}

pid_of() { local f="$STATE/pids/$1.pid"; [ -f "$f" ] && cat "$f" || true; }
# A pid is alive if it exists and is not a zombie (a killed node not yet reaped).
alive_pid() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
is_running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && alive_pid "$pid"; }
proc_state() { local pid; pid=$(pid_of "$1"); awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true; }

load_config() {
  CONTROLLERS=1; EXTRA=()
  if [ -f "$STATE/config" ]; then
    # shellcheck disable=SC1091
    . "$STATE/config"
  fi
}

# quorum [N]: the --controller-quorum of an N-controller cluster (default: the configured one).
quorum() { local n="${1:-$CONTROLLERS}" out="" i; for ((i = 1; i <= n; i++)); do out+="${out:+,}$i@$(controller_ip "$i"):$(controller_port "$i")"; done; echo "$out"; }
# Only the voter ids are compared: the controllers dial the addresses given on the command line,
# so a quorum moved by INSYNC_PORT_OFFSET still finds its data valid.
voter_ids() { sed 's/@[^,]*//g' <<<"$1"; }

# check_quorum N: fail at once if the state directory holds data of a different controller
# quorum; record the quorum when it holds none yet.
check_quorum() {
  local want had="" marker="$STATE/quorum"
  want=$(quorum "$1")
  if [ -f "$marker" ]; then
    had=$(head -n 1 "$marker")
  elif [ -d "$STATE/controller-1/raft" ]; then
    # Data from before the marker existed: the controllers that have a Raft store tell its size.
    if [ -d "$STATE/controller-2/raft" ]; then had=$(quorum 3); else had=$(quorum 1); fi
  fi
  if [ -n "$had" ] && [ "$(voter_ids "$had")" != "$(voter_ids "$want")" ]; then
    die "data in $STATE was made for controller quorum $had, not $want: run scripts/cluster.sh down --clean first (it deletes that data)"
  fi
  [ -f "$marker" ] || echo "$want" >"$marker"
}

# node_extra: the recorded extra flags, one per line, without --worker-threads when the broker
# binary predates it (INSYNC_BIN_DIR / BENCH_BIN_DIR may name an older build to compare with).
node_extra() {
  local i supported=1 help
  help=$("$BIN/insync-broker" --help 2>/dev/null || true)
  [[ "$help" == *--worker-threads* ]] || supported=0
  for ((i = 0; i < ${#EXTRA[@]}; i++)); do
    if [ "$supported" = 0 ] && [ "${EXTRA[$i]}" = --worker-threads ]; then i=$((i + 1)); continue; fi
    printf '%s\n' "${EXTRA[$i]}"
  done
}

start_node() {
  local name="$1" kind="${1%%-*}" n="${1##*-}" ip port metrics args
  if is_running "$name"; then echo "$name already running (pid $(pid_of "$name"))"; return; fi
  [ -x "$BIN/insync-broker" ] || build
  mkdir -p "$STATE/pids" "$STATE/logs" "$STATE/$name"
  if [ "$kind" = controller ]; then
    (( n >= 1 && n <= CONTROLLERS )) || die "no controller-$n in a $CONTROLLERS-controller cluster"
    ip=$(controller_ip "$n"); port=$(controller_port "$n"); metrics=$(controller_metrics_port "$n"); args=(--roles controller)
  else
    (( n >= 1 && n <= 3 )) || die "no broker $n: brokers are 1, 2, 3"
    ip=$(broker_ip "$n"); port=$(broker_port "$n"); metrics=$(broker_metrics_port "$n")
    args=(--roles broker --kafka-listen "127.0.0.1:$(broker_kafka_port "$n")")
  fi
  local extra_args=(); mapfile -t extra_args < <(node_extra)
  nohup "$BIN/insync-broker" "${args[@]}" --node-id "$n" --listen "$ip:$port" \
    --data-dir "$STATE/$name" --controller-quorum "$(quorum)" --metrics-listen "127.0.0.1:$metrics" "${extra_args[@]}" \
    >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name.pid"
  echo "started $name (pid $!) on $ip:$port, metrics http://127.0.0.1:$metrics/metrics"
}

# wait_ready TIMEOUT_S NODE...: until 3 brokers are alive in the cluster's own view; fails
# early if one of the NODEs we just started exited (port taken, bad flag...). On timeout,
# LAST_STATUS holds the cluster's last answer, the first clue to why.
LAST_STATUS=""
wait_ready() {
  local deadline=$((SECONDS + $1)) alive name out
  shift
  while ((SECONDS < deadline)); do
    for name in "$@"; do
      is_running "$name" || die "$name exited during start-up: $(grep -v '^ ' "$STATE/logs/$name.log" | grep -m1 -i error || echo "see $STATE/logs/$name.log")"
    done
    out=$("$BIN/insync" --bootstrap "$(bootstrap)" cluster status --json 2>&1 || true)
    alive=$(grep -c '"status":"alive"' <<<"$out" || true)
    if [ "$alive" -ge 3 ]; then return 0; fi
    LAST_STATUS=$(grep -m1 . <<<"$out" || true)
    sleep 0.3
  done
  return 1
}

# log_tails NODE...: the last lines of each node's log, so a failed start-up shows its cause
# without a second command.
log_tails() {
  local name
  for name in "$@"; do
    echo "--- $name (tail of $STATE/logs/$name.log)"
    tail -n 5 "$STATE/logs/$name.log" 2>/dev/null || echo "(no log)"
  done
}

cmd_up() {
  local controllers=1 extra=() workers=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --controllers) controllers="${2:?}"; shift 2 ;;
      --worker-threads) workers="${2:?--worker-threads needs a value}"; shift 2 ;;
      --replica-lag-time-max-ms|--min-insync-replicas|--broker-session-timeout-ms|--broker-session-close-grace-ms|--replica-fetch-wait-max-ms|--message-max-bytes)
        extra+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
      *) die "up: unknown option '$1'" ;;
    esac
  done
  [[ "$controllers" = 1 || "$controllers" = 3 ]] || die "--controllers must be 1 or 3"
  # Three brokers (and the controllers, which idle) share this machine: each gets its share of
  # the cores. One thread per core in every node would cost cross-thread wake-ups on every
  # request (docs/benchmarks.md, "Threads per node").
  if [ -z "$workers" ]; then workers=$(( $(nproc 2>/dev/null || echo 3) / 3 )); (( workers >= 1 )) || workers=1; fi
  [[ "$workers" =~ ^[0-9]+$ ]] && (( 10#$workers <= 1024 )) || die "--worker-threads must be 0-1024 (0: one per core)"
  workers=$((10#$workers))
  extra+=(--worker-threads "$workers")
  # Everything that can refuse runs before the build and before any node starts, so a refusal
  # comes at once; the quorum check precedes the config write, which a refusal must not change.
  mkdir -p "$STATE"
  local running=0
  if ls "$STATE"/pids/*.pid >/dev/null 2>&1 && any_running; then
    load_config
    if [ "$CONTROLLERS" != "$controllers" ]; then die "a $CONTROLLERS-controller cluster is running: 'down' it first"; fi
    running=1
  fi
  check_quorum "$controllers"
  if [ "$running" = 0 ]; then
    { echo "CONTROLLERS=$controllers"; printf 'EXTRA=('; [ ${#extra[@]} -gt 0 ] && printf '%q ' "${extra[@]}"; echo ')'; } >"$STATE/config"
  fi
  build
  load_config
  local i
  for ((i = 1; i <= CONTROLLERS; i++)); do start_node "controller-$i"; done
  for i in "${BROKERS[@]}"; do start_node "broker-$i"; done
  echo "waiting for brokers 1-3 to register..."
  local nodes=(); for ((i = 1; i <= CONTROLLERS; i++)); do nodes+=("controller-$i"); done
  nodes+=(broker-1 broker-2 broker-3)
  if ! wait_ready 60 "${nodes[@]}"; then
    echo "cluster.sh: brokers did not all register within 60 s; the cluster's last answer: ${LAST_STATUS:-none}" >&2
    log_tails "${nodes[@]}" >&2
    die "the nodes are left running for a look ('down' stops them); full logs in $STATE/logs/"
  fi
  echo "cluster up. bootstrap: $(bootstrap)"
  echo "  export INSYNC_BOOTSTRAP=$(bootstrap)"
  echo "Kafka clients (kcat -b, bootstrap.servers): $(kafka_bootstrap)"
}

any_running() { local f; for f in "$STATE"/pids/*.pid; do [ -f "$f" ] && alive_pid "$(cat "$f")" && return 0; done; return 1; }

stop_pid_file() {
  local f="$1" sig="$2" pid name
  pid=$(cat "$f"); name=$(basename "$f" .pid)
  if alive_pid "$pid"; then
    kill -CONT "$pid" 2>/dev/null || true
    kill "-$sig" "$pid" 2>/dev/null || true
    echo "$name: sent SIG$sig to $pid"
  fi
}

wait_gone() { local pid="$1" deadline=$((SECONDS + $2)); while alive_pid "$pid" && ((SECONDS < deadline)); do sleep 0.1; done; ! alive_pid "$pid"; }

cmd_down() {
  local f pid
  if [ -d "$STATE/pids" ]; then
    # Brokers first (controlled shutdown needs a controller), then controllers.
    for f in "$STATE"/pids/broker-*.pid; do [ -f "$f" ] && stop_pid_file "$f" TERM; done
    for f in "$STATE"/pids/broker-*.pid; do [ -f "$f" ] && { wait_gone "$(cat "$f")" 20 || kill -KILL "$(cat "$f")" 2>/dev/null || true; }; done
    for f in "$STATE"/pids/controller-*.pid; do [ -f "$f" ] && stop_pid_file "$f" TERM; done
    for f in "$STATE"/pids/controller-*.pid; do [ -f "$f" ] && { wait_gone "$(cat "$f")" 10 || kill -KILL "$(cat "$f")" 2>/dev/null || true; }; done
    rm -f "$STATE"/pids/*.pid
  fi
  if [ "${1:-}" = "--clean" ]; then rm -rf "$STATE"; echo "removed $STATE"; fi
  echo "cluster down"
}

cmd_status() {
  load_config
  local name i st
  for name in $(for ((i = 1; i <= CONTROLLERS; i++)); do echo "controller-$i"; done) broker-1 broker-2 broker-3; do
    if is_running "$name"; then
      st=$(proc_state "$name"); [ "$st" = T ] && st="paused" || st="running"
      echo "$name: $st (pid $(pid_of "$name"))"
    else
      echo "$name: stopped"
    fi
  done
  local cut
  while read -r cut; do [ -z "$cut" ] || echo "link cut: $cut"; done < <(cuts)
  "$BIN/insync" --bootstrap "$(bootstrap)" cluster status 2>&1 || true
}

# ---- Network partitions (docs/operations.md "Network partitions") ----
# Rules live in a chain of their own, INSYNC (INSYNC-<offset> under INSYNC_PORT_OFFSET),
# jumped to from INPUT (loopback packets pass it); `heal` deletes exactly that chain. A cut
# A -> B drops the packets of the connections A opens to B's gRPC port, both ways (so A's
# calls to B time out; B's calls to A still work); both ways cut both. Rules name addresses
# and the port, so test clusters beside this one are never cut.
CHAIN="INSYNC"; [ "$OFFSET" = 0 ] || CHAIN="INSYNC-$OFFSET"

ipt() { iptables -w 10 "$@"; }

# ensure_iptables: iptables, installed with apt-get where missing; root is required.
ensure_iptables() {
  [ "$(id -u)" = 0 ] || die "network partitions change iptables rules: run as root (sudo scripts/cluster.sh ...)"
  if ! command -v iptables >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      echo "installing iptables..." >&2
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables; } >&2 || die "could not install iptables"
    fi
    command -v iptables >/dev/null 2>&1 || die "iptables not found: install it (e.g. apt-get install -y iptables)"
  fi
  ipt -S INPUT >/dev/null 2>&1 || die "iptables does not work here ($(ipt -S INPUT 2>&1 | grep -v '^# Warning' | head -n 1)): partitions need root with CAP_NET_ADMIN"
}

ensure_chain() {
  ipt -N "$CHAIN" 2>/dev/null || true
  ipt -C INPUT -j "$CHAIN" 2>/dev/null || ipt -I INPUT 1 -j "$CHAIN"
}

# node_addr NAME: the node's gRPC address as ip:port (it connects from that ip).
node_addr() {
  local kind="${1%%-*}" n="${1##*-}"
  if [ "$kind" = controller ]; then
    (( n >= 1 && n <= CONTROLLERS )) || die "no controller-$n in a $CONTROLLERS-controller cluster"
    echo "$(controller_ip "$n"):$(controller_port "$n")"
  else
    (( n >= 1 && n <= 3 )) || die "no broker $n: brokers are 1, 2, 3"
    echo "$(broker_ip "$n"):$(broker_port "$n")"
  fi
}

# cut_one FROM TO: FROM's calls to TO time out (idempotent).
cut_one() {
  local from="$1" to="$2" fa ta fip tip tport comment rule
  [ "$from" != "$to" ] || die "cannot cut $from from itself"
  fa=$(node_addr "$from"); ta=$(node_addr "$to")
  fip="${fa%:*}"; tip="${ta%:*}"; tport="${ta##*:}"; comment="$from -> $to"
  for rule in "-s $fip -d $tip -p tcp --dport $tport" "-s $tip -d $fip -p tcp --sport $tport"; do
    # shellcheck disable=SC2086 # the rule is split into its words on purpose
    ipt -C "$CHAIN" $rule -m comment --comment "$comment" -j DROP 2>/dev/null \
      || ipt -A "$CHAIN" $rule -m comment --comment "$comment" -j DROP
  done
}

# all_nodes: every node of the configured cluster.
all_nodes() { local i; for ((i = 1; i <= CONTROLLERS; i++)); do echo "controller-$i"; done; for i in "${BROKERS[@]}"; do echo "broker-$i"; done; }

cmd_partition() {
  local one_way=0 sides=() a b
  while [ $# -gt 0 ]; do
    case "$1" in
      --one-way) one_way=1; shift ;;
      -*) die "partition: unknown option '$1'" ;;
      *) sides+=("$1"); shift ;;
    esac
  done
  [ ${#sides[@]} -eq 2 ] || die "usage: cluster.sh partition A B [--one-way] (A, B: N, broker-N, controller-N, or comma lists)"
  load_config; ensure_iptables; ensure_chain
  local -a left right
  IFS=, read -r -a left <<<"${sides[0]}"; IFS=, read -r -a right <<<"${sides[1]}"
  for a in "${left[@]}"; do
    a=$(node_name "$a")
    for b in "${right[@]}"; do
      b=$(node_name "$b")
      cut_one "$a" "$b"
      if [ "$one_way" = 1 ]; then echo "cut $a -> $b (calls from $a to $b time out)"; else cut_one "$b" "$a"; echo "cut $a <-> $b"; fi
    done
  done
}

cmd_isolate() {
  [ $# -eq 1 ] || die "usage: cluster.sh isolate N"
  local name other; name=$(node_name "$1"); load_config; ensure_iptables; node_addr "$name" >/dev/null; ensure_chain
  for other in $(all_nodes); do
    [ "$other" = "$name" ] && continue
    cut_one "$name" "$other"; cut_one "$other" "$name"
  done
  echo "$name isolated from every other node (it keeps running; clients still reach it)"
}

# heal [quiet]: remove our chain (every cut); no-op without iptables or without the chain.
cmd_heal() {
  if [ "$(id -u)" != 0 ]; then
    [ "${1:-}" = quiet ] && return 0
    die "heal changes iptables rules: run as root (sudo scripts/cluster.sh heal)"
  fi
  if ! command -v iptables >/dev/null 2>&1 || ! ipt -S "$CHAIN" >/dev/null 2>&1; then
    [ "${1:-}" = quiet ] || echo "no links are cut"
    return 0
  fi
  while ipt -D INPUT -j "$CHAIN" 2>/dev/null; do :; done
  ipt -F "$CHAIN" && ipt -X "$CHAIN"
  echo "healed: every link restored"
}

# cuts: the links cut now, one per line ("a <-> b" when both ways are cut, else "a -> b").
cuts() {
  command -v iptables >/dev/null 2>&1 || return 0
  ipt -S "$CHAIN" 2>/dev/null | sed -n 's/.*--comment "\{0,1\}\([a-z0-9-]* -> [a-z0-9-]*\)"\{0,1\} .*/\1/p' | awk '!seen[$0]++' \
    | awk '{ cut[$1 " " $3] = 1; order[++n] = $1 " " $3 }
           END { for (i = 1; i <= n; i++) { split(order[i], p, " "); if (done[order[i]]) continue
                   if (cut[p[2] " " p[1]]) { print p[1] " <-> " p[2]; done[p[2] " " p[1]] = 1 } else print p[1] " -> " p[2] } }'
}

main() {
  local cmd="${1:-}"; shift || true
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_heal quiet; cmd_down "$@" ;;
    status) cmd_status ;;
    partition) cmd_partition "$@" ;;
    isolate) cmd_isolate "$@" ;;
    heal) cmd_heal ;;
    kill|stop|start|pause|resume|logs)
      [ $# -ge 1 ] || die "$cmd needs a node: N, broker-N or controller-N"
      local name; name=$(node_name "$1"); load_config
      case "$cmd" in
        kill) is_running "$name" || die "$name is not running"; kill -KILL "$(pid_of "$name")"; echo "$name: SIGKILL sent" ;;
        stop) is_running "$name" || { echo "$name is not running"; return 0; }
              local pid; pid=$(pid_of "$name"); kill -CONT "$pid" 2>/dev/null || true; kill -TERM "$pid"
              echo "$name: SIGTERM sent, waiting for it to exit..."
              wait_gone "$pid" 30 || die "$name did not exit within 30 s"; echo "$name stopped" ;;
        start) start_node "$name" ;;
        pause) is_running "$name" || die "$name is not running"; kill -STOP "$(pid_of "$name")"; echo "$name: paused (SIGSTOP)" ;;
        resume) is_running "$name" || die "$name is not running"; kill -CONT "$(pid_of "$name")"; echo "$name: resumed (SIGCONT)" ;;
        logs) [ -f "$STATE/logs/$name.log" ] || die "no log for $name"
              if [ "${2:-}" = "-f" ]; then tail -n 100 -f "$STATE/logs/$name.log"; else cat "$STATE/logs/$name.log"; fi ;;
      esac ;;
    ""|-h|--help|help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^#! \{0,1\}//; s/^# \{0,1\}//' ;;
    *) die "unknown command '$cmd' (try: up, down, status, kill, stop, start, pause, resume, logs, partition, isolate, heal)" ;;
  esac
}

main "$@"
