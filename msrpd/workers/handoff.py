"""Handoff messages between workers: a fixed header and a sans-IO codec (DESIGN §2, style 18).

Strategy:
- Each message is one 20-byte header, `HEADER` = kind u8, flags u8, reserved u16, conid u64,
  token u32, length u32 (network order), then `length` payload bytes. Only FRAME, MOVED,
  RESPONSE, CLOSED, CHUNK and HOLDING carry a payload.
- Encoding never joins payloads: `encode_frame_parts` returns the header followed by the
  caller's parts, ready for `transport.writelines`.
- `HandoffDecoder.feed` keeps unread bytes in one bytearray with a read offset and compacts it
  only when the consumed prefix is at least as long as what is left, so any split of the input,
  down to one byte at a time, costs O(n). It remembers how many bytes the next message needs, so
  a partial message is not re-examined until enough bytes have arrived. The rest of a big
  message (over GATHER) is not added to the buffer: its reads are kept as they came and
  joined into the payload once it is complete, one copy instead of the buffer's growth and
  a slice (issue 16).
- A header is checked as soon as it is complete, before its payload is buffered, so memory
  stays bounded by one header plus `max_payload`. A bad header (unknown kind, nonzero reserved
  field, oversize or misplaced payload) raises `HandoffError`: the stream cannot be trusted any
  more, the decoder stays failed and the caller closes the link.
- Nothing here does I/O: the asyncio side is links.py.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final, TypeAlias

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "HEADER",
    "ConnId",
    "Handoff",
    "HandoffDecoder",
    "HandoffError",
    "HandoffFlags",
    "HandoffKind",
    "conid_owner",
    "conid_serial",
    "encode_frame_parts",
    "encode_handoff",
    "encode_header",
    "frame_flags",
    "make_conid",
    "owner_conids",
]

HEADER = struct.Struct("!BBHQII")
HEADER_SIZE = HEADER.size
# A whole-frame body may be 64 MiB; the extra 64 KiB leaves room for the MSRP head around it.
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024 + 64 * 1024
# Compaction is skipped below this many consumed bytes: moving a few bytes often costs more
# than keeping them.
_COMPACT_MIN = 4096
GATHER = 64 * 1024
"""A message this long that is not all here has its further reads kept, not buffered."""

# ConnId helpers: a connection id is slot (8 bits) | generation (16 bits) | serial (40 bits),
# high bits first, so (slot, generation) names the owning worker process (style rule 10).
ConnId: TypeAlias = int
# Final: compiled, a module global that is not is a dict lookup on every use (issue 16).
SLOT_BITS: Final = 8
GENERATION_BITS: Final = 16
SERIAL_BITS: Final = 40
_SERIAL_MASK: Final = (1 << SERIAL_BITS) - 1
_GENERATION_MASK: Final = (1 << GENERATION_BITS) - 1


def make_conid(slot: int, generation: int, serial: int) -> ConnId:
    """Pack a connection id.

    Raises:
        ValueError: a field is negative or too wide for its bits.
    """
    if not 0 <= slot < 1 << SLOT_BITS:
        raise ValueError(f"slot {slot} out of range 0..{(1 << SLOT_BITS) - 1}")
    if not 0 <= generation <= _GENERATION_MASK:
        raise ValueError(f"generation {generation} out of range 0..{_GENERATION_MASK}")
    if not 0 <= serial <= _SERIAL_MASK:
        raise ValueError(f"serial {serial} out of range 0..{_SERIAL_MASK}")
    return (slot << (GENERATION_BITS + SERIAL_BITS)) | (generation << SERIAL_BITS) | serial


def owner_conids(slot: int, generation: int) -> range:
    """Every connection id worker (slot, generation) can hand out (`conid in` is O(1))."""
    first = make_conid(slot, generation, 0)
    return range(first, first + (1 << SERIAL_BITS))


def conid_owner(conid: ConnId) -> tuple[int, int]:
    """The (slot, generation) of the worker that owns `conid`."""
    return conid >> (GENERATION_BITS + SERIAL_BITS), (conid >> SERIAL_BITS) & _GENERATION_MASK


def conid_serial(conid: ConnId) -> int:
    """The owner-local serial number of `conid`."""
    return conid & _SERIAL_MASK


class HandoffKind(IntEnum):
    FRAME = 1
    """Write the payload to `conid`."""
    GONE = 2
    """Reply: `conid` is not (or no longer) a live connection of the receiver; `token` echoes
    the FRAME's token."""
    CLOSE = 3
    """Close `conid` once everything queued for it has been written."""
    # Moving a connection to the worker its peer is on (colocate.py, handover.py):
    MOVED = 4
    """New owner -> old owner: `conid` (old id) is served here now; the payload is its new
    id (u64, network order)."""
    FENCE = 5
    """Old owner -> every other worker: answer FENCE_ACK once everything you sent to `conid`
    before this has been sent; `token` names the old owner (slot << 16 | generation)."""
    FENCE_ACK = 6
    """Reply to FENCE for `conid`."""
    RELEASE = 7
    """Old owner -> new owner: every frame for the old id has been forwarded; `conid` (new
    id) may take frames from everyone now."""
    PULL = 8
    """Ask the owner of `conid` to move it to the sender's worker (token as in FENCE)."""
    MOVING = 9
    """Old owner -> new owner, after every frame it relayed from `conid` (old id) to the new
    owner's connections: the moved connection may start reading."""
    # Flow control per destination (remoteflow.py): the link itself is never paused.
    PAUSE = 10
    """Owner -> sender, on the link the FRAMEs came on: `conid` is congested; stop reading
    the connections that relay into it until RESUME."""
    RESUME = 11
    """Owner -> sender: `conid` has drained (or closed); its sources may read again."""
    # Transactions (transactions.py, txrelay.py):
    RESPONSE = 12
    """A response read by another worker for a transaction the receiver owns (its id names
    the owner): `conid` is the connection it arrived on, `token` how many u64 ids (network
    order) start the payload (that connection's current and former ids), the response after."""
    CLOSED = 13
    """Owner -> every other worker: connection `conid` has closed (not moved): the payload is
    its former ids (u64 each, network order); `token` 1 when it was a next hop the relay
    connected to, 0 when a client's. Transactions whose request went out on it fail."""
    CHUNK = 14
    """A chunk of a transaction the receiver owns was interrupted on its way out of the
    sender's connection `conid` (gate.py, transports/wsout.py): `token` u64 ids as in
    RESPONSE, then the body bytes it had (u64), its id and the continuing chunk's id."""
    # What the sender must still remember for a GONE (gone.py):
    HELD = 15
    """Sender -> owner, on the link its FRAMEs went on, after them: answer HOLDING; `token`
    numbers the question."""
    HOLDING = 16
    """Reply to HELD on the same link, `token` echoing it: the payload is the tokens (u32
    each, network order) of that link's frames the owner has not passed to a kernel yet."""


