"""Hand-written tests of msrpd.protocol.writer with exact bytes.

Covers the reference §15 scenarios the golden transcripts do not (kamailio-msrp.md §6 relay
splice, §7 reply layout, §3.2 fake SIP message) and the writers' edge cases. Where msrpd
deliberately differs from Kamailio the test says so and why.
"""

from __future__ import annotations

import pytest

from msrpd.protocol.errors import LocalProtocolError
from msrpd.protocol.events import BodyPiece, FrameEnd, InvalidFrame
from msrpd.protocol.frame import Frame
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.sipmsg import build_sipmsg
from msrpd.protocol.splice import (
    PIECES_MIN,
    Spliced,
    forward_paths,
    relay_pieces,
    relay_splice,
    retarget,
)
from msrpd.protocol.status import Status
from msrpd.protocol.writer import (
    _STATUS_TEXTS,
    _reply_status,
    build_invalid_reply,
    build_reply,
    build_request,
)

from .golden import read_all

# Short names as in reference §0 (short hosts keep the literal frames readable).
A = "msrp://a.example:9892/as;tcp"  # the sender
B = "msrp://b.example:9893/bs;tcp"  # the receiver
RA = "msrp://r.example:2855/ra;tcp"  # the relay's Use-Path for A
RB = "msrp://r.example:2855/rb;tcp"  # the relay's Use-Path for B
R = "msrp://r.example:2855;tcp"  # the relay, no session
H = "msrp://h.example:2855/hs;tcp"  # a previous relay


def crlf(*lines: str) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


def events(raw: bytes, limits: ReaderLimits | None = None) -> list[object]:
    out = read_all(raw, limits)
    assert not any(isinstance(event, Exception) for event in out), out
    return list(out)


def parse(raw: bytes) -> Frame:
    """The one whole Frame in `raw`."""
    (frame,) = events(raw)
    assert isinstance(frame, Frame) and not frame.streamed
    assert frame.buf == raw
    return frame


def invalid(raw: bytes) -> InvalidFrame:
    (event,) = events(raw)
    assert isinstance(event, InvalidFrame)
    return event


def send(
    to_path: str = f"{RB} {B}",
    from_line: str = f"From-Path: {A}",
    *,
    tid: str = "s1",
    body: str | None = "hello",
    flag: str = "$",
    extra: tuple[str, ...] = ("Message-ID: m1",),
) -> bytes:
    head = ["MSRP " + tid + " SEND", "To-Path: " + to_path, from_line, *extra]
    if body is None:
        return crlf(*head, "-------" + tid + flag)
    return crlf(*head, "Content-Type: text/plain", "", body, "-------" + tid + flag)


# -- scenario 9: SEND A to B through one relay --------------------------------------------

SCENARIO_9 = (
    b"MSRP s1 SEND\r\n"
    b"To-Path: msrp://r.example:2855/rb;tcp msrp://b.example:9893/bs;tcp\r\n"
    b"From-Path: msrp://a.example:9892/as;tcp\r\n"
    b"Message-ID: m1\r\n"
    b"Byte-Range: 1-5/5\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"hello\r\n"
    b"-------s1$\r\n"
)


def test_scenario_9_reply() -> None:
    assert build_reply(parse(SCENARIO_9), 200, "OK") == (
        b"MSRP s1 200 OK\r\n"
        b"To-Path: msrp://a.example:9892/as;tcp\r\n"
        b"From-Path: msrp://r.example:2855/rb;tcp\r\n"
        b"Message-ID: m1\r\n"
        b"-------s1$\r\n"
    )


def test_scenario_9_relay() -> None:
    out = relay_splice(parse(SCENARIO_9))
    assert out == (
        b"MSRP s1 SEND\r\n"
        b"To-Path: msrp://b.example:9893/bs;tcp\r\n"
        b"From-Path: msrp://r.example:2855/rb;tcp msrp://a.example:9892/as;tcp\r\n"
        b"Message-ID: m1\r\n"
        b"Byte-Range: 1-5/5\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"hello\r\n"
        b"-------s1$\r\n"
    )
    assert len(out) == len(SCENARIO_9)  # the URI only moved


# -- scenario 10: two relays ----------------------------------------------------------------


def test_scenario_10_two_relays() -> None:
    frame = parse(send(f"{RA} {RB} {B}"))
    assert build_reply(frame, 200, "OK") == crlf(
        "MSRP s1 200 OK", f"To-Path: {A}", f"From-Path: {RA}", "Message-ID: m1", "-------s1$"
    )
    once = relay_splice(frame)
    assert once == crlf(
        "MSRP s1 SEND",
        f"To-Path: {RB} {B}",
        f"From-Path: {RA} {A}",
        "Message-ID: m1",
        "Content-Type: text/plain",
        "",
        "hello",
        "-------s1$",
    )
    # The second relay (RB) rotates again: B gets From-Path RB RA A (reference §15 item 10).
    twice = relay_splice(parse(once))
    assert twice == crlf(
        "MSRP s1 SEND",
        f"To-Path: {B}",
        f"From-Path: {RB} {RA} {A}",
        "Message-ID: m1",
        "Content-Type: text/plain",
        "",
        "hello",
        "-------s1$",
    )


