#!/usr/bin/env python3
# scripts/capture-kafka-frames.py — recording TCP proxy in front of insync brokers' Kafka
# listeners: forwards every byte both ways unchanged and saves each client→broker request
# frame (without its 4-byte size prefix) as a fuzzing seed (crates/kafka-wire/corpus/).
"""Recording TCP proxy for Kafka request frames (stdlib only).

Usage:
  capture-kafka-frames.py --out DIR [--max-per-key 3] [--label LABEL] [--caps-file FILE]
                          LISTEN_PORT=HOST:PORT [LISTEN_PORT=HOST:PORT ...]

Each mapping listens on 127.0.0.1:LISTEN_PORT (or LISTEN_HOST:LISTEN_PORT=HOST:PORT) and
forwards to HOST:PORT. Nothing is rewritten: run the brokers with their advertised Kafka
address (insync-broker --kafka-advertise) set to the proxy's address, so that clients
which learn broker addresses from Metadata/FindCoordinator answers keep going through it.

Every request frame a client sends is parsed (size int32, then api_key int16,
api_version int16, correlation_id int32, client_id nullable string ...) and written to
  DIR/<ApiName>-v<version>-<label>-<n>.bin
holding the bytes after the size prefix. <label> is --label if given, else the request
header's client_id (sanitised; "unknown" when null or empty). At most --max-per-key
distinct frames are kept per (api, version, label); frames that differ only in their
correlation id count as the same. Produce frames over --max-produce-bytes (64 KiB) are
not saved. Files already in DIR count towards the limits, so several runs accumulate.

Refused requests: when the broker closes a connection the client did not close, the oldest
request still unanswered on it (the one the broker gave up on, e.g. one it cannot decode)
is saved even past --max-per-key (up to --max-per-key such extra frames per key), and
named in the log and the summary. acks=0 Produce requests expect no answer and are not
tracked.
On SIGTERM/SIGINT the proxy prints how many frames it saw and saved per key, then exits.

--caps-file FILE (optional): the one exception to "rewrites nothing". FILE holds
`ApiName=MAX` or `api_key=MAX` entries (whitespace separated, # comments) and is re-read
for every ApiVersions answer; each listed API's advertised max_version is lowered to MAX in
ApiVersions responses (in place: same length; only when min <= MAX < max). Clients then
negotiate, and encode themselves, versions below the broker's newest, which no client
would otherwise send. An absent or empty file changes nothing.
"""
import argparse
import hashlib
import os
import re
import signal
import socket
import struct
import sys
import threading

API_NAMES = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    8: "OffsetCommit",
    9: "OffsetFetch",
    10: "FindCoordinator",
    11: "JoinGroup",
    12: "Heartbeat",
    13: "LeaveGroup",
    14: "SyncGroup",
    18: "ApiVersions",
    22: "InitProducerId",
}

# A frame larger than this is not Kafka traffic we want to parse (Kafka's own
# socket.request.max.bytes default is 100 MiB): stop parsing that connection, keep forwarding.
MAX_PARSED_FRAME = 100 * 1024 * 1024
FILE_RE = re.compile(r"^(?P<api>[A-Za-z0-9]+)-v(?P<ver>-?\d+)-(?P<label>.+)-(?P<n>\d+)\.bin$")


def api_name(key):
    return API_NAMES.get(key, f"Api{key}")


def sanitise(label):
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", label).strip("._-")
    return label[:64] or "unknown"


def log(msg):
    print(f"capture-kafka-frames: {msg}", file=sys.stderr, flush=True)


def dedup_digest(frame):
    """Frame bytes with the correlation id (bytes 4..8) blanked out."""
    return hashlib.sha256(frame[:4] + b"\0\0\0\0" + frame[8:]).digest()


API_KEYS = {name: key for key, name in API_NAMES.items()}


def load_caps(path):
    """{api_key: max_version} from the caps file; {} if absent, empty or unreadable."""
    caps = {}
    if not path:
        return caps
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return caps
    for word in re.sub(r"#[^\n]*", "", text).split():
        name, _, ver = word.partition("=")
        key = API_KEYS.get(name)
        if key is None:
            try:
                key = int(name[3:] if name.startswith("Api") else name)
            except ValueError:
                log(f"caps: unknown API '{name}'")
                continue
        try:
            caps[key] = int(ver)
        except ValueError:
            log(f"caps: bad entry '{word}'")
    return caps


def read_uvarint(buf, pos):
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 35:
            raise ValueError("uvarint too long")


def skip_tagged_fields(frame, pos):
    tags, pos = read_uvarint(frame, pos)
    for _ in range(tags):
        _, pos = read_uvarint(frame, pos)
        size, pos = read_uvarint(frame, pos)
        pos += size
    return pos