class HandoffFlags(IntFlag):
    CLOSE_AFTER = 1
    """Close the connection after writing this payload."""
    MORE = 2
    """More pieces of the same streamed MSRP frame follow (informational)."""
    FORWARDED = 4
    """Forwarded by the old owner of a moved connection: written at once, before what the new
    owner holds back until RELEASE."""
    NOTICE = 8
    """A failure REPORT the relay made itself for a sender that moved to the receiving worker:
    written even by a worker whose stop refuses relayed frames (gone.GoneReports.handoff_gone)."""


_PAYLOAD_KINDS = frozenset(
    {
        HandoffKind.FRAME,
        HandoffKind.MOVED,
        HandoffKind.RESPONSE,
        HandoffKind.CLOSED,
        HandoffKind.CHUNK,
        HandoffKind.HOLDING,
    }
)
_HOLDING = int(HandoffKind.HOLDING)


def frame_flags(more: bool, close_after: bool) -> int:
    """The FRAME flags of one relayed piece."""
    return (HandoffFlags.MORE if more else 0) | (HandoffFlags.CLOSE_AFTER if close_after else 0)


# Decode tables: one dict lookup per message instead of an enum constructor call.
_KINDS = {int(kind): kind for kind in HandoffKind}
_FLAGS = tuple(HandoffFlags(bits) for bits in range(256))
_NO_FLAGS = _FLAGS[0]


@dataclass(frozen=True, slots=True)
class Handoff:
    """One message on a handoff link."""

    kind: HandoffKind
    conid: ConnId
    """The connection the message is about; the receiver owns it (FRAME, CLOSE) or owned it
    (GONE)."""
    token: int = 0
    """Chosen by the sender of a FRAME or CLOSE (u32); a GONE echoes it."""
    payload: bytes = b""
    """FRAME only: bytes to write to the connection."""
    flags: HandoffFlags = _NO_FLAGS


class HandoffError(ValueError):
    """The handoff stream is malformed; the link must be closed.

    Attributes:
        messages: the complete, valid messages that preceded the fault in the same `feed` call;
            they were framed correctly and may still be acted on.
    """

    def __init__(self, msg: str, messages: list[Handoff] | None = None) -> None:
        super().__init__(msg)
        self.messages: list[Handoff] = messages or []


def encode_header(kind: HandoffKind, flags: int, conid: ConnId, token: int, length: int) -> bytes:
    """The 20-byte header of one message.

    Raises:
        ValueError: a field does not fit its width.
    """
    try:
        return HEADER.pack(kind, flags, 0, conid, token, length)
    except struct.error as exc:
        raise ValueError(f"handoff header field out of range: {exc}") from None


