#!/usr/bin/env bash
#! scripts/bench.sh — the benchmark behind insync's speed claims: on release-mode clusters
#! (1 controller + 3 brokers, on their own ports and data directory; each run on a topic of
#! its own, deleted after it), with RF=3, min.insync.replicas=2 topics, prints a markdown table of producer
#! throughput for acks 0/1/all × 100 B and 1 KiB records on 3 partitions (one led by each
#! broker, as Kafka benchmarks spread leaders) plus single-partition rows (each the median of
#! 3 runs), one row per producer compression.type (acks=all, 1 KiB, 3 partitions; shorter
#! runs), each with the brokers' peak RSS and CPU per MiB; one-in-flight acks=all latency
#! percentiles; scaling rows (1/3/12/48 partitions, 1/2/4/8 producers); consumer throughput
#! from the page cache (`insync consume --perf`) and end-to-end latency
#! (`insync-producer end-to-end`); and the leader-failover time (SIGKILL → first successful
#! acks=all) median and max over 20 kills, split into detection, election and the new
#! leader being ready (medians). Stops its cluster when done.
#
# Usage: scripts/bench.sh   (BENCH_BIN_DIR runs another build's binaries; BENCH_RECORDS_1K, BENCH_RECORDS_100B, BENCH_RECORDS_CODEC, BENCH_RECORDS_SCALE,
#        BENCH_CONSUME_MIB, BENCH_RECORDS_E2E, BENCH_KILLS, BENCH_REPEAT override sizes;
#        BENCH_FRESH_CLUSTER=1 wipes and restarts the cluster before every run instead, as
#        the benchmark did before topics could be deleted, for side-by-side comparisons)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export INSYNC_CLUSTER_DIR="${INSYNC_CLUSTER_DIR:-$ROOT/.cluster-bench}"
export INSYNC_PORT_OFFSET="${INSYNC_PORT_OFFSET:-10000}"
# BENCH_BIN_DIR: run another build's binaries (a before/after comparison); nothing is built.
BIN="${BENCH_BIN_DIR:-$ROOT/target/release}"
if [ -n "${BENCH_BIN_DIR:-}" ]; then
  BIN=$(cd "$BENCH_BIN_DIR" && pwd) || { echo "BENCH_BIN_DIR $BENCH_BIN_DIR: no such directory" >&2; exit 1; }
  [ -x "$BIN/insync-broker" ] || { echo "BENCH_BIN_DIR $BIN has no insync-broker" >&2; exit 1; }
fi
export INSYNC_BIN_DIR="$BIN"
export INSYNC_BOOTSTRAP="127.0.1.1:$((9092 + INSYNC_PORT_OFFSET)),127.0.1.2:$((9093 + INSYNC_PORT_OFFSET)),127.0.1.3:$((9094 + INSYNC_PORT_OFFSET))"
RECORDS_1K="${BENCH_RECORDS_1K:-300000}"
RECORDS_100B="${BENCH_RECORDS_100B:-2000000}"
# Records of each compression row: a few seconds a run.
RECORDS_CODEC="${BENCH_RECORDS_CODEC:-100000}"
KILLS="${BENCH_KILLS:-20}"
# Records of each scaling row, MiB read by the consumer row, records of the end-to-end row.
RECORDS_SCALE="${BENCH_RECORDS_SCALE:-150000}"
CONSUME_MIB="${BENCH_CONSUME_MIB:-1024}"
RECORDS_E2E="${BENCH_RECORDS_E2E:-5000}"
# Each throughput row is the median of this many runs: one run on a shared 2-core box varies
# by ±30%.
REPEAT="${BENCH_REPEAT:-3}"

if [ -z "${BENCH_BIN_DIR:-}" ]; then
  if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
  echo "building release binaries..." >&2
  (cd "$ROOT" && cargo build --release --quiet -p insync-broker -p insync-cli)
