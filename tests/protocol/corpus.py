"""Hand-written frames with the exact events the reader must give for them.

Covers reference §15's framing and malformed-input scenarios; the golden transcripts are
checked in test_reader_golden.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from msrpd.protocol.status import Status

from .feed import Summary

RB = "msrp://127.0.0.1:2855/sB;tcp"
B = "msrp://127.0.0.1:7001/bob;tcp"
A = "msrp://127.0.0.1:7000/alice;tcp"
R = "msrp://127.0.0.1:2855;tcp"

BAD = Status.UNINTELLIGIBLE


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expected: list[Summary]


def crlf(*lines: str) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


def send(
    tid: str, body: bytes | None = b"hello", flag: str = "$", extra: tuple[str, ...] = ()
) -> bytes:
    head = [f"MSRP {tid} SEND", f"To-Path: {RB} {B}", f"From-Path: {A}", "Message-ID: m1", *extra]
    if body is None:
        return crlf(*head, f"-------{tid}{flag}")
    return (
        crlf(*head, "Content-Type: text/plain", "") + body + b"\r\n" + crlf(f"-------{tid}{flag}")
    )


def send_summary(
    tid: str,
    body: bytes | None = b"hello",
    flag: str = "$",
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> Summary:
    headers: tuple[tuple[bytes, bytes], ...] = (
        (b"To-Path", f"{RB} {B}".encode()),
        (b"From-Path", A.encode()),
        (b"Message-ID", b"m1"),
        *extra,
    )
    if body is not None:
        headers += ((b"Content-Type", b"text/plain"),)
    return ("frame", tid.encode(), b"SEND", None, None, flag.encode(), body, headers, (RB, B), (A,))


CLOSED: Summary = ("closed",)

CASES = [
    Case("send with body", send("s1"), [send_summary("s1"), CLOSED]),
    Case("bodiless send", send("s2", None), [send_summary("s2", None), CLOSED]),
    Case("flag +", send("s3", flag="+"), [send_summary("s3", flag="+"), CLOSED]),
    Case("flag #", send("s4", flag="#"), [send_summary("s4", flag="#"), CLOSED]),
    Case("empty body", send("s5", b""), [send_summary("s5", b""), CLOSED]),
    Case(
        "body holding other end-lines (scenario 25)",
        send("s6", b"a\r\n-------zzzz$\r\n-------s6X\r\n-------s6$x\r\n-------s6"),
        [
            send_summary("s6", b"a\r\n-------zzzz$\r\n-------s6X\r\n-------s6$x\r\n-------s6"),
            CLOSED,
        ],
    ),
    Case(
        "binary body with CR, LF and NUL",
        send("s7", bytes(range(256)) * 3),
        [send_summary("s7", bytes(range(256)) * 3), CLOSED],
    ),
    Case(
        "two frames in one write (scenario 24)",
        send("s8") + send("s9", None),
        [send_summary("s8"), send_summary("s9", None), CLOSED],
    ),
    Case(
        "leading CRLF keep-alives (scenario 29): skipped, nothing answered",
        b"\r\n\r\n" + send("s10") + b"\r\n" + send("s11"),
        [send_summary("s10"), send_summary("s11"), CLOSED],
    ),
    Case(
        "blank line straight before the end-line (scenario 28): an empty body",
        crlf("MSRP s12 SEND", f"To-Path: {RB} {B}", f"From-Path: {A}", "", "-------s12$"),
        [
            (
                "frame",
                b"s12",
                b"SEND",
                None,
                None,
                b"$",
                b"",
                ((b"To-Path", f"{RB} {B}".encode()), (b"From-Path", A.encode())),
                (RB, B),
                (A,),
            ),
            CLOSED,
        ],
    ),
    Case(
        "response without a reason phrase (scenario 17) is a response",
        crlf("MSRP r1 200", f"To-Path: {RB}", f"From-Path: {B}", "-------r1$"),
        [
            (
                "frame",
                b"r1",
                None,
                200,
                b"",
                b"$",
                None,
                ((b"To-Path", RB.encode()), (b"From-Path", B.encode())),
                (RB,),
                (B,),
            ),
            CLOSED,
        ],
    ),
    Case(
        "response with a reason",
        crlf(
            "MSRP r2 481 Session-does-not-exist", f"To-Path: {A}", f"From-Path: {RB}", "-------r2$"
        ),
        [
            (
                "frame",
                b"r2",
                None,
                481,
                b"Session-does-not-exist",
                b"$",
                None,
                ((b"To-Path", A.encode()), (b"From-Path", RB.encode())),
                (A,),
                (RB,),
            ),
            CLOSED,
        ],
    ),
    Case(
        "lower-case method (scenario 16) reaches the script",
        crlf("MSRP u1 send", f"To-Path: {RB} {B}", f"From-Path: {A}", "-------u1$"),
        [
            (
                "frame",
                b"u1",
                b"send",
                None,
                None,
                b"$",
                None,
                ((b"To-Path", f"{RB} {B}".encode()), (b"From-Path", A.encode())),
                (RB, B),
                (A,),
            ),
            CLOSED,
        ],
    ),
    Case(
        "From-Path without a space (scenario 31)",
        crlf("MSRP f1 SEND", f"To-Path: {RB} {B}", f"From-Path:{A}", "-------f1$"),
        [
            (
                "frame",
                b"f1",
                b"SEND",
                None,
                None,
                b"$",
                None,
                ((b"To-Path", f"{RB} {B}".encode()), (b"From-Path", A.encode())),
                (RB, B),
                (A,),
            ),
            CLOSED,
        ],
    ),
    Case(
        "double space in To-Path and trailing blanks (scenarios 32, 33)",
        crlf("MSRP f2 SEND", f"To-Path: {RB}  {B}", f"From-Path: {A}  ", "-------f2$"),
        [
            (
                "frame",
                b"f2",
                b"SEND",
                None,
                None,
                b"$",
                None,
                ((b"To-Path", f"{RB}  {B}".encode()), (b"From-Path", A.encode())),
                (RB, B),
                (A,),
            ),
            CLOSED,
        ],
    ),
    Case(
        "header names in any case (RFC 4234 §2.3)",
        crlf("MSRP c1 SEND", f"to-path: {RB} {B}", f"FROM-PATH: {A}", "-------c1$"),
        [
            (
                "frame",
                b"c1",
                b"SEND",
                None,
                None,
                b"$",
                None,
                ((b"to-path", f"{RB} {B}".encode()), (b"FROM-PATH", A.encode())),
                (RB, B),
                (A,),
            ),
            CLOSED,
        ],
    ),
    Case(
        "Content-Length is an ordinary header: the end-line ends the frame (scenario 26)",
        send("cl1", b"hello", extra=("Content-Length: 5",)),
        [send_summary("cl1", b"hello", extra=((b"Content-Length", b"5"),)), CLOSED],
    ),
    # -- refused frames: the stream stays in sync, the next frame is read ------------------
    Case(
        "trailing space after the method (scenario 26)",
        crlf("MSRP t1 SEND ", f"To-Path: {RB} {B}", f"From-Path: {A}", "-------t1$") + send("n1"),
        [("invalid", b"t1", BAD, True), send_summary("n1"), CLOSED],
    ),
    Case(
        "first line without a method (scenario 37, crashes Kamailio)",
        crlf("MSRP t2", f"To-Path: {RB} {B}", f"From-Path: {A}", "-------t2$") + send("n2"),
        [("invalid", b"t2", BAD, True), send_summary("n2"), CLOSED],
    ),
    Case(
        "From-Path before To-Path",
        crlf("MSRP t3 SEND", f"From-Path: {A}", f"To-Path: {RB} {B}", "-------t3$") + send("n3"),
        [("invalid", b"t3", BAD, True), send_summary("n3"), CLOSED],
    ),
    Case(
        "duplicate To-Path",
        crlf("MSRP t4 SEND", f"To-Path: {RB} {B}", f"From-Path: {A}", f"To-Path: {B}", "-------t4$")
        + send("n4"),
        [("invalid", b"t4", BAD, True), send_summary("n4"), CLOSED],
    ),
    Case(
        "header line without a colon, with a body",
        send("t5", b"body", extra=("Garbage",)) + send("n5"),
        [("invalid", b"t5", BAD, True), send_summary("n5"), CLOSED],
    ),
    Case(
        "Message-ID before the paths",
        crlf(
            "MSRP t6 SEND", "Message-ID: m1", f"To-Path: {RB} {B}", f"From-Path: {A}", "-------t6$"
        )
        + send("n6"),
        [("invalid", b"t6", BAD, True), send_summary("n6"), CLOSED],
    ),
    Case(
        "no headers at all (scenario 27)",
        crlf("MSRP t7 SEND", "-------t7$") + send("n7"),
        [("invalid", b"t7", BAD, True), send_summary("n7"), CLOSED],
    ),
    Case(
        "end-line with another transaction id ends a bodiless head",
        crlf("MSRP t8 SEND", f"To-Path: {RB} {B}", f"From-Path: {A}", "-------zzzz$") + send("n8"),
        [("invalid", b"t8", BAD, True), send_summary("n8"), CLOSED],
    ),
    Case(
        "end-line without a flag in a bodiless frame",
        crlf("MSRP t9 SEND", f"To-Path: {RB} {B}", f"From-Path: {A}", "-------t9") + send("n9"),
        [("invalid", b"t9", BAD, True), send_summary("n9"), CLOSED],
    ),
    Case(
        "control character in a header value",
        crlf("MSRP ta SEND", f"To-Path: {RB} {B}", f"From-Path: {A}", "X-Bad: a\x01b", "-------ta$")
        + send("na"),
        [("invalid", b"ta", BAD, True), send_summary("na"), CLOSED],
    ),
    Case(
        "a refused response is marked as a response (never answered)",
        crlf("MSRP tb 200 OK", f"From-Path: {A}", f"To-Path: {RB}", "-------tb$"),
        [("invalid", b"tb", BAD, False), CLOSED],
    ),
    Case(
        "empty To-Path value",
        crlf("MSRP tc SEND", "To-Path:   ", f"From-Path: {A}", "-------tc$") + send("nc"),
        [("invalid", b"tc", BAD, True), send_summary("nc"), CLOSED],
    ),
    # -- SIP on the MSRP port (scenario 34) ----------------------------------------------------
    Case(
        "SIP OPTIONS then MSRP on one connection",
        crlf(
            "OPTIONS sip:x@127.0.0.1 SIP/2.0",
            "Via: SIP/2.0/TCP 127.0.0.1:5000",
            "Content-Length: 3",
            "",
        )
        + b"abc"
        + send("sp1"),
        [
            (
                "sip",
                crlf(
                    "OPTIONS sip:x@127.0.0.1 SIP/2.0",
                    "Via: SIP/2.0/TCP 127.0.0.1:5000",
                    "Content-Length: 3",
                    "",
                )
                + b"abc",
            ),
            send_summary("sp1"),
            CLOSED,
        ],
    ),
    Case(
        "SIP with the compact length header and no body",
        crlf("OPTIONS sip:x@h SIP/2.0", "l: 0", ""),
        [("sip", crlf("OPTIONS sip:x@h SIP/2.0", "l: 0", "")), CLOSED],
    ),
    # -- fatal: the connection must close ------------------------------------------------------
    Case(
        "LF-only line endings (scenario 28): 400 with the tid, then close",
        send("lf1").replace(b"\r\n", b"\n"),
        [("error", BAD, b"lf1")],
    ),
    Case("lower-case msrp (scenario 28)", send("lc1").lower(), [("error", BAD, None)]),
    Case("binary garbage", bytes(range(1, 255)) + b"\r\n\r\n", [("error", BAD, None)]),
    Case("text that is neither MSRP nor SIP", b"HELLO there\r\n\r\n", [("error", BAD, None)]),
    Case("unreadable transaction id", crlf("MSRP  SEND", "-------$"), [("error", BAD, None)]),
    Case("EOF inside a frame", send("e1")[:-5], [("error", BAD, b"e1")]),
    Case("EOF inside a first line", b"MSRP e2 SE", [("error", BAD, None)]),
    Case(
        "SIP message with an unreadable Content-Length",
        crlf("OPTIONS sip:x@h SIP/2.0", "Content-Length: many", ""),
        [("error", BAD, None)],
    ),
    Case("nothing at all", b"", [CLOSED]),
    Case("only CRLFs", b"\r\n" * 10, [CLOSED]),
]