# -- scenario 31 and friends: the From-Path value is found by parsing, not at byte 11 -------


@pytest.mark.parametrize(
    ("from_line", "relayed_line"),
    [
        # Kamailio: "From-Path:msrp://r.example:2855/rb;tcp srp://a..." (one character lost).
        (f"From-Path:{A}", f"From-Path:{RB} {A}"),
        # Kamailio: "From-Path:  RB  A" (its cut is at byte 11, inside the blanks).
        (f"From-Path:  {A}", f"From-Path:  {RB} {A}"),
        (f"From-Path:\t{A}", f"From-Path:\t{RB} {A}"),
    ],
    ids=["no-space", "two-spaces", "tab"],
)
def test_scenario_31_from_path_spacing_is_kept(from_line: str, relayed_line: str) -> None:
    frame = parse(send(from_line=from_line, body=None))
    assert relay_splice(frame) == crlf(
        "MSRP s1 SEND", f"To-Path: {B}", relayed_line, "Message-ID: m1", "-------s1$"
    )
    assert build_reply(frame, 200, "OK") == crlf(
        "MSRP s1 200 OK", f"To-Path: {A}", f"From-Path: {RB}", "Message-ID: m1", "-------s1$"
    )


# -- scenario 32: blanks between To-Path URIs ------------------------------------------------


@pytest.mark.parametrize("gap", ["  ", "\t", " \t "], ids=["two-spaces", "tab", "mixed"])
def test_scenario_32_blank_run_in_to_path_is_one_separator(gap: str) -> None:
    # Kamailio splits on single spaces: "RB  B" gives an empty next hop, so nothing is
    # relayed. msrpd splits on runs of SP/HTAB (RFC 4975 §9 path = URI *(SP URI) read
    # leniently) and relays to B.
    frame = parse(send(f"{RB}{gap}{B}", body=None))
    assert frame.to_path == [RB, B]
    assert relay_splice(frame) == crlf(
        "MSRP s1 SEND", f"To-Path: {B}", f"From-Path: {RB} {A}", "Message-ID: m1", "-------s1$"
    )
    assert build_reply(frame, 200, "OK") == crlf(
        "MSRP s1 200 OK", f"To-Path: {A}", f"From-Path: {RB}", "Message-ID: m1", "-------s1$"
    )


def test_leading_blanks_in_to_path_stay() -> None:
    frame = parse(send(f"  {RB} {B}", body=None))
    assert relay_splice(frame) == crlf(
        "MSRP s1 SEND", f"To-Path:   {B}", f"From-Path: {RB} {A}", "Message-ID: m1", "-------s1$"
    )


# -- scenario 33: trailing blanks after a single From-Path URI ------------------------------


def test_scenario_33_trailing_blanks_do_not_leak_into_reply() -> None:
    # Kamailio copies the value plus two raw bytes: "To-Path: A  From-Path: ..." on one line.
    frame = parse(send(from_line=f"From-Path: {A}  ", body=None))
    assert build_reply(frame, 200, "OK") == (
        b"MSRP s1 200 OK\r\n"
        b"To-Path: msrp://a.example:9892/as;tcp\r\n"
        b"From-Path: msrp://r.example:2855/rb;tcp\r\n"
        b"Message-ID: m1\r\n"
        b"-------s1$\r\n"
    )
    # The splice keeps every other byte, the trailing blanks included.
    assert relay_splice(frame) == crlf(
        "MSRP s1 SEND", f"To-Path: {B}", f"From-Path: {RB} {A}  ", "Message-ID: m1", "-------s1$"
    )


def test_trailing_blanks_after_to_path_uri() -> None:
    frame = parse(send(f"{RB} {B}\t ", body=None))
    assert build_reply(frame, 200, "OK") == crlf(
        "MSRP s1 200 OK", f"To-Path: {A}", f"From-Path: {RB}", "Message-ID: m1", "-------s1$"
    )
    assert relay_splice(frame) == crlf(
        "MSRP s1 SEND", f"To-Path: {B}\t ", f"From-Path: {RB} {A}", "Message-ID: m1", "-------s1$"
    )


# -- scenario 22 and 25: flags and bodies pass the splice untouched --------------------------


