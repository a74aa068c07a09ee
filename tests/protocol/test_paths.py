"""To-Path and From-Path must be lists of MSRP URIs (RFC 4975 §9): the reader refuses any other
frame, so no Frame it yields carries a path that later code could fail to read (issue 12
item 8: `split_path` raised inside a route through `frame.to_path`).

Covers path_problem (the check) and its agreement with parse_uri, the per-connection memo,
the reader's InvalidFrame for every malformed path in every split (whole, streamed, request,
response), and who gets a 400 (never a response or a REPORT, nor Failure-Report: no).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msrpd.protocol.errors import LocalProtocolError
from msrpd.protocol.events import InvalidFrame
from msrpd.protocol.frame import Frame
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.reader import FrameReader
from msrpd.protocol.status import Status
from msrpd.protocol.uri import PathCheck, parse_uri, path_problem, split_path
from msrpd.protocol.writer import build_invalid_reply, invalid_gets_reply

from .corpus import CLOSED, send, send_summary
from .feed import feed, splits

BAD = Status.UNINTELLIGIBLE
GOOD_URI = b"msrp://127.0.0.1:7000/alice;tcp"
RELAY = b"msrp://127.0.0.1:2855/sB;tcp"

# Path values that are not `MSRP-URI *(SP MSRP-URI)`, by what is wrong with them.
MALFORMED: dict[str, bytes] = {
    "issue 12 reproduction (bad UTF-8 in the transport)": b"msrp://127.0.0.1:2855;\xf4cp",
    "bad UTF-8 in the host": b"msrp://\xe9.example:9892/as;tcp",
    "bad UTF-8 in the session": b"msrp://h:1/s\xff;tcp",
    "a lone UTF-8 continuation byte": b"msrp://h:1/s;tcp \x80",
    "UTF-8 but not ASCII": "msrp://bücher.example:1/s;tcp".encode(),
    "no scheme": b"127.0.0.1:9/x;tcp",
    "no scheme, slashes": b"//127.0.0.1:9/x;tcp",
    "sip scheme": b"sip:alice@example.com",
    "http scheme": b"http://h:1/x;tcp",
    "msrpx scheme": b"msrpx://h:1/x;tcp",
    "doubled scheme (Kamailio's use_path_addr bug)": b"msrp://msrp://h:1/x;tcp",
    "space inside the session": b"msrp://h:1/ x;tcp",
    "space after the scheme": b"msrp:// h:1/x;tcp",
    "garbage second URI": b"msrp://h:1/x;tcp garbage",
    "garbage between URIs": b"msrp://h:1/x;tcp - msrp://h:2/y;tcp",
    "port 0": b"msrp://h:0/x;tcp",
    "port 00000": b"msrp://h:00000/x;tcp",
    "port 65536": b"msrp://h:65536/x;tcp",
    "six-digit port": b"msrp://h:123456/x;tcp",
    "empty port": b"msrp://h:/x;tcp",
    "port not a number": b"msrp://h:port/x;tcp",
    "no host": b"msrp://:1/x;tcp",
    "bad percent escape in the host": b"msrp://h%zz:1/x;tcp",
    "bad IPv6 literal": b"msrp://[::zz]:1/x;tcp",
    "IPv6 literal that is no address": b"msrp://[1:2:3]:1/x;tcp",
    "unclosed IPv6 bracket": b"msrp://[::1:1/x;tcp",
    "empty session": b"msrp://h:1/;tcp",
    "percent escape in the session": b"msrp://h:1/a%20b;tcp",
    "empty transport": b"msrp://h:1/x;",
    "transport with a dash": b"msrp://h:1/x;t-c-p",
    "empty parameter": b"msrp://h:1/x;tcp;",
    "space in userinfo": b"msrp://a b@h:1/x;tcp",
    "two @": b"msrp://a@b@h:1/x;tcp",
    "quote in the host": b'msrp://h"x:1/x;tcp',
    "angle brackets": b"<msrp://h:1/x;tcp>",
    "empty": b"",
}

WELL_FORMED: list[bytes] = [
    GOOD_URI,
    RELAY + b" " + GOOD_URI,
    RELAY + b"\t " + GOOD_URI + b"  " + GOOD_URI,
    b"msrp://127.0.0.1:2855;tcp",
    b"MSRPS://Relay.Example.NET:2855/Ab+=/x;TCP",
    b"msrp://h/s;tcp",
    b"msrp://h:1/s",
    b"msrp://h:02855/s;tcp",
    b"msrp://h:65535/s;tcp",
    b"msrp://h:1;ws",
    b"msrp://user:pw@h:1/s;tcp;foo=bar;x",
    b"msrp://a%41b.example:1/s;tcp",
    b"msrp://[::1]:2855/s;tcp",
    b"msrps://[2001:db8::1]/s;tcp msrp://[::ffff:1.2.3.4]:9/t;tcp",
    b"msrp://h:1/s;tcp;x=a=b",
]


def all_parse(value: bytes) -> bool:
    """The slow truth: every blank-separated element parses with parse_uri."""
    try:
        uris = split_path(value)
        for uri in uris:
            parse_uri(uri)
    except LocalProtocolError:
        return False
    return bool(uris)


@pytest.mark.parametrize("value", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_path_has_a_problem(value: bytes) -> None:
    assert path_problem(value, "To-Path") is not None
    assert not all_parse(value)


@pytest.mark.parametrize("value", WELL_FORMED)
def test_well_formed_path_has_none(value: bytes) -> None:
    assert path_problem(value, "To-Path") is None
    assert all_parse(value)


_PIECES = st.sampled_from(
    [
        "msrp://",
        "msrps://",
        "MSRP://",
        "h",
        "127.0.0.1",
        "[::1]",
        "[",
        "]",
        ":",
        ":1",
        ":0",
        ":65536",
        ":2855",
        "/",
        "/s",
        ";",
        ";tcp",
        "=",
        "@",
        "%41",
        "%4",
        "%",
        "-",
        ".",
        "~",
        "+",
        " ",
        "\t",
        "x",
        "\u00e9",
        "\udcff",
    ]
)


@settings(max_examples=800, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=12))
def test_path_problem_agrees_with_parse_uri(pieces: list[str]) -> None:
    value = "".join(pieces).encode("utf-8", "surrogateescape").strip(b" \t")
    assert (path_problem(value, "To-Path") is None) == all_parse(value), value


_URI_ALPHABET = "msrpMSRP:/@;[]=.%+-_~!$&'()*,0123456789abcdefABCDEF \t"


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(["msrp://", "msrps://", "msrp://[", "msrp://h:", "MSRP://u@", ""]),
    st.text(alphabet=_URI_ALPHABET, max_size=40),
)
def test_path_problem_agrees_on_near_uri_text(scheme: str, tail: str) -> None:
    value = (scheme + tail).encode().strip(b" \t")
    assert (path_problem(value, "To-Path") is None) == all_parse(value), value


@pytest.mark.parametrize(
    "value",
    [
        b"msrp://" + b"%41" * 5000 + b":1/s;tcp x",
        b"msrp://" + b"a" * 16000 + b"@",
        b"msrp://h:1/" + b"a/" * 8000 + b";tcp;",
        b" ".join([b"msrp://h:1/x;tcp"] * 900) + b" bad",
        b"msrp://h:1/x;tcp" + b";p=" * 5000 + b" ",
    ],
    ids=["escapes", "userinfo", "session", "many URIs", "params"],
)
def test_hostile_path_costs_linear_time(value: bytes) -> None:
    started = time.perf_counter()
    assert path_problem(value, "To-Path") is not None
    assert time.perf_counter() - started < 0.25  # linear: about a millisecond


def test_path_check_remembers_only_the_last_good_pair() -> None:
    def spans(head: bytes) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        to_start = head.index(b"To-Path: ") + 9
        to_end = head.index(b"\r\n", to_start)
        from_start = head.index(b"From-Path: ") + 11
        from_end = head.index(b"\r\n", from_start)
        first = head.index(b" ", to_start)
        return (to_start, first, to_end), (from_start, from_end, from_end)

    good = b"To-Path: %s %s\r\nFrom-Path: %s\r\n" % (RELAY, GOOD_URI, GOOD_URI)
    bad_to = good.replace(b"sB;tcp", b"sB;\xf4cp")
    bad_from = b"To-Path: %s %s\r\nFrom-Path: %s\xf4\r\n" % (RELAY, GOOD_URI, GOOD_URI)
    check = PathCheck()
    assert check.problem(good, *spans(good)) is None
    assert check.problem(bytearray(good), *spans(good)) is None  # remembered: a comparison
    for _ in range(2):  # a bad pair is never remembered
        assert check.problem(bad_to, *spans(bad_to)) == (
            "To-Path is not a list of MSRP URIs (RFC 4975 §9)"
        )
        assert check.problem(bad_from, *spans(bad_from)) == (
            "From-Path is not a list of MSRP URIs (RFC 4975 §9)"
        )
    assert check.problem(b"xx" + good, *spans(b"xx" + good)) is None


def test_ipv6_literal_problem_names_the_address() -> None:
    problem = path_problem(b"msrp://[::1]:1/s;tcp msrp://[1::2::3]:1/s;tcp", "From-Path")
    assert problem is not None and problem.startswith("From-Path: bad IPv6 literal")


# -- the reader -------------------------------------------------------------------------------


def frame(value: bytes, *, where: str = "to", tid: str = "p1", body: bytes | None = b"hi") -> bytes:
    """A SEND with `value` as its To-Path (where="to") or From-Path (where="from")."""
    to_value, from_value = (value, GOOD_URI) if where == "to" else (RELAY + b" " + GOOD_URI, value)
    head = b"MSRP %s SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: m1\r\n" % (
        tid.encode(),
        to_value,
        from_value,
    )
    end = b"-------%s$\r\n" % tid.encode()
    if body is None:
        return head + end
    return head + b"Content-Type: text/plain\r\n\r\n" + body + b"\r\n" + end


@pytest.mark.parametrize("where", ["to", "from"])
@pytest.mark.parametrize("value", MALFORMED.values(), ids=list(MALFORMED))
def test_reader_refuses_a_frame_whose_path_does_not_parse(value: bytes, where: str) -> None:
    # With a body and without, each followed by a good frame that must still be read.
    data = frame(value, where=where) + frame(value, where=where, tid="p2", body=None) + send("s1")
    want = [("invalid", b"p1", BAD, True), ("invalid", b"p2", BAD, True), send_summary("s1")]
    for name, sizes in splits(len(data)).items():
        assert feed(data, sizes) == [*want, CLOSED], name


def test_reader_remembers_only_path_lines_that_parsed() -> None:
    """The fast path remembers a connection's last path lines (fastpath.PathMemo) once
    PathCheck took them: frames with a refused frame's lines are refused every time, a good
    frame's lines are read again without another check, in reads of one frame each (read in
    place), in one read (from the buffer) and in every other split."""
    bad = b"msrp://h:0/x;tcp"
    frames = [
        send("s1"),
        frame(bad, tid="p1"),
        frame(bad, tid="p2", body=None),
        send("s2"),
        frame(bad, where="from", tid="p3"),
        send("s3", None),
    ]
    want = [
        send_summary("s1"),
        ("invalid", b"p1", BAD, True),
        ("invalid", b"p2", BAD, True),
        send_summary("s2"),
        ("invalid", b"p3", BAD, True),
        send_summary("s3", None),
        CLOSED,
    ]
    data = b"".join(frames)
    for name, sizes in {**splits(len(data)), "frame by frame": [len(f) for f in frames]}.items():
        assert feed(data, sizes) == want, name


def test_reader_refuses_a_response_whose_path_does_not_parse() -> None:
    data = b"MSRP r1 200 OK\r\nTo-Path: msrp://h:1/x;\xf4cp\r\nFrom-Path: %s\r\n-------r1$\r\n"
    data = data % GOOD_URI + send("s1")
    for name, sizes in splits(len(data)).items():
        assert feed(data, sizes) == [
            ("invalid", b"r1", BAD, False),
            send_summary("s1"),
            CLOSED,
        ], name


def test_reader_refuses_a_streamed_frame_and_skips_its_body() -> None:
    limits = ReaderLimits(max_body=16)
    body = b"x" * 5000 + b"\r\n-------p0$\r\n" + b"y" * 5000  # not this frame's end-line
    data = frame(b"msrp://h:1/x;\xf4cp", body=body) + send("s1")
    for name, sizes in splits(len(data)).items():
        got = feed(data, sizes, limits)
        assert got == [("invalid", b"p1", BAD, True), send_summary("s1"), CLOSED], name


def test_reader_paths_of_good_frames_are_ascii_lists() -> None:
    reader = FrameReader()
    for value in WELL_FORMED:
        reader.receive_data(frame(value, body=None))
    frames = list(reader.events())
    assert [f.to_path for f in frames] == [split_path(v) for v in WELL_FORMED]  # type: ignore[union-attr]


# -- who is answered ---------------------------------------------------------------------------

REPRODUCTION = (
    b"MSRP a1b2c3d5 AUTH\r\nTo-Path: msrp://127.0.0.1:2855;\xf4cp\r\n"
    b"From-Path: msrp://127.0.0.1:9/fz;tcp\r\n"
    b'Authorization: Digest username="bob", realm="myrealm", nonce="abc", uri="x", '
    b'response="0"\r\n-------a1b2c3d5$\r\n'
)


def invalid(data: bytes) -> InvalidFrame:
    reader = FrameReader()
    reader.receive_data(data)
    (event,) = reader.events()
    assert isinstance(event, InvalidFrame)
    return event


def test_reproduction_is_answered_400_to_its_from_path() -> None:
    event = invalid(REPRODUCTION)
    assert event.reason == "To-Path is not a list of MSRP URIs (RFC 4975 §9)"
    assert build_invalid_reply(event) == (
        b"MSRP a1b2c3d5 400 Bad Request (To-Path is not a list of MSRP URIs)\r\n"
        b"To-Path: msrp://127.0.0.1:9/fz;tcp\r\n"
        b"From-Path: msrp://127.0.0.1:2855;\xf4cp\r\n"
        b"-------a1b2c3d5$\r\n"
    )
    # With the relay's own URI to stand in for the bad one, the sender can read the 400.
    reply = build_invalid_reply(event, b"msrp://127.0.0.1:2855;tcp")
    assert reply is not None and b"\r\nFrom-Path: msrp://127.0.0.1:2855;tcp\r\n" in reply
    reader = FrameReader()
    reader.receive_data(reply)
    (answer,) = reader.events()
    assert isinstance(answer, Frame)
    assert answer.code == 400 and answer.to_path == ["msrp://127.0.0.1:9/fz;tcp"]


@pytest.mark.parametrize(
    ("extra", "answered"),
    [
        (b"", True),
        (b"Failure-Report: yes\r\n", True),
        (b"Failure-Report: partial\r\n", True),  # RFC 4975 §7.1.4: an error response is due
        (b"Failure-Report: no\r\n", False),  # RFC 4975 §7.1.4: no response at all
        (b"failure-report:no \r\n", False),
    ],
)
def test_failure_report_decides_whether_a_send_is_answered(extra: bytes, answered: bool) -> None:
    data = frame(b"msrp://h:1/x;\xf4cp", body=None).replace(b"Message-ID", extra + b"Message-ID")
    event = invalid(data)
    assert invalid_gets_reply(event) is answered
    reply = build_invalid_reply(event)
    assert (reply is not None and reply.startswith(b"MSRP p1 400 ")) is answered


def test_report_and_response_are_never_answered() -> None:
    report = frame(b"msrp://h:1/x;\xf4cp", body=None).replace(b" SEND\r\n", b" REPORT\r\n")
    response = b"MSRP r1 200 OK\r\nTo-Path: msrp://h:1/x;\xf4cp\r\nFrom-Path: %s\r\n-------r1$\r\n"
    for data in (report + b"", response % GOOD_URI):
        event = invalid(data)
        assert not invalid_gets_reply(event)  # RFC 4975 §7.1.2, §7.2
        assert build_invalid_reply(event) is None


@pytest.mark.parametrize("size", [100, 100_000])  # whole-frame size, and streamed
def test_refused_frame_with_a_body_is_reported_after_its_end_line(size: int) -> None:
    """Its 400 then follows the whole chunk, as a 200 would (RFC 4976 §6.4.1)."""
    data = frame(b"msrp://h:1/x;\xf4cp", body=b"x" * size)
    cut = len(data) - len(b"-------p1$\r\n")
    reader = FrameReader(ReaderLimits(max_body=1024))
    reader.receive_data(data[:cut])
    assert list(reader.events()) == []
    reader.receive_data(data[cut:])
    (event,) = reader.events()
    assert isinstance(event, InvalidFrame) and event.tid == b"p1"
    assert reader.buffered == 0
