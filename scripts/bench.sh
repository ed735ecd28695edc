#!/usr/bin/env bash
#! scripts/bench.sh — the benchmark behind insync's speed claims: on release-mode clusters
#! (1 controller + 3 brokers, on their own ports and data directory; each run on a topic of
#! its own, deleted after it), with RF=3, min.insync.replicas=2 topics, prints a markdown table of producer
#! throughput for acks 0/1/all × 100 B and 1 KiB records on 3 partitions (one led by each
#! broker, as Kafka benchmarks spread leaders) plus single-partition rows (each the median of
#! 3 runs), one row per producer compression.type (acks=all, 1 KiB, 3 partitions; shorter
#! runs), one-in-flight acks=all latency percentiles, and the leader-failover time (SIGKILL
#! → first successful acks=all) median over 5 kills. Stops its cluster when done.
#
# Usage: scripts/bench.sh   (BENCH_RECORDS_1K, BENCH_RECORDS_100B, BENCH_RECORDS_CODEC, BENCH_KILLS, BENCH_REPEAT
#        override sizes;
#        BENCH_FRESH_CLUSTER=1 wipes and restarts the cluster before every run instead, as
#        the benchmark did before topics could be deleted, for side-by-side comparisons)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export INSYNC_CLUSTER_DIR="${INSYNC_CLUSTER_DIR:-$ROOT/.cluster-bench}"
export INSYNC_PORT_OFFSET="${INSYNC_PORT_OFFSET:-10000}"
BIN="$ROOT/target/release"
export INSYNC_BIN_DIR="$BIN"
export INSYNC_BOOTSTRAP="127.0.1.1:$((9092 + INSYNC_PORT_OFFSET)),127.0.1.2:$((9093 + INSYNC_PORT_OFFSET)),127.0.1.3:$((9094 + INSYNC_PORT_OFFSET))"
RECORDS_1K="${BENCH_RECORDS_1K:-300000}"
RECORDS_100B="${BENCH_RECORDS_100B:-2000000}"
# Records of each compression row: a few seconds a run.
RECORDS_CODEC="${BENCH_RECORDS_CODEC:-100000}"
KILLS="${BENCH_KILLS:-5}"
# Each throughput row is the median of this many runs: one run on a shared 2-core box varies
# by ±30%.
REPEAT="${BENCH_REPEAT:-3}"

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
echo "building release binaries..." >&2
(cd "$ROOT" && cargo build --release --quiet -p insync-broker -p insync-cli)

cleanup() { "$ROOT/scripts/cluster.sh" down --clean >/dev/null 2>&1 || true; }
trap cleanup EXIT
# One cluster for the whole benchmark; each run deletes its topic and waits until every
# broker has removed its logs. On a VM whose first write to a guest page faults on the host
# (Firecracker here: `dd` of 1 GB into the page cache ran at 426 MB/s cold, 5.3 GB/s warm), a
# run that comes after gigabytes of earlier data writes into cold pages and measures the VM,
# not the broker: 1 KiB acks=all on three partitions gave 100-110 MiB/s after the 100 B rows
# when nothing was deleted. Deleting the previous run's logs frees its (warm) pages for the
# next, as wiping the cluster did, and leaves no replication or write-back of it running.
FRESH="${BENCH_FRESH_CLUSTER:-0}"
fresh_cluster() {
  cleanup
  "$ROOT/scripts/cluster.sh" up >/dev/null 2>&1 || { echo "cluster.sh up failed" >&2; exit 1; }
}
fresh_cluster
if [ "$FRESH" = 1 ]; then echo "cluster up (a fresh one for every run)" >&2; else echo "cluster up (topics deleted between runs)" >&2; fi
RUN=0
# drop_topic TOPIC: delete it and wait (60 s at most) until no broker directory holds its logs.
drop_topic() {
  local topic="$1" deadline=$((SECONDS + 60))
  "$BIN/insync" topic delete "$topic" >/dev/null || { echo "topic delete $topic failed" >&2; exit 1; }
  while compgen -G "$INSYNC_CLUSTER_DIR/broker-*/$topic-*" >/dev/null; do
    ((SECONDS < deadline)) || { echo "logs of $topic still on disk after 60 s" >&2; exit 1; }
    sleep 0.2
  done
}

