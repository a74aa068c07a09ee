"""A worker SIGKILLed with live sessions (issue 12 item 1): nothing of its goes to anyone else.

1. Bob AUTHs; his worker is SIGKILLed and respawned; new plain connections are opened until
   six of them are served by the respawned worker (which hands out connection ids again);
   Alice sends to Bob's dead session: she gets 481 and none of the new connections gets
   anything.
2. Under load (test_crash_load.py): 20 pairs, one of four workers killed every 2 s.
"""

from __future__ import annotations

import os
import signal
from typing import Any, cast

from msrpd.ctlclient import call

from ..msrpclient import MsrpClient
from .relay import PASSWORDS, REALM, Relay, wait_for


def ctl(relay: Relay, method: str) -> Any:
    return call(relay.settings(), method)


def port_of(client: MsrpClient) -> int:
    return int(client.sock.getsockname()[1])


def served_by(relay: Relay) -> dict[int, dict[str, Any]]:
    """Local port of each client connection -> its msrp.conns row (pid, conid, sessions)."""
    rows = ctl(relay, "msrp.conns")
    assert not any("error" in row for row in rows), rows
    return {int(row["peer"].rsplit(":", 1)[1]): row for row in rows}


def rows_for(relay: Relay, clients: list[MsrpClient]) -> dict[int, dict[str, Any]]:
    """served_by(), once every one of `clients` is served somewhere."""
    ports = {port_of(c) for c in clients}

    def listed() -> dict[int, dict[str, Any]] | None:
        rows = served_by(relay)
        return rows if ports <= set(rows) else None

    return cast(dict[int, dict[str, Any]], wait_for(listed, 5, "the connections to be served"))


def running_workers(relay: Relay) -> dict[int, dict[str, Any]]:
    """pid -> core.ps row of every worker that runs (accepts)."""
    rows = ctl(relay, "core.ps")
    return {r["pid"]: r for r in rows if r["role"] != "supervisor" and r["state"] == "running"}


def kill_and_wait_for_successor(relay: Relay, victim: int, children: int) -> int:
    """SIGKILL worker `victim`; the pid of the worker that replaces it, once it runs."""
    slot = running_workers(relay)[victim]["slot"]
    os.kill(victim, signal.SIGKILL)

    def successor() -> int | None:
        workers = running_workers(relay)
        if victim in workers or len(workers) != children:
            return None
        return next((pid for pid, row in workers.items() if row["slot"] == slot), None)

    return int(str(wait_for(successor, 10, "a respawned worker")))


def authed(relay: Relay, user: str) -> MsrpClient:
    client = MsrpClient(relay.port)
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client


def test_dead_session_gets_481_and_its_connection_id_is_not_reused(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=2)
    assert relay.start().returncode == 0, relay.log()
    bob = authed(relay, "bob")
    sessid = (bob.use_path or "").rsplit("/", 1)[1].split(";")[0]
    row = served_by(relay)[port_of(bob)]
    assert sessid in row["sessions"]
    old_conid = row["conid"]
    successor = kill_and_wait_for_successor(relay, row["pid"], 2)

    # Plain connections until six are served by the respawned worker (SO_REUSEPORT and
    # accept balancing decide where each lands); the others stay open too.
    plain: list[MsrpClient] = []
    on_successor = 0
    while on_successor < 6 and len(plain) < 60:
        plain.append(MsrpClient(relay.port))
        owners = rows_for(relay, plain)
        on_successor = sum(owners[port_of(c)]["pid"] == successor for c in plain)
    assert on_successor >= 6

    alice = authed(relay, "alice")
    tid = alice.send_message(bob, b"for bob only")
    answer = alice.recv()
    assert (answer.frame.tid, answer.frame.code) == (tid, 481)
    for client in plain:
        try:
            got = client.recv(timeout=0.3)
        except TimeoutError:
            continue
        raise AssertionError(f"a stranger's connection received {got.frame.buf[:200]!r}")
    # No live connection carries the dead one's id, and its session is gone.
    assert old_conid not in {r["conid"] for r in owners.values()}
    cmap = ctl(relay, "msrp.cmaplist")
    assert sessid not in {c["CONDATA"]["SESSIONID"] for c in cmap["CONLIST"]}
    for client in [alice, bob, *plain]:
        client.close()
