"""A streamed body's reads (issue 16): passed on as pieces without a copy when they hold no
end-line, only a tail that begins the end-line held back, and nothing lost or reordered."""

from __future__ import annotations

from msrpd.protocol.events import BodyPiece, FrameEnd, InvalidFrame
from msrpd.protocol.frame import Frame
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.reader import FrameReader
from msrpd.protocol.status import Status

from .corpus import send

LIMITS = ReaderLimits(max_body=1024)
END = b"\r\n-------s1$\r\n"


def streaming(tid: str = "s1", limits: ReaderLimits = LIMITS) -> tuple[FrameReader, bytes]:
    """A reader inside a streamed body (its head and 2000 bytes read), and the frame's head."""
    reader = FrameReader(limits)
    data = send(tid, b"h" * 2000)
    head_end = data.index(b"\r\n\r\n") + 4
    reader.receive_data(data[: head_end + 2000])
    head, piece = list(reader.events())
    assert isinstance(head, Frame) and head.streamed
    assert isinstance(piece, BodyPiece) and piece.data == b"h" * 2000
    assert reader.buffered == 0
    return reader, data[:head_end]


def test_a_read_inside_a_streamed_body_is_the_piece_itself() -> None:
    reader, _ = streaming()
    for n in range(3):
        read = bytes([65 + n]) * 5000 + b"\r\n-------s2$\r\n" + b"\r\n-x"  # not its end-line
        reader.receive_data(read)
        assert reader.buffered == len(read)
        (piece,) = list(reader.events())
        assert isinstance(piece, BodyPiece) and piece.data is read
        assert reader.buffered == 0


def test_only_a_tail_that_begins_the_end_line_is_held() -> None:
    reader, _ = streaming()
    reader.receive_data(b"a" * 100 + b"\r\n---")
    (piece,) = list(reader.events())
    assert isinstance(piece, BodyPiece) and piece.data == b"a" * 100
    assert reader.buffered == 5
    # The held tail was data after all: it goes first, in order, then the read after it.
    reader.receive_data(b"-x" + b"b" * 50)
    (piece,) = list(reader.events())
    assert isinstance(piece, BodyPiece) and piece.data == b"\r\n----x" + b"b" * 50
    assert reader.buffered == 0
    reader.receive_data(b"c" * 10 + b"\r")  # a lone CR can begin it too
    (piece,) = list(reader.events())
    assert isinstance(piece, BodyPiece) and piece.data == b"c" * 10
    reader.receive_data(b"\n-------s1$\r\n")
    (end,) = list(reader.events())
    assert isinstance(end, FrameEnd) and end.raw == END and end.flag == b"$"


def test_the_end_line_inside_a_read_ends_the_frame_and_the_next_one_is_read() -> None:
    reader, _ = streaming()
    after = send("n1", b"next")
    reader.receive_data(b"z" * 300 + END + after)
    piece, end, frame = list(reader.events())
    assert isinstance(piece, BodyPiece) and piece.data == b"z" * 300
    assert isinstance(end, FrameEnd) and end.raw == END
    assert isinstance(frame, Frame) and frame.tid == b"n1" and bytes(frame.body or b"") == b"next"
    assert reader.buffered == 0


def test_two_reads_before_the_events_keep_their_order() -> None:
    reader, _ = streaming()
    reader.receive_data(b"1" * 10)
    reader.receive_data(b"2" * 10)
    assert reader.buffered == 20
    pieces = list(reader.events())
    assert b"".join(p.data for p in pieces if isinstance(p, BodyPiece)) == b"1" * 10 + b"2" * 10


