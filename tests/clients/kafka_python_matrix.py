#!/usr/bin/env python3
#! tests/clients/kafka_python_matrix.py — the client matrix with kafka-python (pure Python;
#! its codecs come from lz4, zstandard and cramjam/python-snappy): see matrix_common.py.
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.structs import OffsetAndMetadata

from matrix_common import CODECS, MEMBER_LIFETIME_S, args, check_values, deadline, emit, fail, record, step, value


def produce_codec(bootstrap, topic, codec, n):
    try:
        p = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=20,
                          compression_type=None if codec == "none" else codec)
        futures = [p.send(topic, value(codec, i).encode(), partition=0) for i in range(n)]
        p.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)
        p.close(timeout=10)
        return None
    except Exception as e:  # the client's own error text is the step's result
        return f"{type(e).__name__}: {e}"


def read_back(bootstrap, topic, codec, n):
    c = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False, group_id=None)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got, end = [], deadline()
        while len(got) < n and time.monotonic() < end:
            for records in c.poll(timeout_ms=500).values():
                got.extend((m.offset, m.value.decode()) for m in records)
        return check_values(got, codec, n)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    finally:
        c.close()


def group_consumer(bootstrap, group, auto_commit):
    # session_timeout_ms 6000: Kafka's group.min.session.timeout.ms; the range assignor.
    return KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=group, session_timeout_ms=6000,
                         heartbeat_interval_ms=1000, max_poll_interval_ms=20000, auto_offset_reset="earliest",
                         enable_auto_commit=auto_commit, auto_commit_interval_ms=500,
                         partition_assignment_strategy=[RangePartitionAssignor])


class Printer(ConsumerRebalanceListener):
    def __init__(self, name):
        self.name = name

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        emit(event="assigned", member=self.name, partitions=sorted(tp.partition for tp in assigned))


def member(bootstrap, topic, group, name, stop_at=None):
    """A group member; with stop_at, ends after reading partition 0 up to offset stop_at-1."""
    c = group_consumer(bootstrap, group, auto_commit=stop_at is None)
    c.subscribe([topic], listener=Printer(name))
    end = time.monotonic() + MEMBER_LIFETIME_S
    while time.monotonic() < end:
        for records in c.poll(timeout_ms=500).values():
            for m in records:
                record(name, m.partition, m.offset, m.value.decode())
                if stop_at is not None and m.partition == 0 and m.offset >= stop_at - 1:
                    coordinator(c)
                    return c
    if stop_at is not None:
        fail(f"did not reach offset {stop_at - 1} of partition 0 in {MEMBER_LIFETIME_S}s")
    return c


def coordinator(c):
    # The broker the client found with FindCoordinator (a private field: no public API;
    # kafka-python 3 names it "coordinator-<id>", older versions by the bare id).
    node = str(getattr(getattr(c, "_coordinator", None), "coordinator_id", None))
    digits = node.rsplit("-", 1)[-1]
    if digits.isdigit():
        emit(event="coordinator", id=int(digits))


def commit(bootstrap, topic, group, n):
    c = member(bootstrap, topic, group, "commit", stop_at=n)
    c.commit({TopicPartition(topic, 0): OffsetAndMetadata(n, "", -1)})
    c.close(autocommit=False)
    emit(event="committed", partition=0, offset=n)


def seek(bootstrap, topic, group, n):
    c = group_consumer(bootstrap, group, auto_commit=False)
    tp = TopicPartition(topic, 0)
    committed = c.committed(tp)
    emit(event="committed", partition=0, offset=-1 if committed is None else committed)
    if committed is None:
        fail(f"no committed offset for {topic}/0 in group {group}")
    c.assign([tp])
    c.seek(tp, committed)
    got, end = 0, deadline()
    while got < n and time.monotonic() < end:
        for records in c.poll(timeout_ms=500).values():
            for m in records:
                record("seek", m.partition, m.offset, m.value.decode())
                got += 1
    c.close(autocommit=False)


def main():
    mode, bootstrap, topic, group, arg = args()
    if mode == "produce":
        for codec in CODECS:
            error = produce_codec(bootstrap, f"{topic}-{codec}", codec, int(arg))
            step(f"produce-{codec}", error)
            step(f"consume-{codec}", error and "not read: produce failed" or read_back(bootstrap, f"{topic}-{codec}", codec, int(arg)))
    elif mode == "member":
        member(bootstrap, topic, group, arg).close()
    elif mode == "commit":
        commit(bootstrap, topic, group, int(arg))
    elif mode == "seek":
        seek(bootstrap, topic, group, int(arg))
    elif mode == "resume":
        member(bootstrap, topic, group, "resume", stop_at=int(arg)).close(autocommit=False)
    else:
        sys.exit(f"unknown mode {mode}")
    emit(event="done")


if __name__ == "__main__":
    main()
