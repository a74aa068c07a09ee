"""The 21 $msrp(key) values (reference §4), with msrpd's documented differences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msrpd.protocol.events import NEED_DATA
from msrpd.protocol.frame import Frame, _words
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.pv import MSRP_PV_KEYS, ConnInfo, msrp_pv
from msrpd.protocol.reader import FrameReader

X = "msrp://relay.example.net:2855/sX;tcp"
Y = "msrp://r2.example.org:2855/sY;tcp"
Z = "msrp://bob.example.com:7000/z;tcp"
P = "msrp://r0.example.org:2855/sP;tcp"
Q = "msrp://alice.example.com:9892/q;tcp"
CONN = ConnInfo("msrp://127.0.0.1:55560", "tcp:127.0.0.1:2855", 7)

SEND = (
    f"MSRP tx1 SEND\r\nTo-Path: {X} {Y} {Z}\r\nFrom-Path: {P} {Q}\r\nMessage-ID:  m-1 \r\n"
    "Content-Type: text/plain\r\n\r\nhello\r\n-------tx1$\r\n"
).encode()


def read(data: bytes, limits: ReaderLimits | None = None) -> Frame:
    reader = FrameReader(limits)
    reader.receive_data(data)
    event = reader.next_event()
    assert isinstance(event, Frame)
    return event


def test_all_21_keys_are_known() -> None:
    assert len(MSRP_PV_KEYS) == 21
    assert set(MSRP_PV_KEYS) == {
        "buf", "buflen", "body", "bodylen", "hdrs", "transid", "method", "code", "reason",
        "msgid", "crthop", "nexthop", "lasthop", "prevhop", "firsthop", "nexthops",
        "prevhops", "sessid", "srcaddr", "srcsock", "conid",
    }  # fmt: skip


def test_request_values_match_kamailio_verified_example() -> None:
    frame = read(SEND)
    values = {key: msrp_pv(frame, key, CONN) for key in MSRP_PV_KEYS}
    assert values == {
        "buf": SEND,
        "buflen": len(SEND),
        "body": b"hello\r\n",  # includes the CRLF before the end-line, as Kamailio's
        "bodylen": 7,
        "hdrs": f"To-Path: {X} {Y} {Z}\r\nFrom-Path: {P} {Q}\r\nMessage-ID:  m-1 \r\n"
        "Content-Type: text/plain\r\n",
        "transid": "tx1",
        "method": "SEND",
        "code": None,
        "reason": None,
        "msgid": "m-1",
        "crthop": X,
        "nexthop": Y,
        "lasthop": Z,
        "prevhop": P,
        "firsthop": Q,
        "nexthops": 2,
        "prevhops": 2,
        "sessid": "sX",
        "srcaddr": "msrp://127.0.0.1:55560",
        "srcsock": "tcp:127.0.0.1:2855",
        "conid": 7,
    }


def test_response_and_bodiless_values() -> None:
    frame = read(f"MSRP r1 200 OK\r\nTo-Path: {Q}\r\nFrom-Path: {X}\r\n-------r1$\r\n".encode())
    assert msrp_pv(frame, "method") is None
    assert msrp_pv(frame, "code") == 200
    assert msrp_pv(frame, "reason") == "OK"
    assert msrp_pv(frame, "body") is None
    assert msrp_pv(frame, "bodylen") == 0
    assert msrp_pv(frame, "nexthop") is None
    assert msrp_pv(frame, "nexthops") == 0
    assert msrp_pv(frame, "lasthop") == Q
    assert msrp_pv(frame, "msgid") is None
    assert msrp_pv(frame, "sessid") == "q"  # the session of To-Path #0
    assert msrp_pv(frame, "srcaddr") is None  # no connection info given


def test_sessid_absent_when_crthop_has_no_session() -> None:
    frame = read(
        f"MSRP a1 AUTH\r\nTo-Path: msrp://127.0.0.1:2855;tcp\r\nFrom-Path: {Q}\r\n"
        "-------a1$\r\n".encode()
    )
    assert msrp_pv(frame, "sessid") is None
    assert msrp_pv(frame, "method") == "AUTH"


def test_double_space_gives_no_empty_hop() -> None:
    """Kamailio splits on single spaces: `X  Z` gives an empty nexthop and nexthops 2."""
    frame = read(f"MSRP d1 SEND\r\nTo-Path: {X}  {Z}\r\nFrom-Path: {Q}\r\n-------d1$\r\n".encode())
    assert msrp_pv(frame, "nexthop") == Z
    assert msrp_pv(frame, "nexthops") == 1


def test_streamed_frame_has_no_buf_or_body() -> None:
    data = SEND.replace(b"hello", b"h" * 500)
    reader = FrameReader(ReaderLimits(max_body=100))
    reader.receive_data(data)
    head = reader.next_event()
    assert isinstance(head, Frame) and head.streamed
    for key in ("buf", "buflen", "body", "bodylen"):
        assert msrp_pv(head, key) is None
    assert msrp_pv(head, "transid") == "tx1"
    assert msrp_pv(head, "nexthops") == 2
    assert reader.next_event() is not NEED_DATA


def test_ipv6_srcaddr_is_bracketed_by_the_caller_contract() -> None:
    frame = read(SEND)
    conn = ConnInfo("msrp://[::1]:55560", "tcp:[::1]:2855", None)
    assert msrp_pv(frame, "srcaddr", conn) == "msrp://[::1]:55560"
    assert msrp_pv(frame, "conid", conn) is None


def test_unknown_key_is_an_error() -> None:
    frame = read(SEND)
    with pytest.raises(KeyError):
        msrp_pv(frame, "transaction")
    with pytest.raises(KeyError):
        msrp_pv(frame, "Method")  # case-sensitive, as in Kamailio


@pytest.mark.parametrize(
    "to_path",
    [f"{X}", f"{X} {Z}", f"{X} {Y} {Z}", f"{X}  {Z} ", f"{X}\t{Y}\t {Z}\t", f"{X} \t{Z}"],
)
def test_nexthops_counts_the_to_path_uris_as_split_does(to_path: str) -> None:
    """Counted on the bytes (frame._words compiled, bytes.split interpreted), once per frame,
    whichever reader path read the head (an HTAB sends it to the state machine)."""
    frame = read(f"MSRP n1 SEND\r\nTo-Path: {to_path}\r\nFrom-Path: {Q}\r\n-------n1$\r\n".encode())
    want = len(to_path.split()) - 1
    assert msrp_pv(frame, "nexthops") == want
    assert msrp_pv(frame, "nexthops") == want  # the count kept
    assert frame.to_count == len(frame.to_path) == want + 1


@given(st.binary(max_size=40), st.integers(0, 40))
def test_words_counts_as_bytes_split(data: bytes, at: int) -> None:
    assert _words(data, min(at, len(data)), len(data)) == len(data[at:].split())
