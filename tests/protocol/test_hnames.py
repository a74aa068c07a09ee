"""Header names in any case, written in canonical case (rfc-checklist §1.6, §6 case 8a;
msrpd/protocol/hnames.py): the reader accepts `to-path:` and notes the frame (`odd_names`),
read whole or piece by piece; only such a frame is rebuilt when relayed (relay_splice,
forward_paths, a reply's Message-ID), every byte but the names' case kept; extension
headers stay as spelled; a canonical frame takes the fast path, unflagged.
"""

from __future__ import annotations

import pytest

from msrpd.protocol.events import BodyPiece, FrameEnd, InvalidFrame
from msrpd.protocol.fastpath import read_whole_frame
from msrpd.protocol.frame import Frame
from msrpd.protocol.hnames import CANONICAL, canonical_head
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.reader import FrameReader
from msrpd.protocol.splice import forward_paths, relay_splice
from msrpd.protocol.writer import build_reply

RB = "msrp://r.example:2855/rb;tcp"
B = "msrp://b.example:9893/bs;tcp"
A = "msrp://a.example:9892/as;tcp"
DEFINED = [
    b"To-Path",
    b"From-Path",
    b"Message-ID",
    b"Byte-Range",
    b"Failure-Report",
    b"Success-Report",
    b"Content-Type",
    b"Status",
    b"Use-Path",
    b"Expires",
    b"Min-Expires",
    b"Max-Expires",
    b"WWW-Authenticate",
    b"Authorization",
    b"Authentication-Info",
    b"Content-ID",
    b"Content-Description",
    b"Content-Disposition",
]


def frame_bytes(names: dict[str, str], extra: tuple[str, ...] = (), body: bytes = b"hi") -> bytes:
    """A SEND whose header names are spelled as `names` says (canonical by default)."""

    def n(name: str) -> str:
        return names.get(name, name)

    lines = [
        "MSRP t1 SEND",
        f"{n('To-Path')}: {RB} {B}",
        f"{n('From-Path')}: {A}",
        f"{n('Message-ID')}: m1",
        *extra,
        f"{n('Byte-Range')}: 1-{len(body)}/{len(body)}",
        f"{n('Content-Type')}: text/plain",
    ]
    head = "".join(line + "\r\n" for line in lines).encode()
    return head + b"\r\n" + body + b"\r\n-------t1$\r\n"


def read(data: bytes, step: int | None = None, limits: ReaderLimits | None = None) -> list[object]:
    reader = FrameReader(limits)
    out: list[object] = []
    for at in range(0, len(data), step or len(data)):
        reader.receive_data(data[at : at + (step or len(data))])
        out.extend(reader.events())
    return out


def one_frame(data: bytes, step: int | None = None) -> Frame:
    (frame,) = read(data, step)
    assert isinstance(frame, Frame) and frame.buf == data
    return frame


CANON = frame_bytes({}, ("X-Foo: bar",))
LOWER = frame_bytes(
    {"To-Path": "to-path", "Message-ID": "MESSAGE-ID", "Content-Type": "content-TYPE"},
    ("x-foo: bar",),
)


@pytest.mark.parametrize("step", [None, 1, 7], ids=["whole", "bytewise", "pieces"])
def test_a_canonical_frame_is_not_flagged_and_an_odd_one_is(step: int | None) -> None:
    assert not one_frame(CANON, step).odd_names
    odd = one_frame(LOWER, step)
    assert odd.odd_names
    assert (odd.to_path, odd.message_id, odd.header("x-foo")) == ([RB, B], b"m1", b"bar")


def test_the_fast_path_takes_canonical_heads_only() -> None:
    """The one-regex read (no cost beyond it) is for canonical heads; an odd one is read by
    the state machine, which notes it."""
    frame = read_whole_frame(bytearray(CANON), 1 << 20)
    assert frame is not None and not frame.odd_names
    assert read_whole_frame(bytearray(LOWER), 1 << 20) is None


