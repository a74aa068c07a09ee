"""Failure REPORTs and loss notices: the one place the relay builds what a sender hears when a
frame it sent will not be delivered.

Rules (RFC 4975 §7.1.2, RFC 4976 §6.4.1): a SEND that asked for failure reports (Failure-Report
absent, "yes" or "partial") gets a REPORT with Status 000 <code>, sent back along its
From-Path, each with a fresh transaction id (64 random bits, RFC 4975 §7.1); other frames get
nothing, except an AUTH, whose response is end to end: nobody else answers it, so the relay
does (rfc-checklist §4.5). A forwarded transaction's REPORT (tx_report) is built from what
the transaction kept: To-Path the SEND's From-Path as received, From-Path our token,
Message-ID, and Byte-Range with the range-end of the bytes actually received; no
Failure-Report or Success-Report (rfc-checklist §2.5).
"""

from __future__ import annotations

import secrets

from ..protocol import Frame, FrameReader, LocalProtocolError, RemoteProtocolError, build_reply
from ..protocol.frame import AUTH, SEND
from ..protocol.grammar import DASHES
from ..protocol.transact import received_range
from ..protocol.writer import ReportBasis, build_failure_report, build_response, report_basis
from .transactions import Transaction

__all__ = [
    "frame_report",
    "head_report",
    "loss_notice",
    "relayed_report",
    "report_tid",
    "tx_notice",
    "tx_report",
]

RELAYED_HEAD_MAX = 64 * 1024
"""A relayed head is looked for in this many first bytes (max_head is 16 KiB by default)."""


def report_tid() -> bytes:
    """A REPORT's transaction id: 64 bits from the CSPRNG (RFC 4975 §7.1)."""
    return secrets.token_hex(8).encode()


def _report(basis: ReportBasis | None, code: int, reason: str) -> bytes | None:
    if basis is None:
        return None
    return build_failure_report(basis, report_tid(), code, reason)


def tx_report(tx: Transaction, code: int, reason: str) -> bytes | None:
    """The REPORT for a forwarded SEND whose sender asked for failure reports, or None."""
    message_id = tx.message_id
    if tx.method != SEND or tx.failure_report == b"no" or message_id is None:
        return None
    byte_range = received_range(tx.byte_range, tx.received)
    basis = ReportBasis(b" ".join(tx.from_path.split()), tx.our_uri, message_id, byte_range)
    return _report(basis, code, reason)


def tx_notice(tx: Transaction, code: int, reason: str) -> bytes | None:
    """What the sender of a forwarded request hears when it will get no answer: a REPORT
    for a SEND that asked for one, a `code` response to an AUTH (rfc-checklist §2.6), else
    None (REPORTs and other methods: RFC 4976 §6.4.2)."""
    if tx.method == AUTH:
        message_id = tx.message_id
        msgid = b"" if message_id is None else b"Message-ID: %s\r\n" % message_id
        to_path = b" ".join(tx.from_path.split())
        return build_response(tx.orig_tid, code, reason, to_path, tx.our_uri, msgid)
    return tx_report(tx, code, reason)


def frame_report(frame: Frame, code: int, reason: str) -> bytes | None:
    """The REPORT for `frame` as its sender sent it, or None when it asked for none."""
    return _report(report_basis(frame), code, reason)


def head_report(head: bytes | None, tid: bytes, code: int, reason: str) -> bytes | None:
    """The REPORT for a SEND of which only the first line and headers were kept (`head`)."""
    frame = _parse_head(head, tid)
    return None if frame is None else frame_report(frame, code, reason)


def relayed_report(data: bytes | memoryview, code: int, reason: str) -> bytes | None:
    """The REPORT for a frame as this relay wrote it to the next hop: its From-Path starts
    with our own URI (RFC 4976 §6.2 splice), and the sender's path follows."""
    return _report(_relayed_basis(data), code, reason)


def loss_notice(frame: Frame, code: int, reason: str) -> bytes | None:
    """What the sender of a lost `frame` gets: a REPORT for a SEND that asked for one, a
    `code` response to an AUTH, else None."""
    if frame.method == AUTH:
        try:
            return build_reply(frame, code, reason)
        except LocalProtocolError:
            return None
    return frame_report(frame, code, reason)


def _parse_head(head: bytes | None, tid: bytes) -> Frame | None:
    if head is None:
        return None
    reader = FrameReader()
    reader.receive_data(head + b"\r\n" + DASHES + tid + b"$\r\n")
    try:
        return next((e for e in reader.events() if isinstance(e, Frame)), None)
    except RemoteProtocolError:  # not a frame: nothing to report
        return None


def _relayed_basis(data: bytes | memoryview) -> ReportBasis | None:
    buf = bytes(data[:RELAYED_HEAD_MAX])
    ends = [at for at in (buf.find(b"\r\n\r\n"), buf.find(b"\r\n" + DASHES)) if at >= 0]
    first = buf.split(b"\r\n", 1)[0].split(b" ")
    if not ends or len(first) != 3 or first[2] != b"SEND":
        return None
    frame = _parse_head(buf[: min(ends) + 2], first[1])
    basis = None if frame is None else report_basis(frame)
    uris = [] if frame is None else frame.from_path_raw.split()
    if basis is None or len(uris) < 2:
        return None
    return ReportBasis(b" ".join(uris[1:]), uris[0], basis.message_id, basis.byte_range)