fi

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
# cluster.sh sizes each node's threads (docs/benchmarks.md, "Threads per node"); say how.
grep -o -- '--worker-threads [0-9]*' "$INSYNC_CLUSTER_DIR/config" 2>/dev/null | sed 's/^/each node: /' >&2 || true
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
broker_pids() { cat "$INSYNC_CLUSTER_DIR"/pids/broker-*.pid 2>/dev/null; }
# CPU ticks (user + system) of every broker process so far.
broker_ticks() { local pid t=0 f; for pid in $(broker_pids); do f=($(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null || true)); t=$((t + ${f[11]:-0} + ${f[12]:-0})); done; echo "$t"; }
# Resets each broker's peak RSS (clear_refs 5), so that VmHWM afterwards is this run's.
reset_peak_rss() { local pid; for pid in $(broker_pids); do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true; done; }
# The largest broker's peak RSS (MiB) since reset_peak_rss.
peak_rss() { local pid kb max=0; for pid in $(broker_pids); do kb=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true); kb=${kb:-0}; ((kb > max)) && max=$kb; done; echo $((max / 1024)); }
# Waits (10 s at most) until the brokers are idle again — followers still replicating after
# an acks=0/1 producer exits — so that their CPU counts the whole run.
wait_brokers_idle() { local before after i; before=$(broker_ticks); for ((i = 0; i < 100; i++)); do sleep 0.1; after=$(broker_ticks); ((after - before <= 1)) && return; before=$after; done; }
TICK=$(getconf CLK_TCK)
run_perf() { # partitions acks size records [extra flags...] -> json line, with the brokers' peak RSS and CPU per MiB
  local partitions="$1" acks="$2" size="$3" records="$4"; shift 4
  # A name of its own (RUN, counted in a subshell here, repeats): never a topic being deleted.
  local topic="bench-$acks-$size-$partitions-$(date +%s%N)" out ticks mib
  [ "$FRESH" = 1 ] && fresh_cluster
  "$BIN/insync" topic create "$topic" --partitions "$partitions" --replication-factor 3 --min-insync-replicas 2 >/dev/null
  reset_peak_rss
  ticks=$(broker_ticks)
  out=$("$BIN/insync-producer" perf --topic "$topic" --num-records "$records" --record-size "$size" --acks "$acks" --json "$@" 2>/dev/null)
  wait_brokers_idle
  ticks=$(($(broker_ticks) - ticks))
  mib=$(awk -v r="$records" -v s="$size" 'BEGIN {print r * s / 1048576}')
  # CPU of all three brokers per MiB of records produced (each MiB is written three times),
  # counted until they are idle again; the largest broker's peak RSS during the run.
  out="${out%\}},\"rss_mib\":$(peak_rss),\"cpu_ms_per_mib\":$(awk -v t="$ticks" -v hz="$TICK" -v m="$mib" 'BEGIN {printf "%.1f", t * 1000 / hz / m}')}"
  drop_topic "$topic"
  echo "$out"
}
echo "| acks | record size | partitions | records/s | MiB/s | avg ms | p50 ms | p99 ms | max ms | largest broker peak RSS MiB | brokers' CPU ms/MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
median_run() { # partitions acks size records [extra flags...]: the run with the median MiB/s of REPEAT runs
  local runs=() i
  for ((i = 0; i < REPEAT; i++)); do runs+=("$(run_perf "$@")"); done
  for r in "${runs[@]}"; do printf '%s %s\n' "$(field mib_per_sec <<<"$r")" "$r"; done |
    sort -g | sed -n "$(((REPEAT + 1) / 2))p" | cut -d' ' -f2-
}
numbers() { # json -> "records/s | MiB/s | avg | p50 | p99 | max | RSS | CPU/MiB |"
  printf '%.0f | %.1f | %.2f | %.2f | %.2f | %.2f | %s | %s |' "$(field records_per_sec <<<"$1")" "$(field mib_per_sec <<<"$1")" \
    "$(field avg_ms <<<"$1")" "$(field p50_ms <<<"$1")" "$(field p99_ms <<<"$1")" "$(field max_ms <<<"$1")" \
    "$(field rss_mib <<<"$1")" "$(field cpu_ms_per_mib <<<"$1")"
}
GRPC_ALL_1K=""
row() { # partitions acks size records
  local out; out=$(median_run "$@")
  [ "$1/$2/$3" = "3/all/1024" ] && GRPC_ALL_1K=$(field mib_per_sec <<<"$out")
  printf '| %s | %s B | %s | %s\n' "$2" "$3" "$1" "$(numbers "$out")"
}
for size in 100 1024; do
  records=$RECORDS_1K; [ "$size" = 100 ] && records=$RECORDS_100B
  for acks in 0 1 all; do row 3 "$acks" "$size" "$records"; done
