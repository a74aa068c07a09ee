"""Property: any bytes, in any split, give events or RemoteProtocolError — nothing else — and
the reader never buffers more than its limits allow."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msrpd.protocol.errors import RemoteProtocolError
from msrpd.protocol.events import BodyPiece, ConnectionClosed, FrameEnd, InvalidFrame, SipMessage
from msrpd.protocol.frame import Frame
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.reader import FrameReader

from .corpus import CASES

LIMITS = ReaderLimits(max_head=512, max_body=256, max_sip=1024)
EVENT_TYPES = (Frame, BodyPiece, FrameEnd, InvalidFrame, SipMessage, ConnectionClosed)
# Most a reader may hold: a head, a whole-frame body and the end-line it waits for, plus one
# chunk just received.
BOUND = LIMITS.max_head + LIMITS.max_body + LIMITS.max_sip + 128

seeds = st.sampled_from([c.data for c in CASES if c.data])
tokens = st.sampled_from(
    [
        b"MSRP ",
        b"t1 ",
        b"SEND",
        b"\r\n",
        b"\n",
        b"\r",
        b"-------t1",
        b"$",
        b"+",
        b"#",
        b"X",
        b"To-Path: msrp://a:1/s;tcp",
        b"From-Path: msrp://b:2/x;tcp",
        b":",
        b" ",
        b"\x00",
        b"Content-Length: 3",
        b"OPTIONS sip:x SIP/2.0",
        b"200 OK",
        b"\r\n\r\n",
    ]
)


def mutated() -> st.SearchStrategy[bytes]:
    def mutate(args: tuple[bytes, int, int, bytes]) -> bytes:
        data, at, cut, insert = args
        at %= len(data) + 1
        return data[:at] + insert + data[at + cut :]

    return st.tuples(seeds, st.integers(0, 10_000), st.integers(0, 8), st.binary(max_size=8)).map(
        mutate
    )


inputs = st.one_of(
    st.binary(max_size=2048),
    st.lists(tokens, max_size=40).map(b"".join),
    mutated(),
    st.lists(st.one_of(seeds, mutated()), max_size=4).map(b"".join),
)


def run(data: bytes, cuts: list[int]) -> None:
    reader = FrameReader(LIMITS)
    chunks, pos = [], 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        chunks.append(data[pos:cut])
        pos = cut
    chunks.append(data[pos:])
    try:
        for chunk in chunks:
            if chunk:
                reader.receive_data(chunk)
            for event in reader.events():
                assert isinstance(event, EVENT_TYPES)
            assert reader.buffered <= BOUND + len(chunk)
        reader.receive_data(b"")
        events = list(reader.events())
        assert isinstance(events[-1], ConnectionClosed)
    except RemoteProtocolError as exc:
        assert exc.tid is None or isinstance(exc.tid, bytes)
        assert 400 <= exc.status <= 599


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs, st.lists(st.integers(0, 10_000), max_size=12))
def test_any_bytes_give_events_or_protocol_error(data: bytes, cuts: list[int]) -> None:
    run(data, cuts)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(1, 40))
def test_endless_input_stays_bounded(pattern: bytes, rounds: int) -> None:
    """A peer that never ends a frame (or sends only one long line) cannot grow the buffer."""
    run(
        b"MSRP t1 SEND\r\nTo-Path: msrp://a:1/s;tcp\r\nFrom-Path: msrp://b:2/x;tcp\r\n"
        b"Content-Type: a/b\r\n\r\n" + pattern * rounds * 50,
        list(range(0, 100_000, 97)),
    )
