#!/usr/bin/env bash
#! scripts/failover-time.sh — measures leader failover on the running local cluster: for each
#! round, SIGKILL the leader of a RF=3, min.insync.replicas=2 partition and time until an
#! acks=all produce succeeds again (the producer follows leadership by itself), then restart
#! the killed broker and wait for the ISR to be whole again. Prints each round, with the
#! timeline split read from the nodes' logs (detection: the controller sees the broker's
#! session stream close; election: the FenceBroker entry that moves leadership is applied;
#! leader ready: the new leader's broker applied that metadata; client: the producer's first
#! success), then the median / max in milliseconds and the median of each split.
#
# Usage: scripts/cluster.sh up && scripts/failover-time.sh [ROUNDS (default 10)]
# Honors INSYNC_BIN_DIR / INSYNC_CLUSTER_DIR / INSYNC_PORT_OFFSET like cluster.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${INSYNC_BIN_DIR:-$ROOT/target/release}"
OFFSET="${INSYNC_PORT_OFFSET:-0}"
ROUNDS="${1:-10}"
export INSYNC_BOOTSTRAP="127.0.1.1:$((9092 + OFFSET)),127.0.1.2:$((9093 + OFFSET)),127.0.1.3:$((9094 + OFFSET))"
TOPIC="failover-time-$(date +%s)"
CLUSTER="$ROOT/scripts/cluster.sh"
LOGS="${INSYNC_CLUSTER_DIR:-$ROOT/.cluster}/logs"

now_ms() { date +%s%3N; }
leader() { "$BIN/insync" topic describe "$TOPIC" --json 2>/dev/null | sed -n 's/.*"leader":\([0-9-]*\).*/\1/p' | head -1; }
isr_whole() { "$BIN/insync" topic describe "$TOPIC" --json 2>/dev/null | grep -q '"isr":\[[0-9]*,[0-9]*,[0-9]*\]'; }
# log_ms FILE PATTERN SINCE_MS: the time (epoch ms) of the first line of FILE matching PATTERN
# stamped at or after SINCE_MS (tracing's RFC 3339 UTC stamps), or "-".
log_ms() {
  local stamp ms
  while IFS= read -r stamp; do
    ms=$(date -d "$stamp" +%s%3N 2>/dev/null) || continue
    if ((ms >= $3)); then echo "$ms"; return; fi
  done < <(grep -a -- "$2" "$1" 2>/dev/null | sed -n 's/^\([0-9TZ:.-]*\).*/\1/p')
  echo "-"
}
since() { if [ "$1" = "-" ]; then echo "-"; else echo $(($1 - $2)); fi; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
wait_until() { local deadline=$((SECONDS + $1)); shift; until "$@"; do ((SECONDS < deadline)) || return 1; sleep 0.2; done; }

"$BIN/insync" topic create "$TOPIC" --partitions 1 --replication-factor 3 --min-insync-replicas 2 >/dev/null
"$BIN/insync-producer" --topic "$TOPIC" --acks all warm-up >/dev/null
times=()
splits=()
for ((round = 1; round <= ROUNDS; round++)); do
  wait_until 60 isr_whole || { echo "round $round: ISR not whole after 60 s" >&2; exit 1; }
  old=$(leader)
  # The clock starts as the kill is sent: the controller may see the death before
  # `cluster.sh kill` returns.
  start=$(now_ms)
  "$CLUSTER" kill "$old" >/dev/null
  out=$("$BIN/insync-producer" --topic "$TOPIC" --acks all --delivery-timeout-ms 60000 "round-$round")
  took=$(($(now_ms) - start))
  case "$out" in ok*) ;; *) echo "round $round: produce failed: $out" >&2; exit 1 ;; esac
  new=$(leader)
  controller_logs=("$LOGS"/controller-*.log)
  detect=$(since "$(log_ms "${controller_logs[0]}" "broker $old's session stream closed" "$start")" "$start")
  elect=$(since "$(log_ms "${controller_logs[0]}" "fenced broker $old:" "$start")" "$start")
  ready=$(since "$(log_ms "$LOGS/broker-$new.log" "$TOPIC-0: became leader" "$start")" "$start")
  echo "round $round: killed leader $old -> new leader $new, first acks=all success after $took ms" \
    "(detected $detect ms, elected $elect ms, leader ready $ready ms, client $took ms)"
  times+=("$took")
  splits+=("$detect $elect $ready")
  "$CLUSTER" start "$old" >/dev/null
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
n=${#sorted[@]}
if ((n % 2)); then median=${sorted[n / 2]}; else median=$(((sorted[n / 2 - 1] + sorted[n / 2]) / 2)); fi
split_median() { printf '%s\n' "${splits[@]}" | awk -v f="$1" '$f != "-" {print $f}' | median; }
echo "timeline medians: detected $(split_median 1) ms, elected $(split_median 2) ms, leader ready $(split_median 3) ms, client ${median} ms"
echo "failover (SIGKILL leader -> first successful acks=all produce) over $n kills: median ${median} ms, max ${sorted[n - 1]} ms"
