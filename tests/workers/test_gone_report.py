"""A GONE for a handed-off SEND: the sender gets a REPORT with 481 when it asked for failure
reports (RFC 4975 §7.1.2), nothing when Failure-Report is "no"; the loss is logged."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from msrpd.config import load_config
from msrpd.protocol import Frame, FrameReader
from msrpd.workers.context import WorkerContext, WorkerIdentity
from msrpd.workers.gone import GoneReports, Sent


def parse(data: bytes) -> Frame:
    reader = FrameReader()
    reader.receive_data(data)
    (frame,) = list(reader.events())
    assert isinstance(frame, Frame)
    return frame


@dataclass
class StubConn:
    conid: int = 0x101
    peer_key: str = "tcp:127.0.0.1:40000"
    written: list[bytes] = field(default_factory=list)

    @property
    def out(self) -> StubConn:
        """Its outbox: what is written to it is kept."""
        return self

    def write_frame(self, data: bytes, close_after: bool = False, **_: object) -> bool:
        self.written.append(bytes(data))
        return True


def context(conn: StubConn) -> WorkerContext:
    none = cast(Any, None)
    ctx = WorkerContext(load_config(None), WorkerIdentity(0, 1, 0), none, none)
    ctx.conns[conn.conid] = cast(Any, conn)
    return ctx


def handed_off(ctx: WorkerContext, frame: Frame, conn: StubConn) -> int:
    """The token a HandoffSink takes for `frame`, routed from `conn` (delivery.py)."""
    return ctx.handoffs.sent.new_token(Sent.of(frame, conn.conid, conn.peer_key))


SEND = (
    b"MSRP s1 SEND\r\nTo-Path: msrp://relay:2855/sB;tcp msrp://bob:1/b;tcp\r\n"
    b"From-Path: msrp://alice:9/a;tcp\r\nMessage-ID: m77\r\nByte-Range: 1-5/5\r\n%s"
    b"Content-Type: text/plain\r\n\r\nhello\r\n-------s1$\r\n"
)


def test_gone_send_gets_a_481_report(caplog: pytest.LogCaptureFixture) -> None:
    conn = StubConn()
    ctx = context(conn)
    token = handed_off(ctx, parse(SEND % b""), conn)
    with caplog.at_level(logging.WARNING):
        GoneReports(ctx.handoffs.sent, ctx).handoff_gone(0xABC, token)
    assert "s1 from tcp:127.0.0.1:40000 not delivered" in caplog.text
    (data,) = conn.written
    report = parse(data)
    assert report.method == b"REPORT"
    assert report.to_path == ["msrp://alice:9/a;tcp"]
    assert report.from_path == ["msrp://relay:2855/sB;tcp"]
    assert report.header("Message-ID") == b"m77"
    assert report.header("Byte-Range") == b"1-5/5"
    assert report.header("Status") == b"000 481 Session Does Not Exist"


def test_no_report_when_failure_reports_are_off() -> None:
    conn = StubConn()
    ctx = context(conn)
    token = handed_off(ctx, parse(SEND % b"Failure-Report: no\r\n"), conn)
    GoneReports(ctx.handoffs.sent, ctx).handoff_gone(0xABC, token)
    assert conn.written == []


@pytest.mark.parametrize("wanted", [None, "yes", "no", "partial"])
def test_stop_report_basis_comes_from_the_frame_as_relayed(wanted: str | None) -> None:
    """A stop reports a frame from the bytes it wrote to the next hop: the relay's URI leads
    the spliced From-Path, the sender's path follows (RFC 4976 §6.2, RFC 4975 §7.1.2)."""
    from msrpd.protocol.splice import relay_splice
    from msrpd.protocol.writer import build_request
    from msrpd.workers.reports import _relayed_basis

    relay, bob, alice = "msrp://r:1/s;tcp", "msrp://b:2/b;tcp", "msrp://a:3/a;tcp"
    headers = [("Message-ID", "m42"), ("Byte-Range", "1-5/5")]
    if wanted is not None:
        headers.append(("Failure-Report", wanted))
    sent = build_request(b"t1", b"SEND", [relay, bob], [alice], [*headers], b"hello")
    basis = _relayed_basis(relay_splice(parse(sent)))
    if wanted != "no":
        assert basis is not None
        assert (basis.to_path, basis.from_path) == (alice.encode(), relay.encode())
        assert (basis.message_id, basis.byte_range) == (b"m42", b"1-5/5")
    else:
        assert basis is None
