"""Stream differential fuzzer for the reader (review of 12b89ca..aa1afcd).

For random streams of several frames on one connection (shared paths so PathMemo hits,
mutations aimed at the path lines and around them), the reader's events are compared between:
  - byte-by-byte feeding (state machine, the reference),
  - the whole stream as one read, each frame as its own read, random splits, every 2-way split.
Run: python tests/protocol/fuzz_stream.py SEED COUNT  -> prints counts and a digest of all
outputs (compare the digest between compiled and MSRPD_PURE=1).
"""

from __future__ import annotations

import hashlib
import random
import sys

from msrpd.protocol.errors import RemoteProtocolError
from msrpd.protocol.events import BodyPiece
from msrpd.protocol.frame import Frame
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.reader import FrameReader

URIS = [
    b"msrp://127.0.0.1:2855/s1a2b3;tcp",
    b"msrp://127.0.0.1:7001/bob;tcp",
    b"msrp://127.0.0.1:7000/alice;tcp",
    b"msrps://relay.example.com:2855/x9;tcp",
    b"msrp://[::1]:2855/v6;tcp",
    b"msrp://h/a;tcp",  # no port
    b"msrp://:1/a;tcp",  # bad
    b"msrp://h:99999/a;tcp",  # bad port
    b"http://h:1/a;tcp",  # bad scheme
    b"msrp://h:1/;tcp",  # empty session
    b"msrp://h:1/a",  # no transport
    b"msrp://h\xc3\xa9:1/a;tcp",
]
HEADERS = [
    b"Message-ID: m1",
    b"Byte-Range: 1-2/2",
    b"Content-Type: text/plain",
    b"Success-Report: yes",
    b"Failure-Report: no",
    b"X-Foo: bar",
    b"message-id: lower",
    b"To-Path: msrp://h:1/a;tcp",
    b"From-Path: msrp://h:1/a;tcp",
    b"Status: 000 200 OK",
    b"Use-Path: msrp://h:1/a;tcp",
]
NASTY = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\t",
    b" ",
    b"\x00",
    b"\x7f",
    b"\x80",
    b"\xff",
    b"-",
    b":",
    b"-------",
    b"\r\n\r\n",
    b"$",
    b"+",
    b"#",
    b"a",
    b"To-Path:",
    b"From-Path:",
    b"  ",
]


def path_lines(rng: random.Random) -> bytes:
    pool = URIS if rng.random() < 0.25 else URIS[:6]  # sometimes a session's paths are bad
    to = b" ".join(rng.choice(pool) for _ in range(rng.randint(1, 3)))
    fr = b" ".join(rng.choice(pool) for _ in range(rng.randint(1, 2)))
    sp1 = rng.choice([b" ", b" ", b"", b"  "])
    sp2 = rng.choice([b" ", b" ", b"", b"  "])
    tr = rng.choice([b"", b"", b"", b" "])
    return b"To-Path:" + sp1 + to + tr + b"\r\nFrom-Path:" + sp2 + fr + b"\r\n"


def mutate(rng: random.Random, data: bytes, focus: tuple[int, int]) -> bytes:
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.7 and focus[1] > focus[0]:
            at = rng.randint(focus[0], focus[1])
        else:
            at = rng.randint(0, len(data))
        kind = rng.random()
        ins = rng.choice(NASTY) if rng.random() < 0.7 else bytes([rng.randrange(256)])
        if kind < 0.4:
            data = data[:at] + ins + data[at:]
        elif kind < 0.7:
            data = data[:at] + data[at + rng.randint(1, 3) :]
        else:
            data = data[:at] + ins + data[at + len(ins) :]
    return data


def make_frame(rng: random.Random, paths: bytes, tid: bytes) -> tuple[bytes, tuple[int, int]]:
    kind = rng.random()
    if kind < 0.6:
        first = b"MSRP " + tid + b" SEND"
    elif kind < 0.8:
        first = b"MSRP " + tid + rng.choice([b" 200 OK", b" 200", b" 403 Forbidden", b" 2000"])
    else:
        first = b"MSRP " + tid + rng.choice([b" REPORT", b" AUTH", b" FOO"])
    heads = b"".join(rng.choice(HEADERS) + b"\r\n" for _ in range(rng.choice([0, 0, 1, 2, 3])))
    start = len(first) + 2
    head = first + b"\r\n" + paths + heads
    focus = (start, start + len(paths))
    flag = rng.choice(b"$$$+#")
    end = b"-------" + tid + bytes([flag]) + b"\r\n"
    if rng.random() < 0.3:
        return head + end, focus
    body = rng.choice(
        [
            b"",
            b"hi",
            b"x" * rng.randint(0, 200),
            b"\r\n-------zz$\r\n",
            b"-------" + tid + b"a",
            b"\r\n" + b"-------" + tid + b"X",
        ]
    )
    return head + b"\r\n" + body + b"\r\n" + end, focus