@pytest.mark.parametrize("flag", ["+", "#", "$"])
def test_scenario_22_flag_kept_by_splice_reply_uses_dollar(flag: str) -> None:
    frame = parse(send(body="chunk", flag=flag))
    assert frame.flag == flag.encode()
    assert relay_splice(frame) == crlf(
        "MSRP s1 SEND",
        f"To-Path: {B}",
        f"From-Path: {RB} {A}",
        "Message-ID: m1",
        "Content-Type: text/plain",
        "",
        "chunk",
        "-------s1" + flag,
    )
    assert build_reply(frame, 200, "OK").endswith(b"\r\n-------s1$\r\n")


def test_scenario_25_body_with_foreign_end_line_kept() -> None:
    raw = send(tid="s25", body="one\r\n-------zzzz$\r\n-------s2$\r\n-------s25X\r\ntwo")
    frame = parse(raw)
    assert frame.body is not None
    assert bytes(frame.body) == b"one\r\n-------zzzz$\r\n-------s2$\r\n-------s25X\r\ntwo"
    assert relay_splice(frame) == (
        b"MSRP s25 SEND\r\n"
        b"To-Path: msrp://b.example:9893/bs;tcp\r\n"
        b"From-Path: msrp://r.example:2855/rb;tcp msrp://a.example:9892/as;tcp\r\n"
        b"Message-ID: m1\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"one\r\n"
        b"-------zzzz$\r\n"
        b"-------s2$\r\n"
        b"-------s25X\r\n"
        b"two\r\n"
        b"-------s25$\r\n"
    )


def test_binary_body_kept_by_splice() -> None:
    body = bytes(range(256))  # every byte value, CR and LF apart
    raw = crlf("MSRP bin1 SEND", f"To-Path: {RB} {B}", f"From-Path: {A}", "") + body
    raw += b"\r\n-------bin1$\r\n"
    out = relay_splice(parse(raw))
    head = crlf("MSRP bin1 SEND", f"To-Path: {B}", f"From-Path: {RB} {A}", "")
    assert out == head + body + b"\r\n-------bin1$\r\n"


# -- the Message-ID line ----------------------------------------------------------------------


def test_message_id_line_copied_raw() -> None:
    frame = parse(send(body=None, extra=("Byte-Range: 1-5/5", "Message-ID:   mid-1  ")))
    assert build_reply(frame, 200, "OK") == crlf(
        "MSRP s1 200 OK",
        f"To-Path: {A}",
        f"From-Path: {RB}",
        "Message-ID:   mid-1  ",
        "-------s1$",
    )


def test_lower_case_message_id_copied_in_canonical_case() -> None:
    # Documented difference: Kamailio matches header names case-sensitively, so it never
    # echoes "message-id" (reference §2.2, §15 item 23); msrpd follows RFC 4975 §9 / RFC 5234
    # (quoted header names are case-insensitive) and emits the canonical case (checklist §1.6).
    frame = parse(send(body=None, extra=("message-id:  m1",)))
    assert build_reply(frame, 200, "OK") == crlf(
        "MSRP s1 200 OK", f"To-Path: {A}", f"From-Path: {RB}", "Message-ID:  m1", "-------s1$"
    )


def test_only_first_message_id_copied_and_others_not() -> None:
    extra = ("Byte-Range: 1-5/5", "Message-ID: m1", "Status: 000 200 OK", "Message-ID: m2")
    frame = parse(send(body=None, extra=extra))
    assert build_reply(frame, 200, "OK") == crlf(
        "MSRP s1 200 OK", f"To-Path: {A}", f"From-Path: {RB}", "Message-ID: m1", "-------s1$"
    )


def test_no_message_id_no_line() -> None:
    frame = parse(send(body=None, extra=()))
    assert build_reply(frame, 481, "Session-does-not-exist") == crlf(
        "MSRP s1 481 Session-does-not-exist", f"To-Path: {A}", f"From-Path: {RB}", "-------s1$"
    )


# -- To-Path of the reply: first From-Path URI for SEND, the whole path otherwise --------------


def test_auth_reply_to_path_is_whole_from_path() -> None:
    # RFC 4975 §7.2: a response's To-Path is the request's From-Path. Kamailio gives only H
    # (reference §0 item 2, §15 item 8).
    raw = crlf("MSRP a1 AUTH", f"To-Path: {R}", f"From-Path: {H} {A}", "-------a1$")
    extra = "Use-Path: msrp://r.example:2855/sid-1;tcp\r\nExpires: 3600\r\n"
    assert build_reply(parse(raw), 200, "OK", extra) == (
        b"MSRP a1 200 OK\r\n"
        b"To-Path: msrp://h.example:2855/hs;tcp msrp://a.example:9892/as;tcp\r\n"
        b"From-Path: msrp://r.example:2855;tcp\r\n"
        b"Use-Path: msrp://r.example:2855/sid-1;tcp\r\n"
        b"Expires: 3600\r\n"
        b"-------a1$\r\n"
    )


