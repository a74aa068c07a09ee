"""Playing a scenario against one relay and recording what each client saw.

Strategy: the same plan (scenarios.py) is played against Kamailio and against msrpd. After
each send the driver waits until every connection has received at least the number of items
the golden file recorded after that send and the line has then been quiet briefly; when the
golden file recorded nothing, it waits for a longer quiet spell (silence can only be observed
by waiting). Whatever arrives in that window is the step's outcome, whether or not it is what
was expected: the comparison happens afterwards, on normalised text. A send on a connection
the relay already closed is not played; the step's `sent` is then None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .normalise import Normaliser, Placeholders
from .scenarios import Builder, Connect, Scenario, Send
from .wire import Wire

__all__ = ["Outcome", "Step", "Transcript", "normalise_steps", "play"]

#: Seconds to wait for the items the golden file recorded after a send.
REPLY_TIMEOUT = 2.0
#: Quiet time after the expected items arrived (catches extra frames).
GRACE = 0.1
#: Quiet time that counts as silence when the golden file recorded nothing.
SILENCE = 0.3
#: Quiet time at the end of a scenario, before the connections are closed.
FINAL_QUIET = 0.2

#: A step's normalised outcome: connection name -> items received, in order.
Outcome = dict[str, list[str]]


@dataclass
class Step:
    conn: str
    sent: str | None
    received: Outcome = field(default_factory=dict)
    probe: bool = False


@dataclass
class Transcript:
    scenario: str
    steps: list[Step]
    ph: Placeholders

    def normalised(self) -> list[Step]:
        return normalise_steps(self.steps, self.ph)


def normalise_steps(steps: list[Step], ph: Placeholders) -> list[Step]:
    norm = Normaliser(ph)
    out = []
    for s in steps:
        sent = None if s.sent is None else norm.sent(s.sent)
        received = {conn: [norm.received(i) for i in items] for conn, items in s.received.items()}
        out.append(Step(s.conn, sent, received, s.probe))
    return out


def _received_since(wire: Wire, marks: dict[str, int]) -> Outcome:
    got = {name: conn.items[marks.get(name, 0) :] for name, conn in sorted(wire.conns.items())}
    return {name: items for name, items in got.items() if items}


def play(scenario: Scenario, port: int) -> Transcript:
    """Play `scenario` against the relay on 127.0.0.1:`port`."""
    ph = Placeholders()
    ph.port("RELAY", port)
    builder = Builder(scenario, port, ph)
    wire = Wire()
    steps: list[Step] = []
    try:
        for owner in scenario.listeners:
            ph.port(owner, wire.listen(owner))
        for action in scenario.actions:
            if isinstance(action, Connect):
                ph.port(action.conn, wire.connect(action.conn, port).port)
                continue
            steps.append(_send(wire, builder, action))
        marks = {name: len(conn.items) for name, conn in wire.conns.items()}
        wire.pump(lambda: True, REPLY_TIMEOUT, FINAL_QUIET)
        for conn in wire.conns.values():
            conn.flush()
        late = _received_since(wire, marks)
        if steps:
            for name, items in late.items():
                steps[-1].received.setdefault(name, []).extend(items)
        for items in late.values():
            for item in items:
                builder.note(item)
    finally:
        wire.close()
    return Transcript(scenario.name, steps, ph)


def _send(wire: Wire, builder: Builder, send: Send) -> Step:
    conn = wire.conns.get(send.conn)
    if conn is None or conn.closed:
        return Step(send.conn, None, probe=send.probe)
    data = builder.build(send)
    marks = {name: len(c.items) for name, c in wire.conns.items()}

    def arrived() -> bool:
        return all(
            name in wire.conns and len(wire.conns[name].items) - marks.get(name, 0) >= count
            for name, count in send.expect.items()
        )

    wire.send(send.conn, data)
    wire.pump(arrived, REPLY_TIMEOUT, GRACE if send.expect else SILENCE)
    received = _received_since(wire, marks)
    for items in received.values():
        for item in items:
            builder.note(item)
    return Step(send.conn, data.decode("latin-1"), received, send.probe)
