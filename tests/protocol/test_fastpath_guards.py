"""Guards of the fast path's head walk and PathMemo (fastpath.py) no other test holds.

1. A head followed by a bare CR (no LF) is not a blank line. fastpath._ends guards this with
   `data[sep + 1] != 10`; deleting that guard made the fast path deliver such a frame as a
   Frame (body b"i" / b"\\nhi") while the state machine refuses it (400, "header line 3 has
   no colon"), and tests/protocol/test_fastpath.py, test_paths.py and test_reader.py all still
   passed (mutation run on the interpreted fast path, review of 12b89ca..aa1afcd).
2. The stream differential (fuzz_stream.py): streams of several frames on one connection, path
   lines shared so PathMemo hits, mutations aimed at the path lines; every split's events equal
   the byte-by-byte feed's.
"""

from __future__ import annotations

import pytest

from msrpd.protocol.events import InvalidFrame
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.reader import FrameReader

from . import fuzz_stream

TO = b"msrp://127.0.0.1:2855/s1a2b3;tcp msrp://127.0.0.1:7001/bob;tcp"
FROM = b"msrp://127.0.0.1:7000/alice;tcp"
HEAD = b"MSRP t1 SEND\r\nTo-Path: " + TO + b"\r\nFrom-Path: " + FROM + b"\r\n"
GOOD = HEAD + b"\r\nhi\r\n-------t1$\r\n"


@pytest.mark.parametrize("after", [b"\rhi", b"\r\r\nhi", b"\r-"])
@pytest.mark.parametrize("before", [b"", GOOD])  # alone, and after a frame (its memo)
def test_a_bare_cr_after_the_head_is_not_the_blank_line(before: bytes, after: bytes) -> None:
    data = before + HEAD + after + b"\r\n-------t1$\r\n"
    whole = fuzz_stream.run([data], ReaderLimits())
    by_byte = fuzz_stream.run([data[i : i + 1] for i in range(len(data))], ReaderLimits())
    assert whole == by_byte
    reader = FrameReader(ReaderLimits())
    if before:
        reader.receive_data(before)
        assert len(list(reader.events())) == 1
    reader.receive_data(data[len(before) :])
    events = list(reader.events())
    assert isinstance(events[0], InvalidFrame), events


@pytest.mark.parametrize("seed", range(4))
def test_streams_read_alike_in_every_split(seed: int) -> None:
    import random

    rng = random.Random(seed)
    for _ in range(25):
        frames = fuzz_stream.stream(rng)
        data = b"".join(frames)
        limits = ReaderLimits(max_body=rng.choice([0, 5, 64, 1 << 20]))
        ref = fuzz_stream.run([data[i : i + 1] for i in range(len(data))], limits)
        assert fuzz_stream.run([data], limits) == ref, frames
        assert fuzz_stream.run(frames, limits) == ref, frames
        for k in range(1, len(data), max(1, len(data) // 50)):
            assert fuzz_stream.run([data[:k], data[k:]], limits) == ref, (frames, k)


def test_a_bad_path_after_a_memo_hit_is_still_checked() -> None:
    """PathMemo.hit must say whether THIS frame's lines were the memo's: two good frames with
    the same lines (the second a hit), then one with a bad To-Path. Were `memo.hit` left set
    from the hit (mutation `memo.hit = memo.hit or hit`), the bad frame would skip PathCheck
    and be delivered; tests/protocol and tests/workers all pass under that mutation."""
    bad = HEAD.replace(b"msrp://127.0.0.1:2855/s1a2b3;tcp", b"msrp://h:0/x;tcp")
    frames = [GOOD, GOOD.replace(b"t1", b"t2"), bad + b"\r\nhi\r\n-------t1$\r\n"]
    for feed in (frames, [b"".join(frames)]):
        reader = FrameReader(ReaderLimits())
        events = []
        for chunk in feed:
            reader.receive_data(chunk)
            events += list(reader.events())
        assert [type(e).__name__ for e in events] == ["Frame", "Frame", "InvalidFrame"], events
