"""msrp.<key> equals pv(key) for every one of the 21 keys, fast-path properties included."""

from __future__ import annotations

import pytest

from msrpd.protocol import MSRP_PV_KEYS
from msrpd.routing import Msrp

from .fakeenv import Client, FakeEnv, parse, request

ALICE = Client("alice", 40001, conid=0x1001)
FRAMES = [
    request("SEND", "a1", "msrp://127.0.0.1:2855/s;tcp msrp://b:2/x;tcp", ALICE.uri),
    request("SEND", "a2", "msrp://127.0.0.1:2855/s;tcp", ALICE.uri),
    request("REPORT", "a3", "msrp://r:1/s;tcp  msrp://b:2/x;tcp   msrp://c:3/y;tcp", ALICE.uri),
    b"MSRP a4 200 OK\r\nTo-Path: msrp://r:1/s;tcp\r\nFrom-Path: msrp://b:2/x;tcp\r\n-------a4$\r\n",
]


@pytest.mark.parametrize("raw", FRAMES)
def test_attributes_equal_pv(raw: bytes, env: FakeEnv) -> None:
    msrp = Msrp(parse(raw), ALICE.conn, env)
    for key in MSRP_PV_KEYS:
        assert getattr(msrp, key) == msrp.pv(key), key