done
for acks in 0 1 all; do row 1 "$acks" 1024 "$RECORDS_1K"; done
echo
# The Kafka listener driven by librdkafka: kcat -P sends a prepared file of 1 KiB lines
# (acks=all, librdkafka's defaults otherwise: linger.ms 5, batches up to 1 MB, no
# idempotence); MiB/s from start to exit (kcat waits for every delivery), median of REPEAT,
# and the share of the gRPC producer's acks=all 1 KiB 3-partition row above.
# (`scripts/install-kafka-clients.sh` installs kcat; the benchmark does not install anything.)
kcat_input="$INSYNC_CLUSTER_DIR/kcat-input"; line=$(printf '%*s' 1024 '' | tr ' ' x)
kcat_run() { # -> MiB/s, or why not
  local topic start end written
  topic="bench-kcat-$(date +%s%N)"
  [ "$FRESH" = 1 ] && fresh_cluster
  "$BIN/insync" topic create "$topic" --partitions 3 --replication-factor 3 --min-insync-replicas 2 >/dev/null
  start=$(date +%s%N)
  timeout 180 kcat -P -b "127.0.0.1:$((19092 + INSYNC_PORT_OFFSET))" -t "$topic" -X acks=all \
    -X message.timeout.ms=60000 -l "$kcat_input" >&2 || true
  end=$(date +%s%N)
  written=$("$BIN/insync" --json topic describe "$topic" | field high_watermark | awk '{s += $1} END {print s + 0}')
  drop_topic "$topic"
  # Retries without idempotence may write a record twice: fewer is a failure, more is not.
  if ((written < RECORDS_1K)); then echo "failed ($written of $RECORDS_1K written)"; return; fi
  awk -v r="$RECORDS_1K" -v ns=$((end - start)) 'BEGIN {printf "%.1f", r * 1024 / 1048576 / (ns / 1e9)}'
}
kcat_runs=()
if command -v kcat >/dev/null 2>&1; then
  awk -v n="$RECORDS_1K" -v l="$line" 'BEGIN {for (i = 0; i < n; i++) print l}' >"$kcat_input"
  for ((i = 0; i < REPEAT; i++)); do kcat_runs+=("$(kcat_run)"); done
  rm -f "$kcat_input"
else
  kcat_runs=("n/a: kcat not installed (scripts/install-kafka-clients.sh)")
fi
kcat_median=$(printf '%s\n' "${kcat_runs[@]}" | sort -g | sed -n "$(((REPEAT + 1) / 2))p")
echo "| Kafka listener, acks=all, 1 KiB, 3 partitions, $RECORDS_1K records | MiB/s (median) | runs | share of the gRPC row |"
echo "|---|---|---|---|"
printf '| kcat -P (librdkafka) | %s | %s | %s |\n' "$kcat_median" "${kcat_runs[*]}" \
  "$(awk -v k="$kcat_median" -v g="$GRPC_ALL_1K" 'BEGIN {if (g > 0 && k + 0 > 0) printf "%.0f%%", 100 * k / g; else print "n/a"}')"
echo
# MiB/s counts the records before compression; every record carries the same payload (as in
# kafka-producer-perf-test), so batches compress far better than real data would.
echo "| compression.type (acks=all, 1 KiB, 3 partitions, $RECORDS_CODEC records) | records/s | MiB/s | avg ms | p50 ms | p99 ms | max ms | largest broker peak RSS MiB | brokers' CPU ms/MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
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
# Scaling: acks=all 1 KiB as the partitions grow (one producer) and as producers grow (3
# partitions). docs/benchmarks.md explains the knees.
echo "| scaling, acks=all 1 KiB, $RECORDS_SCALE records | records/s | MiB/s | avg ms | p50 ms | p99 ms | max ms | largest broker peak RSS MiB | brokers' CPU ms/MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
for partitions in 1 3 12 48; do
  printf '| %s partitions, 1 producer | %s\n' "$partitions" "$(numbers "$(median_run "$partitions" all 1024 "$RECORDS_SCALE")")"
