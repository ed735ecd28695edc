#! tests/clients/matrix_common.py — what the Python matrix clients share: the command line,
#! the JSON-lines output every matrix client prints, the codecs and the value check.
#!
#! Every client is run as `CLIENT MODE BOOTSTRAP TOPIC GROUP ARG` (see tests/clients/README.md):
#!   produce  TOPIC is a prefix: ARG records value(codec, i) to TOPIC-<codec> per codec, acks=all,
#!            then each topic read back from offset 0; prints {"step": ..., "ok": ...} lines.
#!   member   one member named ARG of GROUP on TOPIC until killed: "assigned" and "record" lines.
#!   commit   reads partition 0 of TOPIC in GROUP to offset ARG-1, commits ARG, exits.
#!   seek     committed() of partition 0 in GROUP, seek there, read ARG records.
#!   resume   reads partition 0 of TOPIC in GROUP (auto.offset.reset=earliest) to offset ARG-1.
import json
import sys
import time

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# Every wait of a client is bounded: the test kills it too, but a client never hangs alone.
READ_TIMEOUT_S = 20.0
MEMBER_LIFETIME_S = 150.0


def emit(**fields):
    """One JSON line on stdout, flushed at once (the test reads it while the client runs)."""
    print(json.dumps(fields), flush=True)


def args():
    if len(sys.argv) != 6:
        sys.exit(f"usage: {sys.argv[0]} produce|member|commit|seek|resume BOOTSTRAP TOPIC GROUP ARG")
    mode, bootstrap, topic, group, arg = sys.argv[1:6]
    return mode, bootstrap, topic, group, arg


def step(name, error):
    """A produce-mode result line: ok, or the client's error text."""
    if error:
        emit(step=name, ok=False, error=str(error))
    else:
        emit(step=name, ok=True)


# 128 compressible bytes after "<codec>-<i>-": clients send a batch uncompressed when the
# codec would not make it smaller (librdkafka does), so tiny values would test nothing.
PADDING = "abcdefgh" * 16


def value(codec, i):
    return f"{codec}-{i}-{PADDING}"


def check_values(got, codec, n):
    """`got` is [(offset, value)] read from offset 0: it must be exactly the n values sent."""
    want = [(i, value(codec, i)) for i in range(n)]
    if got == want:
        return None
    return f"read {len(got)} records, want {n}: first unexpected {[g for g in got if g not in want][:2]}"


def record(member, partition, offset, value):
    emit(event="record", member=member, partition=partition, offset=offset, value=value)


def deadline(seconds=READ_TIMEOUT_S):
    return time.monotonic() + seconds


def fail(error):
    emit(event="error", error=str(error))
    sys.exit(1)
