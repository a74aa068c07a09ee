"""msrpd.protocol.transact and relay_splice with a new transaction id (checklist §2.1 steps
6-7, §2.5, §2.7, §2.8), exact bytes."""

from __future__ import annotations

import pytest

from msrpd.protocol.errors import LocalProtocolError
from msrpd.protocol.events import BodyPiece, FrameEnd
from msrpd.protocol.frame import Frame
from msrpd.protocol.grammar import FIRST_LINE
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.splice import relay_splice
from msrpd.protocol.transact import (
    TID_LENGTH,
    end_line_in_body,
    header_in,
    make_tid,
    received_range,
    response_facts,
    retid_end,
    tid_owner,
    tid_prefix,
)
from msrpd.protocol.writer import build_response

from .golden import read_all

A = "msrp://a.example:9892/as;tcp"
B = "msrp://b.example:9893/bs;tcp"
TA = "msrp://r.example:2855/ta;tcp"
R2 = "msrp://r2.example:2855;tcp"
NEW = b"01000a" + b"f" * 20


def crlf(*lines: str) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


def frames(raw: bytes, limits: ReaderLimits | None = None) -> list[object]:
    out = list(read_all(raw, limits))
    assert not any(isinstance(e, Exception) for e in out), out
    return out


def parse(raw: bytes) -> Frame:
    (frame,) = frames(raw)
    assert isinstance(frame, Frame)
    return frame


def test_ids_name_their_owner_and_are_idents() -> None:
    tid = make_tid(tid_prefix(1, 10), "f" * 20)
    assert tid == NEW and len(tid) == TID_LENGTH == 26
    assert tid_owner(tid) == (1, 10)
    assert tid_owner(make_tid(tid_prefix(255, 65535), "0" * 20)) == (255, 65535)
    m = FIRST_LINE.fullmatch(b"MSRP " + tid + b" 200 OK")
    assert m is not None and m[1] == tid  # RFC 4975 ident: 4-32 chars, alnum first


@pytest.mark.parametrize(
    "tid", [b"a1b2", b"01000A" + b"f" * 20, b"01000a" + b"f" * 19, b"01000a" + b"f" * 21, b"x" * 26]
)
def test_other_ids_are_not_ours(tid: bytes) -> None:
    assert tid_owner(tid) is None


@pytest.mark.parametrize("args", [(256, 0), (0, 65536), (-1, 0)])
def test_tid_prefix_refuses_what_does_not_fit(args: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        tid_prefix(*args)


def test_forwarded_request_gets_new_tid_in_first_and_end_line() -> None:
    frame = parse(
        crlf(
            "MSRP a1 SEND",
            f"To-Path: {TA} {B}",
            f"From-Path: {A}",
            "Message-ID: m1",
            "Content-Type: text/plain",
            "",
            "a1 body -------a1$",
            "-------a1$",
        )
    )
    assert relay_splice(frame, NEW) == crlf(
        f"MSRP {NEW.decode()} SEND",
        f"To-Path: {B}",
        f"From-Path: {TA} {A}",
        "Message-ID: m1",
        "Content-Type: text/plain",
        "",
        "a1 body -------a1$",  # the body is the sender's: untouched
        f"-------{NEW.decode()}$",
    )


def test_response_mapped_back_to_the_original_tid() -> None:
    """Checklist §2.7 step 5: our URI leaves To-Path for the front of From-Path, the id is
    the request's again (case 16: To-Path a, From-Path `TA r2`)."""
    response = parse(
        crlf(f"MSRP {NEW.decode()} 401 Unauthorized", f"To-Path: {TA} {A}", f"From-Path: {R2}")
        + b"-------"
        + NEW
        + b"$\r\n"
    )
    assert relay_splice(response, b"orig1") == crlf(
        "MSRP orig1 401 Unauthorized", f"To-Path: {A}", f"From-Path: {TA} {R2}", "-------orig1$"
    )


def test_streamed_head_and_end_line() -> None:
    body = "0123456789" * 10
    raw = crlf(
        "MSRP big1 SEND",
        f"To-Path: {TA} {B}",
        f"From-Path: {A}",
        "Message-ID: m2",
        "Content-Type: text/plain",
        "",
        body,
        "-------big1#",
    )
    out = frames(raw, ReaderLimits(max_body=16))
    head, end = out[0], out[-1]
    assert isinstance(head, Frame) and head.streamed and isinstance(end, FrameEnd)
    assert relay_splice(head, NEW) == crlf(
        f"MSRP {NEW.decode()} SEND",
        f"To-Path: {B}",
        f"From-Path: {TA} {A}",
        "Message-ID: m2",
        "Content-Type: text/plain",
        "",
    )
    assert b"".join(e.data for e in out if isinstance(e, BodyPiece)) == body.encode()
    assert retid_end(end.raw, NEW) == b"\r\n-------" + NEW + b"#\r\n"
    assert retid_end(memoryview(b"\r\n-------big1+\r\n"), NEW) == b"\r\n-------" + NEW + b"+\r\n"


def test_single_uri_to_path_has_no_next_hop() -> None:
    frame = parse(crlf("MSRP a1 SEND", f"To-Path: {TA}", f"From-Path: {A}", "-------a1$"))
    with pytest.raises(LocalProtocolError):
        relay_splice(frame, NEW)


def test_end_line_collision_in_body() -> None:
    def send(body: str) -> Frame:
        return parse(
            crlf("MSRP a1 SEND", f"To-Path: {TA} {B}", f"From-Path: {A}", "Content-Type: t/p")
            + b"\r\n"
            + body.encode()
            + b"\r\n-------a1$\r\n"
        )

    n = NEW.decode()
    assert end_line_in_body(send(f"-------{n}$"), NEW)
    assert end_line_in_body(send(f"x\r\n-------{n}+\r\nmore"), NEW)
    assert end_line_in_body(send(f"inside-------{n}"), NEW)
    assert not end_line_in_body(send(f"-------{n[:-1]}"), NEW)
    assert not end_line_in_body(send("plain"), NEW)
    bodiless = parse(crlf("MSRP a1 SEND", f"To-Path: {TA} {B}", f"From-Path: {A}", "-------a1$"))
    assert not end_line_in_body(bodiless, NEW)


@pytest.mark.parametrize(
    ("header", "received", "expected"),
    [
        (b"1-100/100", 100, b"1-100/100"),
        (b"1-*/5242880", 4096, b"1-4096/5242880"),
        (b"2049-*/*", 10, b"2049-2058/*"),
        (b"11-20/30", 0, b"11-10/30"),
        (None, 5, b"1-5/*"),
        (b"garbage", 5, b"1-5/*"),
    ],
)
def test_received_range(header: bytes | None, received: int, expected: bytes) -> None:
    assert received_range(header, received) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [(None, b"yes"), ("Failure-Report: no", b"no"), ("failure-report: Partial", b"partial")],
)
def test_failure_report(line: str | None, expected: bytes) -> None:
    lines = ["MSRP a1 SEND", f"To-Path: {TA} {B}", f"From-Path: {A}"]
    frame = parse(crlf(*lines, *([line] if line else []), "-------a1$"))
    assert frame.failure_report == expected