@pytest.mark.parametrize("name", DEFINED)
def test_each_defined_name_in_another_case_is_flagged(name: bytes) -> None:
    for spelled in (name.lower(), name.upper(), name.swapcase()):
        if name in (b"To-Path", b"From-Path", b"Message-ID", b"Byte-Range", b"Content-Type"):
            data = frame_bytes({name.decode(): spelled.decode()})
        else:
            data = frame_bytes({}, (f"{spelled.decode()}: v",))
        assert one_frame(data).odd_names, spelled
        assert one_frame(data, 1).odd_names, spelled


@pytest.mark.parametrize(
    "line", ["x-foo: bar", "X-FOO: bar", "Message-IDs: x", "content-typo: y", "Statuses: 1"]
)
def test_extension_headers_are_not_flagged_and_not_rewritten(line: str) -> None:
    frame = one_frame(frame_bytes({}, (line,)))
    assert not frame.odd_names
    assert relay_splice(frame) == relay_splice(one_frame(frame_bytes({}, (line,)), 1))
    assert line.encode() + b"\r\n" in relay_splice(frame)


def test_a_second_to_path_in_any_case_is_still_refused() -> None:
    for second in ("To-Path", "to-path", "FROM-PATH"):
        (event,) = read(frame_bytes({}, (f"{second}: {B}",)))
        assert isinstance(event, InvalidFrame), second


def test_relay_splice_emits_canonical_names_and_keeps_every_other_byte() -> None:
    odd, canon = one_frame(LOWER), one_frame(frame_bytes({}, ("x-foo: bar",)))
    assert relay_splice(odd) == relay_splice(canon)
    assert relay_splice(odd, b"n3w") == relay_splice(canon, b"n3w")
    out = relay_splice(odd, b"n3w")
    assert out.startswith(b"MSRP n3w SEND\r\nTo-Path: " + B.encode() + b"\r\nFrom-Path: ")
    assert b"\r\nMessage-ID: m1\r\nx-foo: bar\r\n" in out  # the extension header as spelled
    assert b"\r\nContent-Type: text/plain\r\n\r\nhi\r\n-------n3w$\r\n" in out
    assert len(out) == len(relay_splice(canon, b"n3w"))


def test_a_streamed_head_and_forward_paths_are_canonical_too() -> None:
    body = b"z" * 300
    data = frame_bytes({"From-Path": "FROM-path", "Byte-Range": "byte-range"}, body=body)
    head, *rest = read(data, limits=ReaderLimits(max_body=100))
    assert isinstance(head, Frame) and head.streamed and head.odd_names
    assert isinstance(rest[-1], FrameEnd)
    assert b"".join(p.data for p in rest if isinstance(p, BodyPiece)) == body
    spliced = relay_splice(head, b"n3w")
    assert b"\r\nFrom-Path: " in spliced and b"\r\nByte-Range: 1-300/300\r\n" in spliced
    assert b"FROM-path" not in spliced and b"byte-range" not in spliced
    forwarded = forward_paths(one_frame(LOWER), B, None)
    assert forwarded.startswith(b"MSRP t1 SEND\r\nTo-Path: " + B.encode() + b"\r\nFrom-Path: ")
    assert b"\r\nMessage-ID: m1\r\n" in forwarded and b"MESSAGE-ID" not in forwarded


def test_a_reply_copies_message_id_in_canonical_case() -> None:
    reply = build_reply(one_frame(LOWER), 200, "OK")
    assert reply == (
        b"MSRP t1 200 OK\r\nTo-Path: "
        + A.encode()
        + b"\r\nFrom-Path: "
        + RB.encode()
        + b"\r\nMessage-ID: m1\r\n-------t1$\r\n"
    )


def test_canonical_head_changes_case_only() -> None:
    lines = b"".join(b"%s: v\r\n" % name.swapcase() for name in DEFINED)
    data = b"MSRP t1 SEND\r\n" + lines + b"x-Other: Y\r\n"
    out = canonical_head(data + b"\r\nbody", 14, len(data))
    assert (
        out == b"MSRP t1 SEND\r\n" + b"".join(b"%s: v\r\n" % n for n in DEFINED) + b"x-Other: Y\r\n"
    )
    assert set(CANONICAL.values()) == set(DEFINED)
