#!/usr/bin/env bash
#! tests/clients/kcat_matrix.sh — the client matrix driven with kcat (Debian's, librdkafka
#! inside): same command line and JSON-lines output as the other clients (matrix_common.py).
#! kcat is a command-line tool, so some steps are done as far as it allows (said below):
#!  - kcat exposes no committed-offset query and no FindCoordinator: `seek` reads the
#!    committed offset as the position a non-committing `-G` consumer starts from
#!    (librdkafka's OffsetFetch), then seeks there explicitly with `-C -o OFFSET`;
#!  - `commit` commits through librdkafka's auto-commit of the stored offsets when `-c N`
#!    ends the consumer (close commits them); kcat does not say whether that commit worked.
#! Usage: kcat_matrix.sh MODE BOOTSTRAP TOPIC GROUP ARG
set -uo pipefail
[ $# -eq 5 ] || { echo "usage: $0 produce|member|commit|seek|resume BOOTSTRAP TOPIC GROUP ARG" >&2; exit 2; }
mode=$1 bootstrap=$2 topic=$3 group=$4 arg=$5
# Every kcat run is bounded; the test also kills this process group.
read_timeout=20
# session.timeout.ms 6000: Kafka's group.min.session.timeout.ms; the range assignor; -u:
# unbuffered output, so the test sees each record as it is consumed.
group_flags=(-u -X session.timeout.ms=6000 -X heartbeat.interval.ms=1000 -X max.poll.interval.ms=20000
  -X auto.offset.reset=earliest -X partition.assignment.strategy=range -X auto.commit.interval.ms=500)
# A reader that must leave the committed offset alone: kcat commits the offsets it stored
# when it closes, so neither store nor commit them.
no_commit=(-X enable.auto.commit=false -X enable.auto.offset.store=false)

emit_step() { # name, error text (empty: ok)
  if [ -z "$2" ]; then
    printf '{"step":"%s","ok":true}\n' "$1"
  else
    printf '{"step":"%s","ok":false,"error":"%s"}\n' "$1" "$(printf '%s' "$2" | tr -d '"\\' | tr '\n' ' ')"
  fi
}

record_format() { # member name: one JSON line per record (values are the test's own ASCII)
  printf '{"event":"record","member":"%s","partition":%%p,"offset":%%o,"value":"%%s"}\\n' "$1"
}

# 128 compressible bytes after "<codec>-<i>-" (as matrix_common.py): librdkafka sends a batch
# uncompressed when the codec would not make it smaller, so tiny values would test nothing.
padding=$(printf 'abcdefgh%.0s' {1..16})

# ARG values "<codec>-<i>-<padding>" with acks=all to TOPIC-<codec> partition 0.
# Returns 0 when sent compressed, 1 when refused, 2 when librdkafka did not compress.
produce_codec() { # codec
  local codec=$1 t="$topic-$1" z=() err
  [ "$codec" = none ] || z=(-z "$codec")
  err=$(seq 0 $((arg - 1)) | sed "s/^\(.*\)$/$codec-\1-$padding/" |
    timeout "$read_timeout" kcat -b "$bootstrap" -P -t "$t" -p 0 "${z[@]}" -X acks=all -X message.timeout.ms=15000 -d msg 2>&1)
  local rc=$?
  # -d msg: librdkafka's debug lines ("%7|...") say whether a batch went out compressed.
  local said
  said=$(grep -v '^%7|' <<<"$err")
  if [ $rc -ne 0 ] || grep -qi -E 'fail|error' <<<"$said"; then
    emit_step "produce-$codec" "kcat exit $rc: $said"
    return 1
  fi
  if grep -q 'not compressing batch' <<<"$err"; then
    # librdkafka up to 2.11 (Debian's kcat has 2.0) compresses with gzip/snappy/lz4 only when
    # the broker advertises Produce v0; insync advertises it for exactly this reason
    # (crates/broker/src/kafka/api_versions.rs), so an uncompressed batch here is a failure.
    emit_step "produce-$codec" "kcat's librdkafka sent the batch uncompressed: $(grep -m1 'not compressing' <<<"$err")"
    return 1
  fi
  emit_step "produce-$codec" ""
}

read_back() { # codec: TOPIC-<codec> from offset 0 must hold exactly the values sent
  local codec=$1 got want
  got=$(timeout "$read_timeout" kcat -b "$bootstrap" -C -t "$topic-$codec" -p 0 -o beginning -c "$arg" -e -q -f '%o %s\n' 2>&1)
  want=$(seq 0 $((arg - 1)) | awk -v c="$codec" -v p="$padding" '{print $1 " " c "-" $1 "-" p}')
  if [ "$got" = "$want" ]; then emit_step "consume-$codec" ""; else emit_step "consume-$codec" "read: $(head -c 300 <<<"$got")"; fi
}

# kcat reports its group's assignments on stderr ("% Group G rebalanced (memberid M):
# assigned: T [0], T [3]"): turned into the matrix's "assigned" lines.
assignments() { # member name
  local line parts
  while IFS= read -r line; do
    case "$line" in
      *rebalanced*assigned:*)
        parts=$(grep -o '\[[0-9]*\]' <<<"${line#*assigned:}" | tr -d '[]' | paste -sd, -)
        printf '{"event":"assigned","member":"%s","partitions":[%s]}\n' "$1" "$parts" ;;
      *ERROR*|*error*) printf '{"event":"warning","member":"%s","error":"%s"}\n' "$1" "$(tr -d '"\\' <<<"$line")" ;;
    esac
  done
}

