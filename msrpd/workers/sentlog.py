"""SentLog: which relayed frames a connection's queued output holds, and where they came from.

Rules (issue 12 item 5; RFC 4975 §7.1.2): a graceful stop that cannot deliver a frame it
acknowledged must say so to the sender with a failure REPORT. So each connection keeps, for
every relayed frame written to it and not yet passed to the kernel, one record: the output
offset just past its last byte, its source (a connection id of this worker, or (link id,
token) for a handoff) and a reference to its first piece (the head, parsed only when the frame
must be reported). Replies and REPORTs the relay writes itself have no source and no record.
Records go as soon as the transport has passed their last byte to the kernel: the log holds
what the transport buffers, no more. Bookkeeping only, no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["SentLog", "Unsent"]

Unsent = tuple[Hashable, bytes | memoryview]
"""(source, first piece) of a frame not (wholly) passed to the kernel."""


class SentLog:
    __slots__ = ("records", "relayed", "streams")

    def __init__(self) -> None:
        self.records: list[tuple[int, Hashable, bytes | memoryview]] = []
        """Oldest first. A list, not a deque: compiled, its reads are native where a deque's
        popleft is a generic method call (about 220 instructions a record, issue 16)."""
        self.streams: dict[Hashable, tuple[bytes | memoryview, int]] = {}
        """source -> (first piece, the output offset it starts at) of a streamed frame
        whose last piece is not written yet (gate.py cuts a chunk where its body is)."""
        self.relayed = False
        """A relayed frame was ever written: the connection is a receiver (a stop reads the
        answers it sends while it catches up)."""

    def note(self, end: int, source: Hashable, data: bytes | memoryview, more: bool) -> None:
        """A piece of a streamed frame (the one-piece case is inlined in Outbox._put)."""
        streams = self.streams
        if more:
            if source not in streams:
                streams[source] = (data, end - len(data))
        else:
            first = streams.pop(source, None)
            self.records.append((end, source, data if first is None else first[0]))

    def trim(self, sent: int) -> None:
        """The first `sent` bytes of output have reached the kernel."""
        records = self.records
        done = 0
        for end, _, _ in records:
            if end > sent:
                break
            done += 1
        if done:
            # One move of the pointers behind them: O(n) for a log of n records. A reader
            # that falls behind keeps its log past _TRIM_AT and is trimmed at every flush,
            # but the log is bounded by the unsent output the outbox allows (WRITE_HIGH).
            del records[:done]

    def take(self) -> list[Unsent]:
        """Every frame still (partly) unsent, in output order; the log is empty after."""
        unsent = [(source, head) for _, source, head in self.records]
        unsent.extend((source, first) for source, (first, _) in self.streams.items())
        self.records.clear()
        self.streams.clear()
        return unsent
