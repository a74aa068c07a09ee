"""HandoffOut: this worker's sending side of the handoff links, shared by every connection.

Rules: a frame for another worker's connection goes over the link to its owner (links.py)
with a token from the GONE memory (gone.py). After each, the connection being read pauses
while the destination's owner has asked for a pause (remoteflow.py), or while the link holds
more than WRITE_HIGH, until the link drains (flow.py). The reader is passed in by the caller:
it is the connection (or link) whose frames are being routed.
"""

from __future__ import annotations

from pathlib import Path

from ..rundir import handoff_path
from ..shm import StatsCounters
from .gone import SentMemory
from .handoff import HandoffKind
from .links import HandoffHub
from .ports import WRITE_HIGH, Blockable
from .remoteflow import RemoteFlow

__all__ = ["HandoffOut"]


class HandoffOut:
    __slots__ = ("_paths", "counters", "flow", "hub", "run_dir", "sent")

    def __init__(
        self, hub: HandoffHub | None, run_dir: Path, counters: StatsCounters, sent: SentMemory
    ) -> None:
        self.hub = hub
        self.run_dir = run_dir
        self.counters = counters
        self.flow = RemoteFlow()
        """Connections of other workers that asked for a pause (PAUSE/RESUME)."""
        self.sent = sent
        if hub is not None:
            sent.ask = self.ask_held
        self._paths: dict[tuple[int, int], Path] = {}

    def ask_held(self, path: Path, question: int) -> None:
        """HELD: which of our frames the worker at `path` still holds (gone.py)."""
        if self.hub is not None:
            self.hub.send_control(path, HandoffKind.HELD, 0, question)

    def path(self, slot: int, generation: int) -> Path:
        key = (slot, generation)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = handoff_path(self.run_dir, slot, generation)
        return path

    def throttle(
        self, path: Path, reader: Blockable | None, conid: int | None = None, token: int = 0
    ) -> None:
        """After a handoff to `conid`: pause `reader` while the owner has asked for a pause
        (remoteflow.py), or while the link holds more than WRITE_HIGH, until it drains."""
        hub = self.hub
        if conid is not None:
            self.flow.throttle(conid, token, reader)
        if reader is None or hub is None or hub.pending_bytes(path) <= WRITE_HIGH:
            return
        reader.block(path)
        hub.when_drained(path, lambda: reader.unblock(path))

    def control(
        self,
        worker: tuple[int, int],
        kind: HandoffKind,
        conid: int,
        token: int = 0,
        payload: bytes = b"",
    ) -> None:
        """Send a control message to worker (slot, generation): connection moving
        (handover.py), a closed connection (CLOSED, txrelay.py)."""
        if self.hub is not None:
            self.hub.send_control(self.path(*worker), kind, conid, token, payload)
