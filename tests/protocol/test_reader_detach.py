"""FrameReader.detach: the bytes a fresh reader continues from when a connection moves to
another worker. At every split point of every corpus case where detach answers, the events
of the first reader so far plus those of a fresh reader fed the detached bytes and the rest
must equal the events of one reader fed everything."""

from __future__ import annotations

import pytest

from msrpd.protocol.errors import RemoteProtocolError
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.reader import FrameReader, ReaderState

from .corpus import CASES, Case
from .feed import Summary, summarise

LIMITS = ReaderLimits(max_head=4096, max_body=64)  # small, so streamed bodies occur


def _drain(reader: FrameReader, out: list[object]) -> bool:
    try:
        out.extend(reader.events())
    except RemoteProtocolError as exc:
        out.append(("error", exc.status))
        return False
    return True


def _feed(reader: FrameReader, data: bytes, out: list[object], eof: bool) -> bool:
    if data:
        reader.receive_data(data)
    if eof:
        reader.receive_data(b"")
    return _drain(reader, out)


def _summary(events: list[object]) -> list[Summary]:
    """Event summaries, then the fatal error if one ended the stream."""
    errors = [e for e in events if isinstance(e, tuple)]
    return summarise(e for e in events if not isinstance(e, tuple)) + errors


def _whole(data: bytes) -> list[Summary]:
    events: list[object] = []
    _feed(FrameReader(LIMITS), data, events, eof=True)
    return _summary(events)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_detach_then_continue_matches_one_reader(case: Case) -> None:
    expected = _whole(case.data)
    answered = 0
    for cut in range(len(case.data) + 1):
        first, events = FrameReader(LIMITS), []  # type: ignore[var-annotated]
        if not _feed(first, case.data[:cut], events, eof=False):
            continue
        held = first.detach()
        if held is None:
            assert first.state not in (ReaderState.IDLE, ReaderState.HEAD)
            continue
        answered += 1
        _feed(FrameReader(LIMITS), held + case.data[cut:], events, eof=True)
        assert _summary(events) == expected, (case.name, cut, first.state)
    assert answered > 0


def test_no_detach_inside_a_streamed_body_or_after_eof() -> None:
    reader = FrameReader(LIMITS)
    reader.receive_data(
        b"MSRP t1 SEND\r\nTo-Path: msrp://a:1/s;tcp\r\n"
        b"From-Path: msrp://b:2/s;tcp\r\n\r\n" + b"x" * 200
    )
    list(reader.events())
    assert reader.state is ReaderState.STREAM and reader.detach() is None
    eof = FrameReader(LIMITS)
    eof.receive_data(b"MSRP t2 SE")
    eof.receive_data(b"")
    assert eof.detach() is None
