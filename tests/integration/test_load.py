"""End to end with 4 workers: 50 Alice/Bob pairs, 1,000 messages each, through the relay.

Every message must arrive exactly once and in order per pair, wherever the kernel put each
connection (most pairs start over two workers, so frames cross the handoff link, and some
move together in the middle of their flood, fencing the other two workers), and the relay's
counters must add up to exactly the traffic sent.
"""

from __future__ import annotations

import asyncio
import time

from msrpd.protocol import Frame, FrameReader
from msrpd.protocol.writer import build_request
from msrpd.rundir import layout_for

from ..msrpclient import MsrpClient
from .relay import PASSWORDS, REALM, Relay, wait_for

PAIRS = 50
MESSAGES = 1000
WINDOW = 32


async def _frames(reader: asyncio.StreamReader, parser: FrameReader, count: int) -> list[Frame]:
    frames: list[Frame] = []
    while len(frames) < count:
        data = await asyncio.wait_for(reader.read(1 << 16), 30)
        assert data, "relay closed a connection"
        parser.receive_data(data)
        frames.extend(e for e in parser.events() if isinstance(e, Frame))
    return frames


async def _pair(port: int, alice: MsrpClient, bob: MsrpClient, n: int) -> None:
    """Alice sends `n` SENDs with a window; Bob must receive them in order."""
    a_r, a_w = await asyncio.open_connection(sock=alice.sock.dup())
    b_r, b_w = await asyncio.open_connection(sock=bob.sock.dup())
    alice.sock.close()
    bob.sock.close()
    to = [bob.use_path or "", bob.uri]
    bodies = [b"pair %d message %d" % (n, i) for i in range(MESSAGES)]
    receiving = asyncio.create_task(_frames(b_r, FrameReader(), MESSAGES))
    acks = FrameReader()
    acked = 0
    for i, body in enumerate(bodies):
        headers = [("Message-ID", f"m{i}"), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
        a_w.write(build_request(b"a%d" % i, b"SEND", to, [alice.uri], headers, body))
        if i - acked >= WINDOW:
            acked += len(await _frames(a_r, acks, 1))
    await a_w.drain()
    replies = await _frames(a_r, acks, MESSAGES - acked)
    assert all(r.code == 200 for r in replies)
    got = await receiving
    assert [bytes(f.body or b"") for f in got] == bodies
    assert [f.tid for f in got] == [b"a%d" % i for i in range(MESSAGES)]
    for w in (a_w, b_w):
        w.close()


def test_fifty_pairs_thousand_messages_each(make_relay) -> None:
    relay: Relay = make_relay(children=4)
    assert relay.start().returncode == 0
    clients = []
    for _ in range(PAIRS):
        alice, bob = MsrpClient(relay.port), MsrpClient(relay.port)
        for client, user in ((alice, "alice"), (bob, "bob")):
            assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
        clients.append((alice, bob))

    async def main() -> None:
        await asyncio.gather(*(_pair(relay.port, a, b, n) for n, (a, b) in enumerate(clients)))

    started = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - started
    print(f"{PAIRS * MESSAGES} messages relayed in {elapsed:.1f} s")

    shm = layout_for(relay.settings()).attach_all()
    try:
        sends = PAIRS * MESSAGES
        auths = PAIRS * 2 * 2  # a 401 round, then the 200 round, per client

        def settled() -> bool:
            total = shm.stats.total()
            return total["frames_in_send"] == sends and total["conns_open"] == 0

        wait_for(settled, 10, "the workers to publish their counters")
        total = shm.stats.total()
        assert total["frames_in_auth"] == auths
        assert total["frames_out"] == sends
        assert total["replies_2xx"] == sends + PAIRS * 2
        assert total["replies_4xx"] == PAIRS * 2
        assert total["relay_fail"] == 0 and total["handoff_gone"] == 0
        assert total["conns_total"] == PAIRS * 2
        assert (total["auth_ok"], total["auth_fail"]) == (PAIRS * 2, 0)
        assert total["handoffs_out"] == total["handoffs_in"] > 0
        # Split pairs moved together (colocate.py); with 4 workers each move fences 2 others.
        print(f"connections moved: {total['conns_moved']}")
        assert total["conns_moved"] > 0
    finally:
        shm.close()
