"""Values a route needs that are not local yet: the frame waits, nothing else does.

A routing script has a synchronous API, but some values live elsewhere (a user's HA1 in
PostgreSQL; later, counters shared by a cluster). The env method that gives such a value
answers at once when it has it (a cache), and otherwise starts fetching it and raises NotYet.
The worker then parks the frame and pauses that connection's reading, so its frames stay in
order, and routes the frame again from the start once the value has landed (or has failed).
Every other connection of the worker goes on meanwhile.

Rules:
- A route asks for such values before it answers, relays or records anything for the frame:
  its first pass is thrown away, and the frame is routed again as if it had just arrived. A
  route that asks after it answered or relayed gets Unavailable instead (logged): routing the
  frame again would answer or relay it twice (workers/connenv.py).
- NotYet is a BaseException, so a script's `except Exception` cannot swallow it.
- A value that cannot be had (its store is down) raises Unavailable: the request is answered
  500 (not an RFC 4975 §10 code: a non-200 like any other to its sender, rfc-checklist §4.1),
  a response or a REPORT is dropped, and so is a request with Failure-Report: no (RFC 4975
  §7.1.4).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

__all__ = ["NotYet", "Pending", "Unavailable"]


class Pending(Hashable, Protocol):
    """A value being fetched (hashable: it blocks a connection's reading, intake.py)."""

    def then(self, resume: Callable[[], None]) -> None:
        """Call `resume` once, on the event loop, when the value has landed or has failed."""


class NotYet(BaseException):
    """The value is being fetched: route the frame again once `pending` is done."""

    def __init__(self, pending: Pending) -> None:
        super().__init__("a value the route needs is not here yet")
        self.pending = pending


class Unavailable(Exception):
    """The value cannot be had now; `what` names its store in the 500's reason phrase."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} unavailable")
        self.what = what