def parse_produce(frame):
    """(acks, producer id of the first record batch or None) of a Produce v3+ request
    frame, or None if it does not parse that far."""
    api_key, version = struct.unpack_from(">hh", frame, 0)
    if api_key != 0 or version < 3:
        return None
    flexible = version >= 9
    try:
        (length,) = struct.unpack_from(">h", frame, 8)  # header client_id
        pos = 10 + max(length, 0)
        if flexible:
            pos = skip_tagged_fields(frame, pos)  # header tagged fields
            length, pos = read_uvarint(frame, pos)  # compact transactional_id
            pos += max(length - 1, 0)
        else:
            (length,) = struct.unpack_from(">h", frame, pos)
            pos += 2 + max(length, 0)
        (acks,) = struct.unpack_from(">h", frame, pos)
        pos += 2 + 4  # acks, timeout_ms
        producer_id = None
        if flexible:
            topics, pos = read_uvarint(frame, pos)
            if topics > 1:
                length, pos = read_uvarint(frame, pos)
                pos += length - 1
                partitions, pos = read_uvarint(frame, pos)
                if partitions > 1:
                    pos += 4
                    size, pos = read_uvarint(frame, pos)
                    if size > 61:
                        (producer_id,) = struct.unpack_from(">q", frame, pos + 43)
        else:
            (topics,) = struct.unpack_from(">i", frame, pos)
            pos += 4
            if topics > 0:
                (length,) = struct.unpack_from(">h", frame, pos)
                pos += 2 + length
                (partitions,) = struct.unpack_from(">i", frame, pos)
                pos += 4
                if partitions > 0:
                    (size,) = struct.unpack_from(">i", frame, pos + 4)
                    if size > 61:
                        (producer_id,) = struct.unpack_from(">q", frame, pos + 8 + 43)
        return acks, producer_id
    except (IndexError, ValueError, struct.error):
        return None


def expects_answer(frame):
    """False for an acks=0 Produce request (no answer comes), True otherwise."""
    parsed = parse_produce(frame)
    return parsed is None or parsed[0] != 0


def shape_of(frame):
    """What makes two frames of one (api, version, client) worth keeping both even past
    the per-key limit: for Produce, acks and whether the producer is idempotent."""
    parsed = parse_produce(frame)
    if parsed is None:
        return None
    acks, producer_id = parsed
    return ("acks", acks, "idempotent" if producer_id is not None and producer_id >= 0 else "plain")


def cap_api_versions(frame, version, caps):
    """Lowers max_version in an ApiVersions response frame (bytearray: correlation id,
    then the body; ApiVersions answers always use response header v0), in place."""
    pos = 4
    (error_code,) = struct.unpack_from(">h", frame, pos)
    pos += 2
    if error_code != 0:  # the v0-format UNSUPPORTED_VERSION answer: leave it alone
        return []
    if version >= 3:
        count, pos = read_uvarint(frame, pos)
        count -= 1
    else:
        (count,) = struct.unpack_from(">i", frame, pos)
        pos += 4
    changed = []
    for _ in range(max(count, 0)):
        key, min_v, max_v = struct.unpack_from(">hhh", frame, pos)
        cap = caps.get(key)
        if cap is not None and min_v <= cap < max_v:
            struct.pack_into(">h", frame, pos + 4, cap)
            changed.append(f"{api_name(key)} {max_v}->{cap}")
        pos += 6
        if version >= 3:
            tags, pos = read_uvarint(frame, pos)
            for _ in range(tags):
                _, pos = read_uvarint(frame, pos)
                size, pos = read_uvarint(frame, pos)
                pos += size
    return changed


class Entry:
    __slots__ = ("n", "digest", "shape", "refused")

    def __init__(self, n, digest, shape, refused):
        self.n, self.digest, self.shape, self.refused = n, digest, shape, refused


