"""Feed bytes to a FrameReader in different splits and summarise what comes out."""

from __future__ import annotations

import random
from collections.abc import Iterable

from msrpd.protocol.errors import RemoteProtocolError
from msrpd.protocol.events import (
    BodyPiece,
    ConnectionClosed,
    FrameEnd,
    InvalidFrame,
    SipMessage,
)
from msrpd.protocol.frame import Frame
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.reader import FrameReader

Summary = tuple[object, ...]


def frame_summary(frame: Frame) -> Summary:
    body = frame.body
    return (
        "frame",
        frame.tid,
        frame.method,
        frame.code,
        frame.reason,
        frame.flag,
        None if body is None else bytes(body),
        tuple(frame.headers()),
        tuple(frame.to_path),
        tuple(frame.from_path),
    )


def summarise(events: Iterable[object]) -> list[Summary]:
    """One summary per frame: streamed frames are joined back into one entry."""
    out: list[Summary] = []
    streaming: list[bytes] | None = None
    head: Frame | None = None
    for event in events:
        if isinstance(event, Frame) and event.streamed:
            head, streaming = event, []
        elif isinstance(event, BodyPiece):
            assert streaming is not None
            streaming.append(event.data)
        elif isinstance(event, FrameEnd):
            assert head is not None and streaming is not None
            out.append(("streamed", head.tid, head.method, event.flag, b"".join(streaming)))
            head = streaming = None
        elif isinstance(event, Frame):
            out.append(frame_summary(event))
        elif isinstance(event, InvalidFrame):
            out.append(("invalid", event.tid, event.status, event.is_request))
        elif isinstance(event, SipMessage):
            out.append(("sip", event.raw))
        elif isinstance(event, ConnectionClosed):
            out.append(("closed",))
        else:
            raise AssertionError(f"unexpected event {event!r}")
    return out


def feed(
    data: bytes, chunks: Iterable[int] | None = None, limits: ReaderLimits | None = None
) -> list[Summary]:
    """Feed `data` cut into pieces of the given sizes (whole when None), then EOF."""
    reader = FrameReader(limits)
    events: list[object] = []
    pos = 0
    sizes = list(chunks) if chunks is not None else [len(data)]
    try:
        for size in sizes:
            if pos >= len(data):
                break
            reader.receive_data(data[pos : pos + size])
            pos += size
            events.extend(reader.events())
        if pos < len(data):
            reader.receive_data(data[pos:])
            events.extend(reader.events())
        reader.receive_data(b"")
        events.extend(reader.events())
    except RemoteProtocolError as exc:
        return [*summarise(events), ("error", exc.status, exc.tid)]
    return summarise(events)


def random_splits(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    while length > 0:
        size = rng.choice((1, 2, 3, 7, 13, 64, 500, 4096))
        sizes.append(size)
        length -= size
    return sizes


def splits(length: int) -> dict[str, list[int] | None]:
    """The named ways every corpus entry is fed."""
    return {
        "whole": None,
        "bytewise": [1] * length,
        "random1": random_splits(length, 1),
        "random2": random_splits(length, 2),
        "random3": random_splits(length, 3),
    }
