"""DocumentSplitter: cut a byte stream into JSON documents, for the control fifo.

Rules (as Kamailio jsonrpcs' jsonrpc_read_stream): documents are found by counting brackets
outside strings, not parsed here; whatever cannot be a document (too long, garbage, mismatched
brackets) is dropped up to the next newline and reported as Discarded, so one bad writer never
sticks the stream. No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_DOCUMENT", "Discarded", "DocumentSplitter"]

MAX_DOCUMENT: Final = 64 * 1024
_SCAN: Final = re.compile(rb'["{}\[\]]')
_SCAN_STRING: Final = re.compile(rb'["\\]')
_OPENER: Final = {ord("}"): ord("{"), ord("]"): ord("[")}
_BLANK: Final = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class Discarded:
    """Bytes dropped from the stream, and why (for the log and a reply_name to answer)."""

    reason: str
    sample: bytes


class DocumentSplitter:
    """Cuts JSON objects and arrays out of a byte stream (sans-IO, bounded memory).

    A document is complete when its brackets balance outside strings; its bytes are then
    handed out whole for json.loads to judge. Memory stays below max_document plus one read.
    """

    def __init__(self, max_document: int = MAX_DOCUMENT) -> None:
        self.max_document = max_document
        self.buf = bytearray()
        self.discarding = False
        self._reset()

    def _reset(self) -> None:
        self.started = False  # buf[0] opens the current document
        self.pos = 0
        self.stack = bytearray()
        self.in_string = False

    @property
    def partial(self) -> bool:
        """Whether part of a document is buffered."""
        return self.started

    def drop_partial(self) -> bytes:
        """Forget a partial document (its writer died); its bytes."""
        data = bytes(self.buf[: self.max_document])
        self.buf.clear()
        self._reset()
        return data

    def feed(self, data: bytes) -> list[bytes | Discarded]:
        """Add bytes; the documents they complete, in order, and what was dropped."""
        self.buf += data
        out: list[bytes | Discarded] = []
        buf = self.buf
        while buf:
            if self.discarding:
                newline = buf.find(b"\n")
                del buf[: len(buf) if newline < 0 else newline + 1]
                self.discarding = newline < 0
                continue
            if not self.started:
                skip = len(buf) - len(buf.lstrip(_BLANK))
                del buf[:skip]
                if not buf:
                    break
                if buf[0] not in b"{[":
                    self._discard(out, 0, "not a JSON object")
                    continue
                self.started = True
            end = self._scan()
            if end is None:
                if len(buf) > self.max_document:
                    self._discard(out, len(buf), f"request over {self.max_document} bytes")
                    continue
                break
            if end < 0:
                self._discard(out, self.pos, "mismatched brackets")
                continue
            if end > self.max_document:
                self._discard(out, end, f"request over {self.max_document} bytes")
                continue
            out.append(bytes(buf[:end]))
            del buf[:end]
            self._reset()
        return out

    def _discard(self, out: list[bytes | Discarded], at: int, reason: str) -> None:
        # Drop up to the first newline at or after `at`; keep a sample for reply_name.
        newline = self.buf.find(b"\n", at)
        cut = len(self.buf) if newline < 0 else newline + 1
        out.append(Discarded(reason, bytes(self.buf[: min(cut, self.max_document)])))
        del self.buf[:cut]
        self._reset()
        self.discarding = newline < 0

    def _scan(self) -> int | None:
        """End offset of the document once its brackets balance; None: need more; -1: broken."""
        buf, pos = self.buf, self.pos
        while True:
            pattern = _SCAN_STRING if self.in_string else _SCAN
            match = pattern.search(buf, pos)
            if match is None:
                self.pos = len(buf)
                return None
            i = match.start()
            char = buf[i]
            if char == 0x5C:  # backslash in a string: skip the escaped byte
                if i + 1 >= len(buf):
                    self.pos = i
                    return None
                pos = i + 2
            elif char == 0x22:
                self.in_string = not self.in_string
                pos = i + 1
            elif char in b"{[":
                self.stack.append(char)
                pos = i + 1
            elif not self.stack or self.stack.pop() != _OPENER[char]:
                self.pos = i
                return -1
            else:
                pos = i + 1
                if not self.stack:
                    self.pos = pos
                    return pos
