#!/usr/bin/env python3
#! tests/clients/confluent_matrix.py — the client matrix with confluent-kafka (librdkafka
#! bundled in the wheel, every codec inside): see matrix_common.py for the modes and output.
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from matrix_common import CODECS, MEMBER_LIFETIME_S, args, check_values, deadline, emit, fail, record, step, value


def produce_codec(bootstrap, topic, codec, n):
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "compression.type": codec,
                  "linger.ms": 20, "message.timeout.ms": 20000})
    for i in range(n):
        p.produce(topic, value(codec, i).encode(), partition=0,
                  on_delivery=lambda err, _msg: err and errors.append(f"{err.name()}: {err.str()}"))
    left = p.flush(30)
    if errors or left:
        return f"{len(errors)} delivery errors {sorted(set(errors))}, {left} unflushed"
    return None


def read_back(bootstrap, topic, codec, n):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "matrix-readback", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got, end = [], deadline()
        while len(got) < n and time.monotonic() < end:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                return f"{m.error().name()}: {m.error().str()}"
            got.append((m.offset(), m.value().decode()))
        return check_values(got, codec, n)
    finally:
        c.close()


def group_consumer(bootstrap, group, auto_commit):
    # session.timeout.ms 6000: Kafka's group.min.session.timeout.ms; range assignor (eager
    # protocol), so each assignment callback names the member's whole assignment.
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 6000,
                     "heartbeat.interval.ms": 1000, "max.poll.interval.ms": 20000,
                     "auto.offset.reset": "earliest", "enable.auto.commit": auto_commit,
                     "auto.commit.interval.ms": 500, "partition.assignment.strategy": "range"})


def member(bootstrap, topic, group, name, stop_at=None):
    """A group member; with stop_at, ends after reading partition 0 up to offset stop_at-1."""
    c = group_consumer(bootstrap, group, auto_commit=stop_at is None)
    c.subscribe([topic], on_assign=lambda _c, parts: emit(
        event="assigned", member=name, partitions=sorted(p.partition for p in parts)))
    end = time.monotonic() + MEMBER_LIFETIME_S
    try:
        while time.monotonic() < end:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                emit(event="warning", member=name, error=f"{m.error().name()}: {m.error().str()}")
                continue
            record(name, m.partition(), m.offset(), m.value().decode())
            if stop_at is not None and m.partition() == 0 and m.offset() >= stop_at - 1:
                return c
        if stop_at is not None:
            fail(f"did not reach offset {stop_at - 1} of partition 0 in {MEMBER_LIFETIME_S}s")
    except BaseException:
        c.close()
        raise
    return c


def commit(bootstrap, topic, group, n):
    c = member(bootstrap, topic, group, "commit", stop_at=n)
    result = c.commit(offsets=[TopicPartition(topic, 0, n)], asynchronous=False)
    errors = [str(tp.error) for tp in result or [] if tp.error]
    c.close()
    if errors:
        fail(f"commit failed: {errors}")
    emit(event="committed", partition=0, offset=n)


def seek(bootstrap, topic, group, n):
    c = group_consumer(bootstrap, group, auto_commit=False)
    try:
        committed = c.committed([TopicPartition(topic, 0)], timeout=15)[0].offset
        emit(event="committed", partition=0, offset=committed)
        if committed < 0:
            fail(f"no committed offset for {topic}/0 in group {group}")
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        seek_when_assigned(c, TopicPartition(topic, 0, committed))
        got, end = 0, deadline()
        while got < n and time.monotonic() < end:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            record("seek", m.partition(), m.offset(), m.value().decode())
            got += 1
    finally:
        c.close()


def seek_when_assigned(c, tp):
    # librdkafka refuses a seek until the assigned partition's fetcher exists
    # (_STATE / _UNKNOWN_PARTITION): retry it, bounded.
    end = deadline(10)
    while True:
        try:
            c.seek(tp)
            return
        except KafkaException:
            if time.monotonic() > end:
                raise
            c.poll(0.1)


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
        member(bootstrap, topic, group, "resume", stop_at=int(arg)).close()
    else:
        sys.exit(f"unknown mode {mode}")
    emit(event="done")


if __name__ == "__main__":
    main()
