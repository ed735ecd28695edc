#!/usr/bin/env python3
#! tests/clients/aiokafka_matrix.py — the client matrix with aiokafka (asyncio; its codecs
#! come from cramjam, lz4 and zstandard): see matrix_common.py for the modes and output.
import asyncio
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from matrix_common import CODECS, MEMBER_LIFETIME_S, args, check_values, deadline, emit, fail, record, step, value


async def produce_codec(bootstrap, topic, codec, n):
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, request_timeout_ms=20000,
                         compression_type=None if codec == "none" else codec)
    try:
        await asyncio.wait_for(p.start(), 20)
        futures = [await p.send(topic, value(codec, i).encode(), partition=0) for i in range(n)]
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        return None
    except Exception as e:  # the client's own error text is the step's result
        return f"{type(e).__name__}: {e}"
    finally:
        await p.stop()


async def read_back(bootstrap, topic, codec, n):
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        await asyncio.wait_for(c.start(), 20)
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        got, end = [], deadline()
        while len(got) < n and time.monotonic() < end:
            for records in (await c.getmany(timeout_ms=500)).values():
                got.extend((m.offset, m.value.decode()) for m in records)
        return check_values(got, codec, n)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    finally:
        await c.stop()


def group_consumer(bootstrap, group, auto_commit):
    # session_timeout_ms 6000: Kafka's group.min.session.timeout.ms; the range assignor.
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, session_timeout_ms=6000,
                            heartbeat_interval_ms=1000, max_poll_interval_ms=20000, rebalance_timeout_ms=20000,
                            auto_offset_reset="earliest", enable_auto_commit=auto_commit,
                            auto_commit_interval_ms=500, partition_assignment_strategy=(RangePartitionAssignor,))


class Printer(ConsumerRebalanceListener):
    def __init__(self, name):
        self.name = name

    async def on_partitions_revoked(self, revoked):
        pass

    async def on_partitions_assigned(self, assigned):
        emit(event="assigned", member=self.name, partitions=sorted(tp.partition for tp in assigned))


async def member(bootstrap, topic, group, name, stop_at=None):
    """A group member; with stop_at, ends after reading partition 0 up to offset stop_at-1."""
    c = group_consumer(bootstrap, group, auto_commit=stop_at is None)
    await asyncio.wait_for(c.start(), 30)
    c.subscribe([topic], listener=Printer(name))
    end = time.monotonic() + MEMBER_LIFETIME_S
    while time.monotonic() < end:
        for records in (await c.getmany(timeout_ms=500)).values():
            for m in records:
                record(name, m.partition, m.offset, m.value.decode())
                if stop_at is not None and m.partition == 0 and m.offset >= stop_at - 1:
                    coordinator(c)
                    return c
    if stop_at is not None:
        fail(f"did not reach offset {stop_at - 1} of partition 0 in {MEMBER_LIFETIME_S}s")
    return c


def coordinator(c):
    # The broker the client found with FindCoordinator (a private field: no public API).
    node = getattr(getattr(c, "_coordinator", None), "coordinator_id", None)
    if node is not None:
        emit(event="coordinator", id=int(node))


async def commit(bootstrap, topic, group, n):
    c = await member(bootstrap, topic, group, "commit", stop_at=n)
    try:
        await asyncio.wait_for(c.commit({TopicPartition(topic, 0): n}), 30)
    finally:
        await c.stop()
    emit(event="committed", partition=0, offset=n)


async def seek(bootstrap, topic, group, n):
    c = group_consumer(bootstrap, group, auto_commit=False)
    await asyncio.wait_for(c.start(), 30)
    try:
        tp = TopicPartition(topic, 0)
        committed = await asyncio.wait_for(c.committed(tp), 30)
        emit(event="committed", partition=0, offset=-1 if committed is None else committed)
        if committed is None:
            fail(f"no committed offset for {topic}/0 in group {group}")
        c.assign([tp])
        c.seek(tp, committed)
        got, end = 0, deadline()
        while got < n and time.monotonic() < end:
            for records in (await c.getmany(timeout_ms=500)).values():
                for m in records:
                    record("seek", m.partition, m.offset, m.value.decode())
                    got += 1
    finally:
        await c.stop()


async def main():
    mode, bootstrap, topic, group, arg = args()
    if mode == "produce":
        for codec in CODECS:
            error = await produce_codec(bootstrap, f"{topic}-{codec}", codec, int(arg))
            step(f"produce-{codec}", error)
            step(f"consume-{codec}", error and "not read: produce failed" or await read_back(bootstrap, f"{topic}-{codec}", codec, int(arg)))
    elif mode == "member":
        await (await member(bootstrap, topic, group, arg)).stop()
    elif mode == "commit":
        await commit(bootstrap, topic, group, int(arg))
    elif mode == "seek":
        await seek(bootstrap, topic, group, int(arg))
    elif mode == "resume":
        await (await member(bootstrap, topic, group, "resume", stop_at=int(arg))).stop()
    else:
        sys.exit(f"unknown mode {mode}")
    emit(event="done")


if __name__ == "__main__":
    asyncio.run(main())