def stream(rng: random.Random) -> list[bytes]:
    paths = path_lines(rng)
    other = path_lines(rng)
    frames = []
    for i in range(rng.randint(1, 6)):
        tid = rng.choice([b"t1", b"abcdefgh", b"T" + str(i).encode() * rng.randint(1, 5), b"x"])
        use = paths if rng.random() < 0.8 else other
        data, focus = make_frame(rng, use, tid)
        if rng.random() < 0.35:
            data = mutate(rng, data, focus)
        if rng.random() < 0.1:
            data = rng.choice([b"\r\n", b"\r\n\r\n", b"\n"]) + data
        frames.append(data)
    return frames


def describe(event: object) -> object:
    if isinstance(event, Frame):
        return (
            type(event).__name__,
            event.buf,
            event.tid,
            event.method,
            event.code,
            event.reason,
            event.hdr_end,
            event.body_start,
            event.end_start,
            event.flag,
            event.to_span,
            event.from_span,
            event.to_count,  # a path memo's on a hit (fastpath.PathMemo)
            None if event.body is None else bytes(event.body),
        )
    if isinstance(event, BodyPiece):
        return ("piece", bytes(event.data))
    return repr(event)


class Out(list):
    """Events described; consecutive BodyPiece events merged (their split is the read's)."""

    def extend(self, events) -> None:  # type: ignore[override]
        for e in events:
            if (
                isinstance(e, tuple)
                and e[0] == "piece"
                and self
                and isinstance(self[-1], tuple)
                and self[-1][0] == "piece"
            ):
                self[-1] = ("piece", self[-1][1] + e[1])
            else:
                self.append(e)


def run(chunks: list[bytes], limits: ReaderLimits) -> list[object]:
    reader = FrameReader(limits)
    out: list[object] = Out()
    try:
        for chunk in chunks:
            reader.receive_data(chunk)
            out.extend(describe(e) for e in reader.events())
        reader.receive_data(b"")
        out.extend(describe(e) for e in reader.events())
    except RemoteProtocolError as exc:
        out.extend([("error", type(exc).__name__, str(exc), exc.tid, getattr(exc, "status", None))])
    return out


def main() -> None:
    seed, count = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    digest = hashlib.sha256()
    stats = {"streams": 0, "feeds": 0, "frames": 0, "invalid": 0, "errors": 0, "mismatch": 0}
    for _ in range(count):
        frames = stream(rng)
        data = b"".join(frames)
        limits = ReaderLimits(max_body=rng.choice([0, 5, 64, 1 << 20]))
        ref = run([data[i : i + 1] for i in range(len(data))], limits)
        feeds = [[data], frames]
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
        feeds.append([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)])
        if len(data) < 700:
            feeds.extend([[data[:k], data[k:]] for k in range(1, len(data))])
        else:
            feeds.extend([[data[:k], data[k:]] for k in rng.sample(range(1, len(data)), 60)])
        # frames as reads, each frame's read also split once
        k = rng.randrange(len(frames))
        c = rng.randint(0, len(frames[k]))
        feeds.append([*frames[:k], frames[k][:c], frames[k][c:], *frames[k + 1 :]])
        stats["streams"] += 1
        digest.update(repr(ref).encode())
        for ev in ref:
            if isinstance(ev, tuple) and ev and ev[0] in ("Frame", "OddNamesFrame"):
                stats["frames"] += 1
            elif isinstance(ev, str) and ev.startswith("InvalidFrame"):
                stats["invalid"] += 1
            elif isinstance(ev, tuple) and ev[0] == "error":
                stats["errors"] += 1
        for feed in feeds:
            stats["feeds"] += 1
            got = run([c for c in feed if c], limits)
            if got != ref:
                stats["mismatch"] += 1
                if stats["mismatch"] <= 5:
                    print("MISMATCH", repr(frames), [len(c) for c in feed], limits.max_body)
                    print(" ref", ref)
                    print(" got", got)
                break
        digest.update(repr(run([data], limits)).encode())
        digest.update(repr(run(frames, limits)).encode())
    print(stats, digest.hexdigest())


if __name__ == "__main__":
    main()
