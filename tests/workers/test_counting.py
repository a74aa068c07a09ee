"""workers/counting.py: each frame read and each response written lands in its own counter,
once, and in no other."""

from __future__ import annotations

from msrpd.protocol import Frame, FrameReader, Status, build_reply
from msrpd.shm import Counter, StatsCounters
from msrpd.workers.counting import TWO, count_frame_in, count_reply, count_status

TO = "msrp://127.0.0.1:2855/relay;tcp msrp://127.0.0.1:7000/b;tcp"
FROM = "msrp://127.0.0.1:6000/a;tcp"


def frame(first: str, *headers: str) -> Frame:
    lines = [f"MSRP t1 {first}", f"To-Path: {TO}", f"From-Path: {FROM}", *headers]
    reader = FrameReader()
    reader.receive_data(("\r\n".join(lines) + "\r\n-------t1$\r\n").encode())
    (event,) = list(reader.events())
    assert isinstance(event, Frame)
    return event


def counted(counters: StatsCounters) -> dict[str, int]:
    return {name: n for name, n in counters.as_dict().items() if n}


def test_frames_in_by_method() -> None:
    counters = StatsCounters()
    for first in ("SEND", "SEND", "REPORT", "AUTH", "FOO", "200 OK"):
        headers = ("Message-ID: m1", "Byte-Range: 1-0/0") if first != "200 OK" else ()
        count_frame_in(counters.tally, frame(first, *headers))
    assert counted(counters) == {
        "frames_in_send": 2,
        "frames_in_report": 1,
        "frames_in_auth": 1,
        "frames_in_other": 1,
        "frames_in_response": 1,
    }


def test_replies_by_class() -> None:
    counters = StatsCounters()
    send = frame("SEND", "Message-ID: m1", "Byte-Range: 1-0/0")
    digits = [
        count_reply(counters, build_reply(send, code, "x"))
        for code in (Status.OK, 200, Status.NO_SESSION, 501, 999, 100)
    ]
    assert digits == [TWO, TWO, ord("4"), ord("5"), ord("9"), ord("1")]
    # Any class but 2xx and 4xx is counted with the 5xx, as before (stats.get has no other).
    assert counted(counters) == {"replies_2xx": 2, "replies_4xx": 1, "replies_5xx": 3}
    assert counters.fold()[Counter.replies_2xx] == 2


def test_replies_by_status_count_as_by_their_bytes() -> None:
    """count_status (the route gave the code) counts what count_reply reads off the bytes."""
    send = frame("SEND", "Message-ID: m1", "Byte-Range: 1-0/0")
    by_bytes, by_status = StatsCounters(), StatsCounters()
    for code in (Status.OK, 200, 202, Status.NO_SESSION, 403, 501, 999, 100, 302):
        digit = count_reply(by_bytes, build_reply(send, code, "x"))
        assert count_status(by_status.tally, code) == digit - ord("0")
    assert counted(by_status) == counted(by_bytes)
    assert counted(by_status) == {"replies_2xx": 3, "replies_4xx": 2, "replies_5xx": 4}