def test_a_refused_body_passes_and_the_next_frame_is_read() -> None:
    limits = ReaderLimits(max_body=64, stream_large=False)
    reader = FrameReader(limits)
    data = send("r1", b"q" * 5000) + send("n2")
    head_end = data.index(b"\r\n\r\n") + 100
    reader.receive_data(data[:head_end])
    (refused,) = list(reader.events())
    assert isinstance(refused, InvalidFrame) and refused.status == Status.STOP_SENDING
    for at in range(head_end, len(data), 1000):
        reader.receive_data(data[at : at + 1000])
        for event in reader.events():
            assert isinstance(event, Frame) and event.tid == b"n2"
            assert bytes(event.body or b"") == b"hello"
    assert reader.buffered == 0


def test_every_split_of_a_streamed_frame_rebuilds_it() -> None:
    """Reads cut anywhere around the end-line and inside look-alikes: head, pieces and end
    put together are the frame, whatever was passed through and whatever was held."""
    body = b"\r\n-------s" + b"w" * 3000 + b"\r\n-------s1" + b"v" * 40 + b"\r"
    data = send("s1", body)
    for step in (1, 2, 5, 11, 12, 13, 14, 100, 999):
        reader = FrameReader(LIMITS)
        out = pieces = b""
        for at in range(0, len(data), step):
            reader.receive_data(data[at : at + step])
            for event in reader.events():
                if isinstance(event, Frame):
                    out += event.buf
                elif isinstance(event, BodyPiece):
                    out += event.data
                    pieces += event.data
                else:
                    assert isinstance(event, FrameEnd)
                    out += event.raw
        assert out == data, step
        assert pieces == body, step  # no byte of the end-line in a piece


# -- a big whole frame's reads kept apart and joined once (gather.py) ------------------------

WHOLE = bytes(range(256)) * 1200  # 300 KiB: over GATHER_MIN, under the 1 MiB whole-frame limit


def events_of(reader: FrameReader, data: bytes, cuts: list[int]) -> list[object]:
    out: list[object] = []
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        reader.receive_data(data[a:b])
        out += reader.events()
    return out


def summary(events: list[object]) -> list[tuple[object, ...]]:
    def one(e: object) -> tuple[object, ...]:
        if isinstance(e, Frame):
            return ("frame", e.tid, e.flag, e.buf, None if e.body is None else bytes(e.body))
        if isinstance(e, BodyPiece):
            return ("piece", e.data)
        return (type(e).__name__, e)

    # Pieces are cut where reads were: compare a streamed body as one piece.
    out: list[tuple[object, ...]] = []
    for item in map(one, events):
        if item[0] == "piece" and out and out[-1][0] == "piece":
            out[-1] = ("piece", out[-1][1] + item[1])  # type: ignore[operator]
        else:
            out.append(item)
    return out


def test_a_big_whole_frame_in_reads_is_one_frame_then_the_next() -> None:
    data = send("g1", WHOLE) + send("g2", b"after")
    expected = summary(events_of(FrameReader(), data, []))
    assert [e[0] for e in expected] == ["frame", "frame"] and expected[0][4] == WHOLE
    for step in (4096, 65_536, 100_000, 262_144):
        reader = FrameReader()
        got = events_of(reader, data, list(range(step, len(data), step)))
        assert summary(got) == expected, step
        assert reader.buffered == 0


def test_a_big_whole_frame_last_in_the_stream_keeps_its_first_line() -> None:
    """Nothing follows its end-line in the read: the frame's method, tid and paths are its
    own, not read from the buffer after it was emptied."""
    data = send("g0", WHOLE)
    reader = FrameReader()
    (frame,) = events_of(reader, data, [100_000, 200_000])
    assert isinstance(frame, Frame) and frame.buf == data
    assert (frame.tid, frame.method, frame.flag) == (b"g0", b"SEND", b"$")
    assert frame.to_path == whole_frame(data).to_path


def whole_frame(data: bytes) -> Frame:
    reader = FrameReader()
    reader.receive_data(data)
    (frame,) = list(reader.events())
    assert isinstance(frame, Frame)
    return frame