def test_build_response_from_kept_fields() -> None:
    assert build_response(b"a1", 408, "Request Timeout", f"{TA} {A}".encode(), TA.encode()) == (
        crlf("MSRP a1 408 Request Timeout", f"To-Path: {TA} {A}", f"From-Path: {TA}", "-------a1$")
    )
    with pytest.raises(LocalProtocolError):
        build_response(b"a1", 40, "x", b"a", b"b")


@pytest.mark.parametrize(
    "lines",
    [
        [],
        ["Message-ID: m1", "Byte-Range: 1-5/5"],
        ["failure-report:  Partial \t", "MESSAGE-ID:m2", "byte-range: 1-*/*"],
        ["Failure-Report: no", "Failure-Report: yes", "Message-ID: a", "Message-ID: b"],
        ["failure-report: partial", "Failure-Report: no"],
        ["Content-Description: failure-free", "Failure-Report: no"],
        ["X-Failure-Report: no", "X-Message-ID: x", "Byte-Range-X: 1"],
        ["Success-Report: yes", "Content-Type: text/plain"],
    ],
)
def test_header_in_agrees_with_header(lines: list[str]) -> None:
    """The fast lookup gives what Frame.header gives: first header of a name, any case."""
    frame = parse(
        crlf("MSRP a1 SEND", f"To-Path: {TA} {B}", f"From-Path: {A}", *lines, "-------a1$")
    )
    head = frame.buf[: frame.hdr_end]
    for name in (b"failure-report", b"message-id", b"byte-range", b"to-path", b"from-path"):
        assert header_in(head, name + b":") == frame.header(name), name
    fr = frame.header(b"failure-report")
    assert frame.failure_report == (b"yes" if fr is None else fr.lower())


@pytest.mark.parametrize(
    ("raw", "facts"),
    [
        (
            crlf("MSRP r1 200 OK", f"To-Path: {TA}", f"From-Path: {B}", "-------r1$"),
            (b"r1", 200, b"OK", TA.encode()),
        ),
        (
            crlf("MSRP r2 415", f"To-Path:  {TA}  {A}", f"From-Path: {B}", "-------r2$"),
            (b"r2", 415, b"", TA.encode()),
        ),
        (
            crlf("MSRP r3 401 Who are you", f"to-path: {TA} {A}", f"From-Path: {R2}", "-------r3$"),
            (b"r3", 401, b"Who are you", TA.encode()),
        ),
    ],
)
def test_response_facts_read_a_handed_response(
    raw: bytes, facts: tuple[bytes, int, bytes, bytes]
) -> None:
    frame = parse(raw)  # what the reading worker accepted
    assert response_facts(raw) == facts == (frame.tid, frame.code, frame.reason, frame.first_to)


def test_response_facts_of_a_request_is_none() -> None:
    assert (
        response_facts(crlf("MSRP q1 SEND", f"To-Path: {TA} {B}", f"From-Path: {A}", "-------q1$"))
        is None
    )