@pytest.mark.parametrize("method", ["REPORT", "NICKNAME"])
def test_other_non_send_reply_to_path_is_whole_from_path(method: str) -> None:
    raw = crlf(f"MSRP o1 {method}", f"To-Path: {RB} {B}", f"From-Path: {H}\t{A}", "-------o1$")
    assert build_reply(parse(raw), 501, "Request-method-not-understood") == crlf(
        "MSRP o1 501 Request-method-not-understood",
        f"To-Path: {H} {A}",
        f"From-Path: {RB}",
        "-------o1$",
    )


def test_send_reply_to_path_is_first_from_path_uri() -> None:
    # RFC 4975 §7.2: a SEND's response goes to the previous hop only.
    frame = parse(send(from_line=f"From-Path: {H} {A}", body=None))
    assert build_reply(frame, 200, "OK") == crlf(
        "MSRP s1 200 OK", f"To-Path: {H}", f"From-Path: {RB}", "Message-ID: m1", "-------s1$"
    )


# -- reason, code and extra headers ---------------------------------------------------------


def test_empty_reason_has_no_trailing_space() -> None:
    # RFC 4975 §9: status-code [SP comment]. Kamailio writes "MSRP s1 200 \r\n".
    frame = parse(send(body=None))
    expected = crlf("MSRP s1 200", f"To-Path: {A}", f"From-Path: {RB}", "Message-ID: m1")
    assert build_reply(frame, 200, "") == expected + b"-------s1$\r\n"
    assert build_reply(frame, 200, b"") == expected + b"-------s1$\r\n"


def test_reason_bytes_and_str_and_status() -> None:
    frame = parse(send(body=None, extra=()))
    tail = crlf(f"To-Path: {A}", f"From-Path: {RB}", "-------s1$")
    assert build_reply(frame, Status.NO_SESSION, "Sessão") == (
        "MSRP s1 481 Sessão\r\n".encode() + tail
    )
    assert build_reply(frame, 481, b"Session Does Not Exist") == (
        b"MSRP s1 481 Session Does Not Exist\r\n" + tail
    )


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param("Not\tFound", id="str-htab"),
        pytest.param("Sess\u00e3o\u00a0x", id="str-nbsp"),
        pytest.param("Fine \u2028", id="str-u2028"),
        pytest.param("Sess\u00e3o", id="str-non-ascii"),
        pytest.param(b"Not\tFound", id="bytes-htab"),
        pytest.param("Sess\u00e3o\u00a0x".encode(), id="bytes-nbsp"),
    ],
)
def test_reason_utf8text_accepted(reason: str | bytes) -> None:
    # RFC 4975 §9: comment = utf8text = *(HTAB / %x20-7E / UTF8-NONASCII).
    comment = reason.encode() if isinstance(reason, str) else reason
    out = build_reply(parse(send(body=None, extra=())), 404, reason)
    assert out == b"MSRP s1 404 " + comment + b"\r\n" + crlf(
        f"To-Path: {A}", f"From-Path: {RB}", "-------s1$"
    )


@pytest.mark.parametrize("code", [100, 999])
def test_code_bounds_accepted(code: int) -> None:
    out = build_reply(parse(send(body=None, extra=())), code, "x")
    assert out.startswith(b"MSRP s1 %d x\r\n" % code)


@pytest.mark.parametrize("code", [99, 1000, 0, -200])
def test_code_out_of_range_raises(code: int) -> None:
    with pytest.raises(LocalProtocolError):
        build_reply(parse(send(body=None)), code, "OK")


@pytest.mark.parametrize("reason", ["O\r\nK", "OK\n", "\x00", "a\x7f"])
def test_reason_with_control_characters_raises(reason: str) -> None:
    with pytest.raises(LocalProtocolError):
        build_reply(parse(send(body=None)), 200, reason)


@pytest.mark.parametrize(
    ("extra", "lines"),
    [
        ("Expires: 3600", b"Expires: 3600\r\n"),
        (b"Expires: 3600", b"Expires: 3600\r\n"),
        ("Expires: 3600\r\n", b"Expires: 3600\r\n"),
        ("Use-Path: x\r\nExpires: 3600", b"Use-Path: x\r\nExpires: 3600\r\n"),
        ("X-Tab:\tv", b"X-Tab:\tv\r\n"),
        ("", b""),
    ],
)
def test_extra_headers_get_final_crlf(extra: str | bytes, lines: bytes) -> None:
    frame = parse(send(body=None))
    assert build_reply(frame, 200, "OK", extra) == (
        crlf("MSRP s1 200 OK", f"To-Path: {A}", f"From-Path: {RB}", "Message-ID: m1")
        + lines
        + b"-------s1$\r\n"
    )