def test_every_cut_around_a_big_frames_end_line() -> None:
    data = send("g3", WHOLE + b"\r\n-------g3x" + b"\r\n------") + send("g4", b"next")
    expected = summary(events_of(FrameReader(), data, []))
    end = data.index(b"\r\n-------g3$")
    for cut in range(end - 20, end + 30):
        got = events_of(FrameReader(), data, [100_000, cut, cut + 7])
        assert summary(got) == expected, cut


def test_a_gathered_body_over_the_limit_is_streamed() -> None:
    limits = ReaderLimits(max_body=128 * 1024)
    data = send("g5", WHOLE)
    reader = FrameReader(limits)
    got = events_of(reader, data, list(range(70_000, len(data), 50_000)))
    head, *pieces, end = got
    assert isinstance(head, Frame) and head.streamed
    assert isinstance(end, FrameEnd) and end.raw == b"\r\n-------g5$\r\n"
    assert b"".join(p.data for p in pieces if isinstance(p, BodyPiece)) == WHOLE


def test_a_frame_half_gathered_detaches_whole() -> None:
    data = send("g7", WHOLE) + send("g8")
    reader = FrameReader()
    reader.receive_data(data[:100_000])
    assert list(reader.events()) == []  # the head is read: a body is arriving
    reader.receive_data(data[100_000:150_000])  # kept apart
    reader.receive_data(data[150_000:200_000])
    assert list(reader.events()) == []
    assert reader.buffered == 200_000
    held = reader.detach()
    assert held == data[:200_000]
    fresh = FrameReader()
    fresh.receive_data(held)
    fresh.receive_data(data[200_000:])
    assert [e.tid for e in fresh.events() if isinstance(e, Frame)] == [b"g7", b"g8"]


def test_a_gathered_body_over_the_limit_streams_its_reads_as_they_came() -> None:
    """Kept apart, then found too big: the reads after the buffer go on as the pieces
    themselves (no copy), only a tail that could begin the end-line held back."""
    limits = ReaderLimits(max_body=128 * 1024)
    body = WHOLE[:200_000] + b"\r\n-------g"  # a read ends with what begins the end-line
    data = send("g9", body + WHOLE[:50_000])
    reader = FrameReader(limits)
    first = data.index(body) + 70_000
    reads = [data[:first], data[first : first + 60_000], data[first + 60_000 : first + 130_010]]
    events: list[object] = []
    for read in reads:
        reader.receive_data(read)
        events += reader.events()
    head, *pieces = events
    assert isinstance(head, Frame) and head.streamed and head.tid == b"g9"
    datas = [p.data for p in pieces if isinstance(p, BodyPiece)]
    assert len(datas) == len(pieces) == 3
    assert datas[1] is reads[1]  # as it came
    assert reads[2].startswith(datas[2]) and len(reads[2]) - len(datas[2]) == len(b"\r\n-------g")
    assert reader.buffered == len(b"\r\n-------g")  # the tail that could begin the end-line
    reader.receive_data(data[first + 130_010 :])
    rest = list(reader.events())
    assert isinstance(rest[-1], FrameEnd) and rest[-1].tid == b"g9"
    datas += [p.data for p in rest if isinstance(p, BodyPiece)]
    assert b"".join(datas) == body + WHOLE[:50_000]
    assert reader.buffered == 0


def test_a_gathered_body_whose_last_read_is_short_streams_whole() -> None:
    # The last read is shorter than the end-line's start: the usual search, bytes intact.
    limits = ReaderLimits(max_body=128 * 1024)
    data = send("g10", WHOLE) + send("g11")
    for cuts in ([70_000, 140_000, 140_003], [70_000, 140_000, 140_001, 140_010, 140_020]):
        got = events_of(FrameReader(limits), data, cuts)
        head, *pieces, end, nxt = got
        assert isinstance(head, Frame) and head.streamed
        assert isinstance(end, FrameEnd) and end.tid == b"g10"
        assert isinstance(nxt, Frame) and nxt.tid == b"g11"
        assert b"".join(p.data for p in pieces if isinstance(p, BodyPiece)) == WHOLE