class Recorder:
    def __init__(self, out_dir, max_per_key, max_produce_bytes, fixed_label):
        self.out_dir = out_dir
        self.max_per_key = max_per_key
        self.max_produce_bytes = max_produce_bytes
        self.fixed_label = fixed_label
        self.lock = threading.Lock()
        self.entries = {}  # (api name, version, label) -> [Entry] of the files saved
        self.next_n = {}  # same key -> next file number
        self.seen = {}  # same key -> frames seen
        self.skipped_large = 0
        self.refused = {}  # same key -> [times seen as refused, extra frames saved]
        os.makedirs(out_dir, exist_ok=True)
        for name in sorted(os.listdir(out_dir)):
            m = FILE_RE.match(name)
            if not m:
                continue
            key = (m["api"], int(m["ver"]), m["label"])
            with open(os.path.join(out_dir, name), "rb") as f:
                frame = f.read()
            self.entries.setdefault(key, []).append(Entry(int(m["n"]), dedup_digest(frame), shape_of(frame), False))
            self.next_n[key] = max(self.next_n.get(key, 1), int(m["n"]) + 1)

    def label_of(self, frame):
        if self.fixed_label:
            return self.fixed_label
        if len(frame) < 10:
            return "unknown"
        (length,) = struct.unpack_from(">h", frame, 8)
        if length <= 0 or len(frame) < 10 + length:
            return "unknown"
        return sanitise(frame[10 : 10 + length].decode("utf-8", "replace"))

    def record(self, frame, refused=False):
        """Saves `frame` if it is new for its key and the key has room. A full key still
        takes a frame of a new shape (see shape_of) in place of its newest frame whose shape
        another frame shares. A `refused` frame (already counted when it was sent) has its
        own room of max_per_key extra frames."""
        if len(frame) < 8:
            return
        api_key, version = struct.unpack_from(">hh", frame, 0)
        key = (api_name(api_key), version, self.label_of(frame))
        note = ""
        with self.lock:
            if refused:
                counts = self.refused.setdefault(key, [0, 0])
                counts[0] += 1
            else:
                self.seen[key] = self.seen.get(key, 0) + 1
            if api_key == 0 and len(frame) > self.max_produce_bytes:
                if not refused:
                    self.skipped_large += 1
                return
            entries = self.entries.setdefault(key, [])
            digest = dedup_digest(frame)
            if any(e.digest == digest for e in entries):
                return
            shape = shape_of(frame)
            regular = [e for e in entries if not e.refused]
            if refused:
                if counts[1] >= self.max_per_key:
                    return
                counts[1] += 1
                entry = None
                note = " (refused by the broker)"
            elif len(regular) < self.max_per_key:
                entry = None
            else:
                if shape is None or any(e.shape == shape for e in regular):
                    return
                shared = [e for e in regular if sum(x.shape == e.shape for x in regular) > 1]
                if not shared:
                    return
                entry = shared[-1]
                entry.digest, entry.shape = digest, shape
                note = f" (replacing a frame of a shape kept already: {shape})"
            if entry is None:
                entry = Entry(self.next_n.get(key, 1), digest, shape, refused)
                self.next_n[key] = entry.n + 1
                entries.append(entry)
            name = f"{key[0]}-v{key[1]}-{key[2]}-{entry.n}.bin"
            path = os.path.join(self.out_dir, name)
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(frame)
            os.replace(tmp, path)
        log(f"saved {name} ({len(frame)} bytes){note}")

    def summary(self):
        with self.lock:
            lines = [f"{'api':<16} {'ver':>3}  {'label':<20} {'seen':>6} {'saved':>5}"]
            for key in sorted(self.seen, key=lambda k: (k[0], k[1], k[2])):
                lines.append(f"{key[0]:<16} {key[1]:>3}  {key[2]:<20} {self.seen[key]:>6} {len(self.entries.get(key, ())):>5}")
            for key, (times, extra) in sorted(self.refused.items()):
                lines.append(f"refused (broker closed the connection unanswered): {key[0]} v{key[1]} {key[2]}: "
                             f"{times} time(s), {extra} extra frame(s) saved")
            if self.skipped_large:
                lines.append(f"Produce frames over {self.max_produce_bytes} bytes not saved: {self.skipped_large}")
        return "\n".join(lines)


def shutdown_both(src, dst):
    for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
        try:
            sock.shutdown(how)
        except OSError:
            pass