def encode_handoff(msg: Handoff) -> bytes:
    """One whole message as bytes.

    Raises:
        ValueError: a field is out of range, or a GONE/CLOSE carries a payload.
    """
    if msg.payload and msg.kind not in _PAYLOAD_KINDS:
        raise ValueError(f"{msg.kind.name} carries no payload")
    header = encode_header(msg.kind, msg.flags, msg.conid, msg.token, len(msg.payload))
    return header + msg.payload


def encode_frame_parts(
    conid: ConnId, token: int, flags: int, parts: Sequence[bytes | memoryview]
) -> list[bytes | memoryview]:
    """A FRAME as a list for `writelines`: the header, then `parts` unchanged (not joined).

    Parts must be byte-sized (bytes, bytearray, or a memoryview of format "B"): the length field
    is the sum of their `len`.

    Raises:
        ValueError: a field is out of range (the payload is 4 GiB or more, say).
    """
    size = sum(map(len, parts))
    return [encode_header(HandoffKind.FRAME, flags, conid, token, size), *parts]


def _header_fault(kind: int, reserved: int, length: int, max_payload: int) -> str | None:
    if kind not in _KINDS:
        return f"unknown handoff kind {kind}"
    if reserved:
        return f"reserved field is {reserved:#x}, not 0"
    if length > max_payload:
        return f"payload of {length} bytes is over the limit of {max_payload}"
    if length and kind not in _PAYLOAD_KINDS:
        return f"{_KINDS[kind].name} with a {length}-byte payload"
    if kind == _HOLDING and length % 4:
        return f"HOLDING with a {length}-byte payload, not whole u32 tokens"
    return None


class HandoffDecoder:
    """Incremental decoder: bytes in, in any split, messages out."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._start = 0  # read offset into _buf
        self._need = HEADER_SIZE  # unread bytes needed before the next message can be decoded
        self._failed: str | None = None
        self._reads: list[bytes] = []  # a big message's reads after what _buf holds of it
        self._gathered = 0  # their length

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf) - self._start + self._gathered

    def feed(self, data: bytes) -> list[Handoff]:
        """Add received bytes; return every message they complete, in order.

        Raises:
            HandoffError: the stream is malformed (also on every call after the first error).
                Its `messages` holds the valid messages decoded before the fault.
        """
        if self._failed is not None:
            raise HandoffError(f"handoff stream failed earlier: {self._failed}")
        buf = self._buf
        if self._start == len(buf):
            # Nothing buffered: decode straight from `data` and keep only its tail.
            messages, used = self._decode(data, 0, len(data))
            buf.clear()
            self._start = 0
            if used < len(data):
                buf += memoryview(data)[used:]
            return messages
        if self._need > GATHER:
            have = len(buf) - self._start + self._gathered + len(data)
            if have < self._need:
                self._reads.append(data)
                self._gathered += len(data)
                return []
            return self._gathered_message(data)
        buf += data
        if len(buf) - self._start < self._need:
            return []
        with memoryview(buf) as view:
            messages, self._start = self._decode(view, self._start, len(buf))
        self._compact()
        return messages

    def _gathered_message(self, data: bytes) -> list[Handoff]:
        """The big message that `data` completes, its payload joined once from what _buf
        holds of it, the reads kept and `data`'s head; then what follows it in `data`."""
        buf, start = self._buf, self._start
        kind, flags, _, conid, token, _ = HEADER.unpack_from(buf, start)  # checked before
        used = self._need - (len(buf) - start) - self._gathered
        with memoryview(buf) as view, memoryview(data) as head:
            payload = b"".join((view[start + HEADER_SIZE :], *self._reads, head[:used]))
        rest = data[used:]  # the start of the next messages, if any
        buf.clear()
        self._start, self._need, self._reads, self._gathered = 0, HEADER_SIZE, [], 0
        message = Handoff(_KINDS[kind], conid, token, payload, _FLAGS[flags])
        return [message, *self.feed(rest)] if rest else [message]

    def _compact(self) -> None:
        start = self._start
        if start == len(self._buf):
            self._buf.clear()
            self._start = 0
        elif start >= _COMPACT_MIN and start >= len(self._buf) - start:
            del self._buf[:start]
            self._start = 0

    def _decode(self, data: bytes | memoryview, pos: int, end: int) -> tuple[list[Handoff], int]:
        messages: list[Handoff] = []
        unpack = HEADER.unpack_from
        max_payload = self.max_payload
        while end - pos >= HEADER_SIZE:
            kind, flags, reserved, conid, token, length = unpack(data, pos)
            if kind != 1 or reserved or length > max_payload:
                fault = _header_fault(kind, reserved, length, max_payload)
                if fault is not None:
                    self._failed = fault
                    raise HandoffError(fault, messages)
            stop = pos + HEADER_SIZE + length
            if stop > end:
                self._need = HEADER_SIZE + length
                return messages, pos
            payload = bytes(data[pos + HEADER_SIZE : stop])
            messages.append(Handoff(_KINDS[kind], conid, token, payload, _FLAGS[flags]))
            pos = stop
        self._need = HEADER_SIZE
        return messages, pos
