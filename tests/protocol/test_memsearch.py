"""The end-line search over big reads (memsearch.py, issue 16): the same answers as
bytes.find on either side of the size where memmem takes over, and readers that find a big
body's end-line wherever it falls."""

from __future__ import annotations

import random

import pytest

from msrpd.protocol import memsearch
from msrpd.protocol.events import BodyPiece, FrameEnd
from msrpd.protocol.frame import Frame
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.memsearch import BIG, find
from msrpd.protocol.reader import FrameReader

from .corpus import send

MARKER = b"\r\n-------t1"


def test_memmem_is_there() -> None:
    # Linux's C library has it; without it every search would be bytes.find's.
    assert memsearch._MEMMEM is not None


@pytest.mark.parametrize("size", [BIG - 1, BIG, BIG + 1, 5 * BIG])
def test_find_agrees_with_bytes_find(size: int) -> None:
    rng = random.Random(size)
    body = bytearray(rng.randbytes(size))
    places = [0, 1, size // 2, size - len(MARKER)]
    for at in places:
        data = bytearray(body)
        data[at : at + len(MARKER)] = MARKER
        for start in (0, 1, at, at + 1, size - 3, size, size + 5, -1, -len(MARKER), -size):
            for hay in (bytes(data), data):
                assert find(hay, MARKER, start) == bytes(data).find(MARKER, start), (at, start)
    assert find(bytes(body), MARKER) == bytes(body).find(MARKER)
    assert find(body, b"not there at all, no", 0) == -1


def test_a_searched_bytearray_can_be_resized() -> None:
    data = bytearray(3 * BIG) + MARKER
    assert find(data, MARKER, 7) == 3 * BIG
    del data[:BIG]  # raises BufferError if the search left the buffer exported
    data += b"x"
    assert find(data, MARKER) == 2 * BIG


def _pieces(reader: FrameReader) -> tuple[bytes, FrameEnd | Frame | None]:
    body, last = b"", None
    for event in reader.events():
        if isinstance(event, BodyPiece):
            body += bytes(event.data)
        elif isinstance(event, FrameEnd | Frame):
            last = event
    return body, last


@pytest.mark.parametrize("max_body", [1024, 1024 * 1024])
def test_a_big_body_ends_where_its_end_line_is(max_body: int) -> None:
    # Streamed (max_body 1024) or gathered whole: reads of 100 KB, the end-line and
    # look-alikes (another id, no flag) anywhere in them.
    rng = random.Random(max_body)
    body = bytearray(rng.randbytes(300_000))
    body[1000:1020] = b"\r\n-------t2$\r\n12345"  # another transaction's end-line
    body[150_000:150_012] = b"\r\n-------t1x"  # this id, but not an end-line
    data = send("t1", bytes(body))
    for read_size in (100_000, 65_536 + 7, BIG):
        reader = FrameReader(ReaderLimits(max_body=max_body))
        got, last = b"", None
        for at in range(0, len(data), read_size):
            reader.receive_data(data[at : at + read_size])
            pieces, end = _pieces(reader)
            got += pieces
            last = end or last
            if isinstance(end, Frame) and not end.streamed:
                got = bytes(end.body or b"")
        assert got == bytes(body), read_size
        assert isinstance(last, FrameEnd | Frame) and last.tid == b"t1"
        assert reader.buffered == 0
