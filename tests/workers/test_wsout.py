"""OutFrames (transports/wsout.py): MSRP writes to WebSocket messages, re-chunking big SENDs."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from msrpd.protocol import BodyPiece, Frame, FrameEnd, FrameReader, ReaderLimits
from msrpd.workers.transports.wsout import OutFrames


def send(tid: bytes, body: bytes, byte_range: bool = True, flag: bytes = b"$") -> bytes:
    head = b"MSRP %s SEND\r\nTo-Path: msrp://a.invalid:1/s;ws\r\n" % tid
    head += b"From-Path: msrp://r:2855/x;tcp msrp://b:1/y;tcp\r\nMessage-ID: mid1\r\n"
    if byte_range:
        head += b"Byte-Range: 1-%d/%d\r\n" % (len(body), len(body))
    head += b"Content-Type: application/octet-stream\r\n\r\n"
    return head + body + b"\r\n-------" + tid + flag + b"\r\n"


def messages(frames: OutFrames, writes: list[bytes]) -> list[bytes]:
    out, current = [], b""
    for write in writes:
        for payload, last, _ in frames.split(write):
            current += payload
            if last:
                out.append(current)
                current = b""
    assert current == b""
    return out


def parse(message: bytes) -> tuple[Frame, bytes, bytes]:
    """The one frame in `message`: (head, body, flag)."""
    reader = FrameReader(ReaderLimits(max_body=1 << 30))
    reader.receive_data(message)
    events = list(reader.events())
    frame = events[0]
    assert isinstance(frame, Frame)
    if not frame.streamed:
        assert len(events) == 1
        return frame, bytes(frame.body or b""), frame.flag or b""
    body = b"".join(e.data for e in events if isinstance(e, BodyPiece))
    (end,) = [e for e in events if isinstance(e, FrameEnd)]
    assert events[-1] is end
    return frame, body, end.flag


def split_randomly(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    return [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]


@pytest.mark.parametrize("seed", range(5))
def test_big_send_is_rechunked_within_the_limit(seed: int) -> None:
    body = os.urandom(50_000)
    tids = (b"longer-tid-%d" % i for i in itertools.count())
    cuts: list[tuple[bytes, int]] = []

    def new_tid(tid: bytes, written: int) -> bytes:
        cuts.append((tid, written))
        return next(tids)

    frames = OutFrames(4096, new_tid)
    got = messages(frames, split_randomly(send(b"orig1", body), seed))
    assert len(got) > 12 and all(len(m) <= 4096 for m in got)
    assert max(len(m) for m in got) == 4096  # full messages: nothing wasted either
    parsed = [parse(m) for m in got]
    new = [b"longer-tid-%d" % i for i in range(len(got) - 1)]
    assert [f.tid for f, _, _ in parsed] == [b"orig1", *new]
    assert [flag for _, _, flag in parsed] == [b"+"] * (len(got) - 1) + [b"$"]
    assert b"".join(b for _, b, _ in parsed) == body
    # Each new id was asked for with the cut chunk's id and its body bytes (txrelay.py
    # makes the new chunk a transaction from them).
    assert cuts == [(f.tid, len(b)) for f, b, _ in parsed[:-1]]
    start = 1
    for frame, chunk, _ in parsed:
        assert frame.header("Message-ID") == b"mid1"
        assert frame.to_path == ["msrp://a.invalid:1/s;ws"]
        end = b"%d" % len(body) if start == 1 else b"*"  # the first head is the sender's
        assert frame.header("Byte-Range") == b"%d-%s/%d" % (start, end, len(body))
        start += len(chunk)


def test_small_frames_pass_whole_and_unchanged() -> None:
    frames = OutFrames(4096, lambda tid, written: b"never")
    one, two = send(b"a1", b"hello"), send(b"a2", b"x" * 100, flag=b"+")
    pieces = frames.split(one + two)
    assert pieces == [(one, True, True), (two, True, True)]


def test_interrupted_flag_kept_on_last_chunk() -> None:
    body = os.urandom(9000)
    tids = iter([b"n1", b"n2", b"n3", b"n4", b"n5"])
    frames = OutFrames(2048, lambda tid, written: next(tids))
    got = messages(frames, [send(b"orig1", body, flag=b"#")])
    assert parse(got[-1])[2] == b"#"
    assert b"".join(parse(m)[1] for m in got) == body


def test_no_byte_range_goes_as_one_long_message() -> None:
    body = os.urandom(9000)
    frame = send(b"orig1", body, byte_range=False)
    got = messages(OutFrames(2048, lambda tid, written: b"never"), split_randomly(frame, 1))
    assert got == [frame]


def test_responses_are_never_rechunked() -> None:
    response = b"MSRP a1 200 OK\r\nTo-Path: msrp://a.invalid:1/s;ws\r\n-------a1$\r\n"
    frames = OutFrames(1024, lambda tid, written: b"never")
    assert messages(frames, [response[:9], response[9:]]) == [response]


def test_ends_name_each_frame_where_its_last_message_ends() -> None:
    """`ends` (what a stop counts as delivered over WebSocket, ws.py): for each frame a split
    finished, the piece that ends it and the offset in that write just past it; a frame cut
    across writes is named by the write that ends it, a re-chunked one once, by its last
    piece, and a frame not ended yet not at all."""
    frames = OutFrames(4096, lambda tid, n: b"n%d" % n)
    a, b = send(b"a1", b"x" * 50), send(b"b2", b"y" * 60)
    frames.split(a + b)
    assert frames.ends == [(0, len(a)), (1, len(a) + len(b))]
    c = send(b"c3", b"z" * 70)
    frames.split(c[:40])
    assert frames.ends == []
    pieces = frames.split(c[40:])
    assert frames.ends == [(len(pieces) - 1, len(c) - 40)]
    big = send(b"d4", bytes(range(256)) * 40)  # 10 KiB: three messages of at most 4 KiB
    pieces = frames.split(big + a)
    assert sum(last for _, last, _ in pieces) == 4
    assert frames.ends == [(len(pieces) - 2, len(big)), (len(pieces) - 1, len(big) + len(a))]
