"""ScriptHTable: $sht / $shtex semantics and Kamailio's return codes over the shared table."""

from __future__ import annotations

import pytest

from msrpd.routing.sht import ScriptHTable
from msrpd.shm import HT_VALUE_MAX, HTable

NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sht(htable: HTable, clock: Clock) -> ScriptHTable:
    return ScriptHTable(htable, clock)


def test_get_set_delete_with_kamailio_codes(sht: ScriptHTable) -> None:
    assert sht.get("msrp", "k") is None  # $null
    assert sht.set("msrp", "k", "v") == 1
    assert sht.get("msrp", "k") == "v"
    assert sht.set("msrp", "n", 5) == 1
    assert sht.get("msrp", "n") == 5
    assert sht.set("msrp", "k", "x" * (HT_VALUE_MAX + 1)) == -1
    assert sht.get("msrp", "k") == "v"
    assert sht.delete("msrp", "k") == 1
    assert sht.delete("msrp", "k") == -1
    assert sht.set("msrp", "n", None) == 1  # $sht(t=>k) = $null deletes
    assert sht.get("msrp", "n") is None
    assert sht.set("msrp", "n", None) == 1  # deleting nothing is not an error
    assert sht.tables == {"msrp": 3600.0, "_nonce": 300.0}
    with pytest.raises(KeyError, match="nope"):
        sht.get("nope", "k")


def test_expiry_follows_the_clock(sht: ScriptHTable, clock: Clock) -> None:
    assert sht.set("msrp", "k", "v") == 1
    assert sht.ttl("msrp", "k") == 3600  # the table's autoexpire
    assert sht.expire("msrp", "k", 1805) == 1
    clock.now += 5
    assert sht.ttl("msrp", "k") == 1800
    clock.now += 1800
    assert sht.get("msrp", "k") == "v"  # expiry == now: still there
    clock.now += 1
    assert sht.get("msrp", "k") is None
    assert sht.expire("msrp", "k", 60) == -1  # gone: nothing to extend
    assert sht.ttl("msrp", "k") == 0
    assert sht.expire("msrp", "missing", 60) == -1
    assert sht.set("msrp", "forever", 1) == 1
    assert sht.expire("msrp", "forever", 0) == 1
    assert sht.ttl("msrp", "forever") == 0  # never expires
    clock.now += 10**9
    assert sht.get("msrp", "forever") == 1


def test_the_mapping_view(sht: ScriptHTable) -> None:
    ht = sht.sht("msrp")
    assert ht["k"] is None and "k" not in ht
    ht["k"] = "v"
    assert ht["k"] == "v" and "k" in ht and 5 not in ht
    assert ht.get("k") == "v" and ht.get("x", "dflt") == "dflt"
    assert ht.expire("k", 10) == 1 and ht.ttl("k") == 10
    del ht["k"]
    del ht["k"]  # like assigning $null: no KeyError
    assert ht["k"] is None
    ht["n"] = None
    assert "n" not in ht
    with pytest.raises(ValueError, match="not stored"):
        ht["k"] = "x" * (HT_VALUE_MAX + 1)
    with pytest.raises(KeyError, match="nope"):
        sht.sht("nope")