done
for producers in 1 2 4 8; do
  printf '| 3 partitions, %s producers | %s\n' "$producers" "$(numbers "$(median_run 3 all 1024 "$RECORDS_SCALE" --producers "$producers")")"
done
echo
# Consumers, as kafka-consumer-perf-test reads: CONSUME_MIB of 1 KiB records on 3 partitions,
# read from the beginning 3 times from the page cache (median), then end-to-end latency
# (produce acks=all, read back by a parked fetch) one record at a time, as Kafka's
# EndToEndLatency tool.
RUN=$((RUN + 1)); topic="bench-consume-$RUN"
consume_records=$((CONSUME_MIB * 1024))
"$BIN/insync" topic create "$topic" --partitions 3 --replication-factor 3 --min-insync-replicas 2 >/dev/null
"$BIN/insync-producer" perf --topic "$topic" --num-records "$consume_records" --record-size 1024 --acks 1 --json >/dev/null 2>&1
runs=()
for ((i = 0; i < REPEAT; i++)); do
  runs+=("$("$BIN/insync" --json consume "$topic" --from-beginning --perf --max-messages "$consume_records" --idle-timeout-ms 10000)")
done
consumed=$(for r in "${runs[@]}"; do printf '%s %s\n' "$(field mib_per_sec <<<"$r")" "$r"; done | sort -g | sed -n "$(((REPEAT + 1) / 2))p" | cut -d' ' -f2-)
echo "| consumer (insync consume --perf), $CONSUME_MIB MiB of 1 KiB records, 3 partitions | records | MiB/s | records/s |"
echo "|---|---|---|---|"
printf '| from the page cache, median of %s | %s | %.1f | %.0f |\n' "$REPEAT" "$(field records <<<"$consumed")" \
  "$(field mib_per_sec <<<"$consumed")" "$(field records_per_sec <<<"$consumed")"
drop_topic "$topic"
echo
echo "| end-to-end latency (acks=all, 1 KiB, one in flight) | p50 ms | p99 ms | p99.9 ms | max ms |"
echo "|---|---|---|---|---|"
if grep -q '^ *end-to-end' <<<"$("$BIN/insync-producer" --help 2>&1)"; then
  RUN=$((RUN + 1)); topic="bench-e2e-$RUN"
  "$BIN/insync" topic create "$topic" --partitions 1 --replication-factor 3 --min-insync-replicas 2 >/dev/null
  out=$("$BIN/insync-producer" end-to-end --topic "$topic" --num-records "$RECORDS_E2E" --record-size 1024 --acks all --json) ||
    out='{"records":0}'
  drop_topic "$topic"
  printf '| %s records | %.3f | %.3f | %.3f | %.3f |\n' "$(field records <<<"$out")" "$(field p50_ms <<<"$out")" \
    "$(field p99_ms <<<"$out")" "$(field p999_ms <<<"$out")" "$(field max_ms <<<"$out")"
else
  echo "| n/a: this build has no insync-producer end-to-end | | | | |"
fi
echo
[ "$FRESH" = 1 ] && fresh_cluster
failover_out=$("$ROOT/scripts/failover-time.sh" "$KILLS")
failover=$(tail -1 <<<"$failover_out")
timeline=$(grep '^timeline medians' <<<"$failover_out" || true)
split() { sed -n "s/.*$1 \([0-9-]*\) ms.*/\1/p" <<<"$timeline"; }
echo "| leader failover (SIGKILL → first successful acks=all), $KILLS kills | median ms | max ms | detected | elected | leader ready |"
echo "|---|---|---|---|---|---|"
printf '| session timeout 3000 ms | %s | %s | %s | %s | %s |\n' "$(sed -n 's/.*median \([0-9]*\) ms.*/\1/p' <<<"$failover")" \
  "$(sed -n 's/.*max \([0-9]*\) ms.*/\1/p' <<<"$failover")" "$(split detected)" "$(split elected)" "$(split 'leader ready')"
