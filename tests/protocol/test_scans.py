"""The hand-written searches of the hot path against the bytes method they stand for.

fastpath._end_line is data.find(CRLF "-------" tid, start) (the end-line, RFC 4975 §7.1) with
its first _SCAN_MAX bytes scanned by a Horspool skip, and writer._crlf_at is buf.find(CRLF)
bounded by the head (issue 16). Both run compiled and interpreted; a wrong skip would lose an
end-line (a frame read as longer than it is) or find one too late, so every case here is
compared with bytes.find, markers straddling the scan's limit included.
"""

from __future__ import annotations

import random

import pytest

from msrpd.protocol import fastpath, writer

MARK = b"\r\n-------"
SCAN = 1024  # fastpath._SCAN_MAX


def expected(data: bytes, start: int, tid: bytes) -> int:
    return data.find(MARK + tid, start)


# Bytes a body may hold that look like part of an end-line: each can stop or mislead a skip.
PIECES = [b"\r", b"\n", b"-", b"\r\n", b"-------", b"\r\n------", b"\r\n-------", b"x", b"ab"]


def bodies(rng: random.Random, tid: bytes, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        pick = rng.random()
        if pick < 0.05:
            out += MARK + tid[: rng.randrange(len(tid) + 1)]  # a marker with part of the tid
        elif pick < 0.08:
            out += MARK + b"o" + tid  # another transaction's end-line
        else:
            out += rng.choice(PIECES)
    return bytes(out[:size])


@pytest.mark.parametrize("seed", range(40))
def test_end_line_is_find_for_generated_bodies(seed: int) -> None:
    rng = random.Random(seed)
    tid = rng.choice([b"t", b"a1", b"tid-9", b"0123456789abcdef" * 4])
    for _ in range(200):
        size = rng.choice([0, 1, 8, 9, 10, 100, rng.randrange(2 * SCAN + 64)])
        body = bodies(rng, tid, size)
        data = b"HEAD\r\n" + body
        if rng.random() < 0.7:
            data += MARK + tid + b"$\r\n" + body[: rng.randrange(len(body) + 1)]
        for start in {0, 4, 6, max(0, len(data) - 12), rng.randrange(len(data) + 1)}:
            assert fastpath._end_line(data, start, tid) == expected(data, start, tid), (
                data,
                start,
                tid,
            )


@pytest.mark.parametrize("shift", range(-12, 12))
def test_an_end_line_across_the_scan_limit_is_found(shift: int) -> None:
    tid = b"t77"
    start = 6
    at = start + SCAN + shift  # where the marker starts: before, across and after the limit
    for filler in (b"a", b"-", b"\r\n", b"\n-"):
        data = b"HEAD\r\n" + (filler * SCAN * 2)[: at - start] + MARK + tid + b"+\r\n"
        assert fastpath._end_line(data, start, tid) == expected(data, start, tid) == at


def test_no_end_line_and_short_data() -> None:
    for data in (b"", b"\r", MARK, MARK + b"t", b"-" * 3000, (b"\r\n------" * 300)):
        for start in range(min(len(data), 12) + 1):
            assert fastpath._end_line(data, start, b"t1") == expected(data, start, b"t1")


@pytest.mark.parametrize("seed", range(20))
def test_crlf_at_is_find_before_the_stop(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        buf = bytes(rng.choice(b"\r\nab-") for _ in range(rng.randrange(40)))
        at = rng.randrange(len(buf) + 1)
        stop = rng.randrange(len(buf) + 1)
        found = buf.find(b"\r\n", at)
        want = found if found >= 0 and found + 1 < stop else -1
        assert writer._crlf_at(buf, at, stop) == want, (buf, at, stop)