class Connection:
    """One proxied client connection. Broker→client bytes are cut into frames (forwarded
    unchanged, unless ApiVersions capping is on) to match answers with requests."""

    def __init__(self, client, upstream, recorder, caps_file):
        self.client, self.upstream, self.recorder, self.caps_file = client, upstream, recorder, caps_file
        self.lock = threading.Lock()
        self.api_versions_requests = {}  # correlation id -> ApiVersions request version
        self.unanswered = {}  # correlation id -> (sequence, request frame)
        self.sequence = 0
        self.client_closed = False

    def pipe_requests(self):
        """client → broker: record each complete request frame, then forward the bytes."""
        src, dst = self.client, self.upstream
        buf = bytearray()
        parsing = True
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if parsing:
                    buf += data
                    while len(buf) >= 4:
                        (size,) = struct.unpack_from(">i", buf, 0)
                        if size < 0 or size > MAX_PARSED_FRAME:
                            log(f"frame size {size} is not a Kafka request: no longer parsing this connection")
                            parsing = False
                            buf.clear()
                            break
                        if len(buf) < 4 + size:
                            break
                        frame = bytes(buf[4 : 4 + size])
                        del buf[: 4 + size]
                        self.note_request(frame)
                # Forwarded after note_request, so an ApiVersions answer cannot overtake it.
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.client_closed = True
            shutdown_both(src, dst)

    def note_request(self, frame):
        if len(frame) >= 8:
            api_key, version, correlation_id = struct.unpack_from(">hhi", frame, 0)
            with self.lock:
                if api_key == 18 and self.caps_file:
                    self.api_versions_requests[correlation_id] = version
                if expects_answer(frame):
                    self.sequence += 1
                    self.unanswered[correlation_id] = (self.sequence, frame)
        try:
            self.recorder.record(frame)
        except OSError as e:
            log(f"could not save a frame: {e}")

    def pipe_responses(self):
        """broker → client: copy bytes unchanged (capping ApiVersions answers if asked)."""
        src, dst = self.upstream, self.client
        buf = bytearray()
        framing = True
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not framing:
                    dst.sendall(data)
                    continue
                buf += data
                out = bytearray()
                while len(buf) >= 4:
                    (size,) = struct.unpack_from(">i", buf, 0)
                    if size < 4 or size > MAX_PARSED_FRAME:
                        framing = False
                        break
                    if len(buf) < 4 + size:
                        break
                    frame = bytearray(buf[4 : 4 + size])
                    del buf[: 4 + size]
                    (correlation_id,) = struct.unpack_from(">i", frame, 0)
                    with self.lock:
                        version = self.api_versions_requests.pop(correlation_id, None)
                        self.unanswered.pop(correlation_id, None)
                    if version is not None:
                        caps = load_caps(self.caps_file)
                        if caps:
                            try:
                                changed = cap_api_versions(frame, version, caps)
                                if changed:
                                    log(f"ApiVersions v{version} answer capped: {', '.join(changed)}")
                            except (IndexError, ValueError, struct.error) as e:
                                log(f"could not parse an ApiVersions v{version} answer: {e}")
                    out += struct.pack(">i", size) + frame
                if not framing:
                    out += buf
                    buf.clear()
                if out:
                    dst.sendall(out)
        except OSError:
            pass
        finally:
            with self.lock:
                refused = None
                if framing and not self.client_closed and self.unanswered:
                    refused = min(self.unanswered.values())[1]
            if refused is not None:
                api_key, version, correlation_id = struct.unpack_from(">hhi", refused, 0)
                log(f"broker closed the connection with {api_name(api_key)} v{version} "
                    f"(correlation id {correlation_id}) unanswered")
                try:
                    self.recorder.record(refused, refused=True)
                except OSError as e:
                    log(f"could not save a frame: {e}")
            shutdown_both(src, dst)


def serve_connection(client, target, recorder, caps_file):
    try:
        upstream = socket.create_connection(target, timeout=10)
        upstream.settimeout(None)
    except OSError as e:
        log(f"cannot reach {target[0]}:{target[1]}: {e}")
        client.close()
        return
    for sock in (client, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Connection(client, upstream, recorder, caps_file)
    t = threading.Thread(target=conn.pipe_responses, daemon=True)
    t.start()
    conn.pipe_requests()
    t.join()
    client.close()
    upstream.close()


def listen_loop(server, target, recorder, caps_file):
    while True:
        try:
            client, _ = server.accept()
        except OSError:
            return
        threading.Thread(target=serve_connection, args=(client, target, recorder, caps_file), daemon=True).start()


def parse_mapping(text):
    try:
        listen, target = text.split("=", 1)
        if ":" in listen:
            lhost, lport = listen.rsplit(":", 1)
        else:
            lhost, lport = "127.0.0.1", listen
        thost, tport = target.rsplit(":", 1)
        return (lhost, int(lport)), (thost, int(tport))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected LISTEN_PORT=HOST:PORT")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for the .bin frames")
    p.add_argument("--max-per-key", type=int, default=3, help="distinct frames kept per (api, version, label)")
    p.add_argument("--max-produce-bytes", type=int, default=64 * 1024, help="larger Produce frames are not saved")
    p.add_argument("--label", help="client label for every frame (default: the request's client_id)")
    p.add_argument("--caps-file", help="lower ApiVersions max versions as this file says (re-read each time)")
    p.add_argument("mappings", nargs="+", type=parse_mapping, metavar="LISTEN_PORT=HOST:PORT")
    args = p.parse_args()
    if args.label:
        args.label = sanitise(args.label)

    recorder = Recorder(args.out, args.max_per_key, args.max_produce_bytes, args.label)
    servers = []
    for listen, target in args.mappings:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(listen)
        except OSError as e:
            log(f"cannot listen on {listen[0]}:{listen[1]}: {e}")
            sys.exit(1)
        server.listen(128)
        servers.append(server)
        threading.Thread(target=listen_loop, args=(server, target, recorder, args.caps_file), daemon=True).start()
        log(f"listening on {listen[0]}:{listen[1]} -> {target[0]}:{target[1]}")
    log(f"recording request frames into {args.out}")

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    for server in servers:
        server.close()
    print(recorder.summary(), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