@pytest.mark.parametrize(
    "extra",
    [
        b"NoColon",
        b"X: a\rb",
        b"X: a\nb",
        b"X: a\n",
        b"X: 1\r\nNoColon",
        b"X: 1\r\n\r\n",
        b"X: 1\r\n\r\nY: 2\r\n",
        b"X: \x00",
        "X: \x1b[0m",
    ],
)
def test_malformed_extra_raises(extra: str | bytes) -> None:
    with pytest.raises(LocalProtocolError):
        build_reply(parse(send(body=None)), 200, "OK", extra)


@pytest.mark.parametrize("extra", [b": x", b"Bad Name: x"], ids=["empty-name", "space"])
def test_extra_with_invalid_header_name_raises(extra: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        build_reply(parse(send(body=None)), 200, "OK", extra)


def test_build_reply_on_response_raises() -> None:
    response = parse(crlf("MSRP s1 200 OK", f"To-Path: {RB}", f"From-Path: {B}", "-------s1$"))
    assert response.is_response
    with pytest.raises(LocalProtocolError):
        build_reply(response, 200, "OK")


def test_build_reply_on_response_without_reason_raises() -> None:
    # "MSRP x1 200" is a response for msrpd (Kamailio reads method "200", §15 item 17).
    response = parse(crlf("MSRP x1 200", f"To-Path: {RB}", f"From-Path: {B}", "-------x1$"))
    assert response.code == 200 and response.reason == b""
    with pytest.raises(LocalProtocolError):
        build_reply(response, 501, "Request-method-not-understood")


def test_frame_with_non_utf8_from_path_can_be_answered() -> None:
    # The reader's utf8text check excludes control characters only, so a path holding a
    # non-UTF-8 byte is delivered as a Frame; the reply must still be buildable from the
    # bytes as received (or the reader must refuse the frame with a 400).
    raw = crlf("MSRP u8 SEND", f"To-Path: {RB} {B}")
    raw += b"From-Path: msrp://\xe9.example:9892/as;tcp\r\n-------u8$\r\n"
    (event,) = events(raw)
    if isinstance(event, InvalidFrame):
        reply = build_invalid_reply(event)
        assert reply is not None and reply.startswith(b"MSRP u8 400 ")
        return
    assert isinstance(event, Frame)
    assert build_reply(event, 200, "OK") == (
        b"MSRP u8 200 OK\r\n"
        b"To-Path: msrp://\xe9.example:9892/as;tcp\r\n"
        b"From-Path: msrp://r.example:2855/rb;tcp\r\n"
        b"-------u8$\r\n"
    )


# -- relay_splice errors and streamed frames --------------------------------------------------


@pytest.mark.parametrize("to_path", [RB, f"{RB}  ", f"  {RB}\t"])
def test_splice_with_single_to_path_uri_raises(to_path: str) -> None:
    frame = parse(send(to_path, body=None))
    assert frame.to_path == [RB]
    with pytest.raises(LocalProtocolError):
        relay_splice(frame)


def test_splice_of_response_with_two_hops() -> None:
    # No transaction state (reference §6.4): a response is rotated like a request.
    response = parse(crlf("MSRP a9 200 OK", f"To-Path: {RA} {A}", f"From-Path: {H}", "-------a9$"))
    assert relay_splice(response) == crlf(
        "MSRP a9 200 OK", f"To-Path: {A}", f"From-Path: {RA} {H}", "-------a9$"
    )


def test_splice_of_streamed_frame_head() -> None:
    body = b"0123456789" * 10
    raw = send(tid="big1", body=body.decode(), flag="+")
    out = events(raw, ReaderLimits(max_body=16))
    head = out[0]
    assert isinstance(head, Frame) and head.streamed
    assert head.flag is None and head.body is None
    assert isinstance(out[-1], FrameEnd) and out[-1].flag == b"+"
    assert b"".join(e.data for e in out[1:-1] if isinstance(e, BodyPiece)) == body
    assert relay_splice(head) == crlf(
        "MSRP big1 SEND",
        f"To-Path: {B}",
        f"From-Path: {RB} {A}",
        "Message-ID: m1",
        "Content-Type: text/plain",
        "",
    )
    # The head is enough to answer.
    assert build_reply(head, 200, "OK") == crlf(
        "MSRP big1 200 OK", f"To-Path: {A}", f"From-Path: {RB}", "Message-ID: m1", "-------big1$"
    )


# -- build_sipmsg -------------------------------------------------------------------------


def test_build_sipmsg_with_body() -> None:
    assert build_sipmsg(parse(SCENARIO_9)) == (
        b"MSRP sip:a@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKa\r\n"
        b"From: <b@127.0.0.1>;tag=a\r\n"
        b"To: <a@127.0.0.1>\r\n"
        b"Call-ID: a\r\n"
        b"CSeq: 1 MSRP\r\n"
        b"Content-Length: 0\r\n"
        b"MSRP-First-Line: MSRP s1 SEND\r\n"
        b"To-Path: msrp://r.example:2855/rb;tcp msrp://b.example:9893/bs;tcp\r\n"
        b"From-Path: msrp://a.example:9892/as;tcp\r\n"
        b"Message-ID: m1\r\n"
        b"Byte-Range: 1-5/5\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
    )


def test_build_sipmsg_without_body() -> None:
    raw = crlf("MSRP a1 AUTH", f"To-Path: {R}", f"From-Path: {A}", "Expires: 600", "-------a1$")
    assert build_sipmsg(parse(raw)) == (
        b"MSRP sip:a@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKa\r\n"
        b"From: <b@127.0.0.1>;tag=a\r\n"
        b"To: <a@127.0.0.1>\r\n"
        b"Call-ID: a\r\n"
        b"CSeq: 1 MSRP\r\n"
        b"Content-Length: 0\r\n"
        b"MSRP-First-Line: MSRP a1 AUTH\r\n"
        b"To-Path: msrp://r.example:2855;tcp\r\n"
        b"From-Path: msrp://a.example:9892/as;tcp\r\n"
        b"Expires: 600\r\n"
        b"\r\n"
    )


# -- build_request --------------------------------------------------------------------------


def test_build_request_with_body_round_trip() -> None:
    headers = [("Message-ID", "m7"), ("Byte-Range", "1-5/10"), ("Content-Type", "text/plain")]
    out = build_request(b"r1", b"SEND", [RB, B], [A], headers, b"hello", b"+")
    assert out == (
        b"MSRP r1 SEND\r\n"
        b"To-Path: msrp://r.example:2855/rb;tcp msrp://b.example:9893/bs;tcp\r\n"
        b"From-Path: msrp://a.example:9892/as;tcp\r\n"
        b"Message-ID: m7\r\n"
        b"Byte-Range: 1-5/10\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"hello\r\n"
        b"-------r1+\r\n"
    )
    frame = parse(out)
    assert (frame.tid, frame.method, frame.flag) == (b"r1", b"SEND", b"+")
    assert frame.to_path == [RB, B] and frame.from_path == [A]
    assert frame.headers() == [
        (b"To-Path", f"{RB} {B}".encode()),
        (b"From-Path", A.encode()),
        (b"Message-ID", b"m7"),
        (b"Byte-Range", b"1-5/10"),
        (b"Content-Type", b"text/plain"),
    ]
    assert frame.body is not None and bytes(frame.body) == b"hello"


def test_build_request_without_body_round_trip() -> None:
    headers = [("Message-ID", "m1"), ("Byte-Range", "1-5/5"), ("Status", "000 200 OK")]
    out = build_request(b"rep1", b"REPORT", [A], [RA, RB, B], headers)
    assert out == (
        b"MSRP rep1 REPORT\r\n"
        b"To-Path: msrp://a.example:9892/as;tcp\r\n"
        b"From-Path: msrp://r.example:2855/ra;tcp msrp://r.example:2855/rb;tcp"
        b" msrp://b.example:9893/bs;tcp\r\n"
        b"Message-ID: m1\r\n"
        b"Byte-Range: 1-5/5\r\n"
        b"Status: 000 200 OK\r\n"
        b"-------rep1$\r\n"
    )
    frame = parse(out)
    assert (frame.tid, frame.method, frame.flag) == (b"rep1", b"REPORT", b"$")
    assert frame.to_path == [A] and frame.from_path == [RA, RB, B]
    assert frame.header("status") == b"000 200 OK"
    assert not frame.has_body and frame.body is None


def test_build_request_empty_body_round_trip() -> None:
    out = build_request(b"e1", b"SEND", [B], [A], None, b"")
    assert out == crlf("MSRP e1 SEND", f"To-Path: {B}", f"From-Path: {A}", "", "", "-------e1$")
    frame = parse(out)
    assert frame.has_body and frame.body is not None and bytes(frame.body) == b""
    assert frame.headers() == [(b"To-Path", B.encode()), (b"From-Path", A.encode())]


@pytest.mark.parametrize(
    "body",
    [b"-------r1$", b"a\r\n-------r1$\r\nb", b"a\r\n-------r1+", b"a\r\n-------r1"],
)
def test_build_request_end_line_in_body_raises(body: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        build_request(b"r1", b"SEND", [B], [A], None, body)


def test_build_request_dash_text_not_at_line_start_allowed() -> None:
    body = b"x-------r1$\r\n-------r2$"
    frame = parse(build_request(b"r1", b"SEND", [B], [A], None, body))
    assert frame.body is not None and bytes(frame.body) == body


@pytest.mark.parametrize(
    ("to_path", "from_path", "flag"),
    [([B], [A], b"X"), ([B], [A], b""), ([], [A], b"$"), ([B], [], b"$")],
)
def test_build_request_bad_flag_or_paths_raise(
    to_path: list[str], from_path: list[str], flag: bytes
) -> None:
    with pytest.raises(LocalProtocolError):
        build_request(b"r1", b"SEND", to_path, from_path, flag=flag)


def test_build_request_header_with_control_character_raises() -> None:
    with pytest.raises(LocalProtocolError):
        build_request(b"r1", b"SEND", [B], [A], [("Message-ID", "m\x001")])


def test_build_request_header_value_with_crlf_raises() -> None:
    with pytest.raises(LocalProtocolError):
        build_request(b"r1", b"SEND", [B], [A], [("Message-ID", "m1\r\nX-Injected: 1")])


def test_build_request_invalid_header_name_raises() -> None:
    with pytest.raises(LocalProtocolError):
        build_request(b"r1", b"SEND", [B], [A], [("Bad Name", "v")])


# -- build_invalid_reply ---------------------------------------------------------------------


def test_invalid_send_answered_to_first_from_path_uri() -> None:
    raw = crlf(
        "MSRP hc1 SEND",
        f"To-Path: {RB} {B}",
        f"From-Path: {H} {A}",
        "Garbage",
        "Message-ID: m1",
        "-------hc1$",
    )
    event = invalid(raw)
    assert (event.tid, event.status, event.is_request) == (b"hc1", Status.UNINTELLIGIBLE, True)
    assert build_invalid_reply(event) == (
        b"MSRP hc1 400 Bad Request (header line 3 has no colon)\r\n"
        b"To-Path: msrp://h.example:2855/hs;tcp\r\n"
        b"From-Path: msrp://r.example:2855/rb;tcp\r\n"
        b"-------hc1$\r\n"
    )


def test_invalid_send_with_body_answered() -> None:
    raw = crlf(
        "MSRP hc2 SEND", f"To-Path: {RB} {B}", f"From-Path: {A}", "Garbage", "", "hi", "-------hc2$"
    )
    assert build_invalid_reply(invalid(raw)) == crlf(
        "MSRP hc2 400 Bad Request (header line 3 has no colon)",
        f"To-Path: {A}",
        f"From-Path: {RB}",
        "-------hc2$",
    )


def test_invalid_auth_answered_to_whole_from_path() -> None:
    raw = crlf("MSRP hc3 AUTH", f"To-Path: {R}", f"From-Path: {H} {A}", "Garbage", "-------hc3$")
    assert build_invalid_reply(invalid(raw)) == crlf(
        "MSRP hc3 400 Bad Request (header line 3 has no colon)",
        f"To-Path: {H} {A}",
        f"From-Path: {R}",
        "-------hc3$",
    )


def test_invalid_response_not_answered() -> None:
    raw = crlf("MSRP hc4 200 OK", f"To-Path: {RB}", f"From-Path: {B}", "Garbage", "-------hc4$")
    event = invalid(raw)
    assert event.is_request is False
    assert build_invalid_reply(event) is None


def test_invalid_request_without_from_path_not_answered() -> None:
    raw = crlf("MSRP hc5 SEND", f"To-Path: {RB} {B}", "Message-ID: m1", "-------hc5$")
    event = invalid(raw)
    assert event.is_request is True
    assert build_invalid_reply(event) is None


def test_invalid_request_without_to_path_not_answered() -> None:
    raw = crlf("MSRP hc6 SEND", f"From-Path: {A}", "Message-ID: m1", "-------hc6$")
    assert build_invalid_reply(invalid(raw)) is None


def test_forward_paths_replaces_both_paths_and_keeps_every_other_byte() -> None:
    raw = (
        b"MSRP f1 SEND\r\nTo-Path: msrp://r:1/a;tcp msrp://b:2/b;tcp\r\n"
        b"From-Path:msrp://a:3/x;tcp\r\nMessage-ID: m\r\nContent-Type: text/plain\r\n\r\n"
        b"body\r\n-------f1$\r\n"
    )
    frame = parse(raw)
    out = forward_paths(frame, "msrp://n:4/z;tcp", "msrp://r:1/a;tcp msrp://a:3/x;tcp")
    assert out == raw.replace(
        b"To-Path: msrp://r:1/a;tcp msrp://b:2/b;tcp", b"To-Path: msrp://n:4/z;tcp"
    ).replace(b"From-Path:msrp://a:3/x;tcp", b"From-Path:msrp://r:1/a;tcp msrp://a:3/x;tcp")
    # Kamailio 6.0 defaults: To-Path kept, From-Path = the old To-Path.
    default = forward_paths(frame, None, None)
    assert b"From-Path:msrp://r:1/a;tcp msrp://b:2/b;tcp\r\n" in default
    with pytest.raises(LocalProtocolError):
        forward_paths(frame, "x\r\nInjected: 1", None)
    with pytest.raises(LocalProtocolError):
        forward_paths(frame, "  ", None)


# -- retarget: a frame to another node of a cluster, and that node's answer -------------------

N2 = "msrps://n2.example:2856/rb;tcp"  # the token at the node holding it


def test_retarget_replaces_the_first_to_path_uri_and_keeps_the_rest() -> None:
    frame = parse(send(f"{RB} {B}"))
    assert retarget(frame, N2.encode()) == frame.buf.replace(RB.encode(), N2.encode(), 1)
    out = retarget(frame, N2.encode(), b"n1tid")
    assert out == frame.buf.replace(RB.encode(), N2.encode(), 1).replace(b"s1", b"n1tid")


def test_retarget_gives_the_sender_its_own_next_hop_in_from_path() -> None:
    """Node 2's answer (To-Path the sender's path, From-Path node 2's URI then the rest) as
    the sender must see it: its id, and the URI it addressed where node 2's was."""
    answer = parse(
        crlf("MSRP z9z9 481 Gone", f"To-Path: {A}", f"From-Path: {N2} {B}", "-------z9z9$")
    )
    out = retarget(answer, answer.first_to, b"s1", RB.encode())
    assert out == crlf("MSRP s1 481 Gone", f"To-Path: {A}", f"From-Path: {RB} {B}", "-------s1$")
    alone = parse(crlf("MSRP z9z9 200", f"To-Path: {A}", f"From-Path: {N2}", "-------z9z9$"))
    assert retarget(alone, alone.first_to, None, RB.encode()) == crlf(
        "MSRP z9z9 200", f"To-Path: {A}", f"From-Path: {RB}", "-------z9z9$"
    )


def test_status_texts_are_checked_before_kept_and_kept_bounded() -> None:
    """build_reply keeps the status texts a route uses (writer._reply_status): at most 64, of
    128 bytes or fewer, each checked before it is kept (a reason with CRLF is refused)."""
    with pytest.raises(LocalProtocolError):
        _reply_status(200, "OK\r\nX-Injected: 1")
    assert (200, "OK\r\nX-Injected: 1") not in _STATUS_TEXTS
    assert _reply_status(481, "x" * 200) == b"481 " + b"x" * 200
    assert (481, "x" * 200) not in _STATUS_TEXTS  # long: made each time, not kept
    for n in range(100):
        assert _reply_status(400, f"reason {n}") == b"400 reason %d" % n
    assert len(_STATUS_TEXTS) <= 64


# -- a big frame relayed in two pieces (issue 16) ------------------------------------------


@pytest.mark.parametrize(
    ("to_path", "from_line"),
    [
        (f"{RB} {B}", f"From-Path: {A}"),
        (f"{RB}   {B}", f"From-Path:{A}"),  # a blank run, no space after the colon
        (f"{RA} {RB} {B}", f"From-Path: {H} {A}"),
    ],
)
def test_a_big_frame_is_relayed_as_its_new_head_and_a_view_of_the_rest(
    to_path: str, from_line: str
) -> None:
    body = ("0123456789abcdef" * (PIECES_MIN // 16))[: PIECES_MIN + 7]
    frame = parse(send(to_path, from_line, body=body))
    out = relay_pieces(frame)
    assert isinstance(out, Spliced)
    assert out.joined() == relay_splice(frame)
    assert len(out) == len(relay_splice(frame))
    # Only the head is new bytes: the rest is the frame's own, from its body on, not copied.
    assert out.head.endswith(b"Content-Type: text/plain\r\n\r\n")
    assert out.rest.obj is frame.buf
    assert bytes(out.rest) == frame.buf[frame.body_start :]


def test_a_frame_under_the_size_is_relayed_in_one_piece() -> None:
    frame = parse(send(body="x" * (PIECES_MIN - 1000)))
    out = relay_pieces(frame)
    assert isinstance(out, bytes)
    assert out == relay_splice(frame)


def test_a_big_frame_with_no_next_hop_is_refused_as_by_relay_splice() -> None:
    frame = parse(send(B, body="y" * PIECES_MIN))
    with pytest.raises(LocalProtocolError):
        relay_pieces(frame)


def test_a_big_frame_with_header_names_in_odd_case_is_relayed_canonical() -> None:
    raw = send(body="z" * PIECES_MIN, extra=("message-id: m1",))
    frame = parse(raw)
    out = relay_pieces(frame)
    assert isinstance(out, Spliced)
    assert b"Message-ID: m1\r\n" in out.head
    assert out.joined() == relay_splice(frame)
