"""The route API's stateful calls, named after Kamailio's tm module: t_reply and t_relay
(Msrp.t_reply, Msrp.t_relay delegate here; the worker's side is workers/txrelay.py).

Rules:
- t_reply is the hop-by-hop response that obeys Failure-Report (RFC 4975 §7.1.4, §7.2;
  rfc-checklist §2.4): absent or "yes", sent; "partial", only a non-2xx; "no", never. A
  response or a REPORT is never answered (RFC 4975 §7.2, §7.1.2). 1 written, 0 suppressed by
  Failure-Report, -1 error. A 2xx to a chunk of a message that a next hop refused with 413,
  or that its sender aborted with a "#" chunk (RFC 4975 §7.1, checklist case 29), becomes a
  413 (rfc-checklist §2.8: later chunks are refused; t_relay drops them).
- t_relay forwards a request along its To-Path as relay() does (to the set_dst/token
  destination, else To-Path URI #2), under a new transaction id, and a response back to the
  request it answers. 1 on its way; -2 not forwarded, its sender told by the relay (a
  REPORT, a 408, or nothing owed); -1 otherwise.
"""

from __future__ import annotations

from ..protocol import Frame, LocalProtocolError, build_reply, parse_uri
from ..protocol.frame import REPORT
from .env import Destination, RouteEnv

__all__ = ["BACK", "t_relay", "t_reply"]

BACK = Destination(None)
"""Where a response goes: back along its transaction."""


def t_reply(frame: Frame, env: RouteEnv, flags: int, code: int, text: str, hdrs: str) -> int:
    if frame.method is None or frame.method == REPORT:
        return -1
    if 200 <= code < 300 and env.message_refused(frame):
        code, text = 413, "Message Refused"
    wanted = frame.failure_report
    if wanted == b"no" or (wanted == b"partial" and 200 <= code < 300):
        return 0
    try:
        data = build_reply(frame, code, text, hdrs)
    except (LocalProtocolError, ValueError):
        return -1
    env.write_origin(data, flags)
    return 1


def t_relay(frame: Frame, env: RouteEnv, dest: Destination | None, flags: int) -> int:
    if dest is None:
        if frame.method is None:
            dest = BACK
        else:
            try:
                dest = Destination(parse_uri(frame.to_path[1]))
            except (LocalProtocolError, IndexError):
                return -1
    return env.t_relay(frame, dest, flags)