case "$mode" in
  produce)
    for codec in none gzip snappy lz4 zstd; do
      produce_codec "$codec"
      case $? in
        0) read_back "$codec" ;;
        1) emit_step "consume-$codec" "not read: produce failed" ;;
      esac
    done ;;
  member)
    # exec: the test's SIGKILL reaches kcat itself, which then cannot leave the group.
    exec timeout 150 kcat -b "$bootstrap" -G "$group" "${group_flags[@]}" -f "$(record_format "$arg")" "$topic" \
      2> >(assignments "$arg") ;;
  commit)
    # -c N: exit after N records; closing the consumer commits the stored offset N.
    timeout 60 kcat -b "$bootstrap" -G "$group" "${group_flags[@]}" -c "$arg" -f "$(record_format commit)" "$topic" \
      2> >(assignments commit) || { printf '{"event":"error","error":"kcat -G -c %s failed"}\n' "$arg"; exit 1; }
    printf '{"event":"committed","partition":0,"offset":%s}\n' "$arg" ;;
  seek)
    # No committed() in kcat: a -G consumer that commits nothing starts at the committed
    # offset; its first record's offset is that offset. Then an explicit seek (-o) there.
    first=$(timeout 30 kcat -b "$bootstrap" -G "$group" "${group_flags[@]}" "${no_commit[@]}" -c 1 -f '%p %o\n' "$topic" 2>/dev/null)
    [ "${first%% *}" = 0 ] || { printf '{"event":"error","error":"no record from the group consumer: %s"}\n' "$first"; exit 1; }
    committed=${first#* }
    printf '{"event":"committed","partition":0,"offset":%s,"derived":"first offset of a -G consumer"}\n' "$committed"
    timeout "$read_timeout" kcat -b "$bootstrap" -C -t "$topic" -p 0 -o "$committed" -c "$arg" -e -q -f "$(record_format seek)" ;;
  resume)
    # -e: exit once every assigned partition is at its end (offset ARG-1 was the last).
    timeout 60 kcat -b "$bootstrap" -G "$group" "${group_flags[@]}" "${no_commit[@]}" -e -f "$(record_format resume)" "$topic" \
      2> >(assignments resume) ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
printf '{"event":"done"}\n'