field() { sed -n "s/.*\"$1\":\([-0-9.e]*\).*/\1/p"; }
run_perf() { # partitions acks size records [extra flags...] -> json line
  local partitions="$1" acks="$2" size="$3" records="$4"; shift 4
  RUN=$((RUN + 1))
  local topic="bench-$acks-$size-$partitions-$RUN" out
  [ "$FRESH" = 1 ] && fresh_cluster
  "$BIN/insync" topic create "$topic" --partitions "$partitions" --replication-factor 3 --min-insync-replicas 2 >/dev/null
  out=$("$BIN/insync-producer" perf --topic "$topic" --num-records "$records" --record-size "$size" --acks "$acks" --json "$@" 2>/dev/null)
  drop_topic "$topic"
  echo "$out"
}
echo "| acks | record size | partitions | records/s | MiB/s | avg ms | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|---|---|---|---|"
median_run() { # partitions acks size records [extra flags...]: the run with the median MiB/s of REPEAT runs
  local runs=() i
  for ((i = 0; i < REPEAT; i++)); do runs+=("$(run_perf "$@")"); done
  for r in "${runs[@]}"; do printf '%s %s\n' "$(field mib_per_sec <<<"$r")" "$r"; done |
    sort -g | sed -n "$(((REPEAT + 1) / 2))p" | cut -d' ' -f2-
}
numbers() { # json -> "records/s | MiB/s | avg | p50 | p99 | max |"
  printf '%.0f | %.1f | %.2f | %.2f | %.2f | %.2f |' "$(field records_per_sec <<<"$1")" "$(field mib_per_sec <<<"$1")" \
    "$(field avg_ms <<<"$1")" "$(field p50_ms <<<"$1")" "$(field p99_ms <<<"$1")" "$(field max_ms <<<"$1")"
}
row() { # partitions acks size records
  printf '| %s | %s B | %s | %s\n' "$2" "$3" "$1" "$(numbers "$(median_run "$@")")"
}
for size in 100 1024; do
  records=$RECORDS_1K; [ "$size" = 100 ] && records=$RECORDS_100B
  for acks in 0 1 all; do row 3 "$acks" "$size" "$records"; done
done
for acks in 0 1 all; do row 1 "$acks" 1024 "$RECORDS_1K"; done
echo
# MiB/s counts the records before compression; every record carries the same payload (as in
# kafka-producer-perf-test), so batches compress far better than real data would.
echo "| compression.type (acks=all, 1 KiB, 3 partitions, $RECORDS_CODEC records) | records/s | MiB/s | avg ms | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|---|---|"
for codec in none gzip snappy lz4 zstd; do
  printf '| %s | %s\n' "$codec" "$(numbers "$(median_run 3 all 1024 "$RECORDS_CODEC" --compression-type "$codec")")"
done
echo
out=$(run_perf 1 all 1024 5000 --max-in-flight 1 --linger-ms 0)
echo "| one in flight, acks=all, 1 KiB | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms |"
echo "|---|---|---|---|---|---|"
printf '| %s records | %.3f | %.3f | %.3f | %.3f | %.3f |\n' "$(field records <<<"$out")" "$(field p50_ms <<<"$out")" \
  "$(field p95_ms <<<"$out")" "$(field p99_ms <<<"$out")" "$(field p999_ms <<<"$out")" "$(field max_ms <<<"$out")"
echo
[ "$FRESH" = 1 ] && fresh_cluster
failover=$("$ROOT/scripts/failover-time.sh" "$KILLS" | tail -1)
echo "| leader failover (SIGKILL → first successful acks=all), $KILLS kills | median ms | max ms |"
echo "|---|---|---|"
printf '| session timeout 3000 ms | %s | %s |\n' "$(sed -n 's/.*median \([0-9]*\) ms.*/\1/p' <<<"$failover")" \
  "$(sed -n 's/.*max \([0-9]*\) ms.*/\1/p' <<<"$failover")"
