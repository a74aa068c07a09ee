"""msrpd side by side with a live Kamailio 5.6.3, scenario by scenario.

For each golden scenario (tests/fixtures/golden/cmap, 39 files) and each variant
(variants.py) the plan is played against Kamailio and against msrpd, and both transcripts are
normalised. Checked:
- live Kamailio still gives what its golden file recorded, including dying where it died
  (test_kamailio_matches_golden): the oracle itself is trusted, not assumed;
- msrpd gives exactly Kamailio's transcript, except where expected_differences.py pins msrpd's
  own bytes (test_msrpd_matches_kamailio); no msrpd worker dies in any scenario;
- msrpd against the recording too (test_msrpd_matches_recording), which needs no Kamailio:
  where Kamailio cannot be installed, parity with the recorded behaviour is still checked.

Every scenario is played side by side; none needs a real-time wait beyond the driver's quiet
windows (driver.py), which is how "silence" is observed on both relays alike. The two silent
golden scenarios (malformed_bad_end_line, malformed_end_line_no_flag) also have a variant that
sends the frame's own end-line afterwards, so what the silence means is asserted by a reply,
not by a timeout.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .compare import ELIDED, expected_msrpd, golden_steps, mask_stack_garbage, problems
from .driver import Step, play
from .expected_differences import DIFFERENCES
from .oracle import Kamailio
from .relays import MsrpdRelay
from .scenarios import Scenario, load, names
from .variants import VARIANTS, load_variant

GOLDEN = names()
ALL = GOLDEN + sorted(VARIANTS)

KamailioRun = tuple[list[Step], bool]  # steps, alive afterwards
MsrpdRun = tuple[list[Step], bool]  # steps, every worker of before still there afterwards


def _scenario(name: str) -> Scenario:
    return load_variant(name) if name in VARIANTS else load(name)


@pytest.fixture(scope="module")
def kamailio_run(kamailio: Kamailio) -> Callable[[str], KamailioRun]:
    cache: dict[str, KamailioRun] = {}

    def run(name: str) -> KamailioRun:
        if name not in cache:
            scenario = _scenario(name)
            kamailio.ready(scenario.unknown_sessions())
            steps = play(scenario, kamailio.port).normalised()
            cache[name] = (steps, kamailio.alive_after(scenario.data["relay_alive_after"]))
        return cache[name]

    return run


@pytest.fixture(scope="module")
def msrpd_run(msrpd: MsrpdRelay) -> Callable[[str], MsrpdRun]:
    cache: dict[str, MsrpdRun] = {}

    def run(name: str) -> MsrpdRun:
        if name not in cache:
            before = msrpd.worker_pids()
            steps = play(_scenario(name), msrpd.port).normalised()
            cache[name] = (steps, msrpd.worker_pids() == before)
        return cache[name]

    return run


def _recorded(scenario: Scenario) -> list[Step]:
    """The golden transcript, plus the probes the driver adds (not played: closed)."""
    added = [Step(s.conn, None, {}, True) for s in scenario.sends if s.probe]
    return golden_steps(scenario) + added


def _check_msrpd(name: str, kamailio: list[Step], msrpd: MsrpdRun, against: str) -> None:
    steps, workers_kept = msrpd
    difference = DIFFERENCES.get(name)
    found = problems(expected_msrpd(kamailio, difference), steps)
    why = f" (deliberate difference: {difference.msrpd})" if difference else ""
    assert not found, f"msrpd differs from {against} in {name}{why}:\n" + "\n".join(found)
    assert workers_kept, f"an msrpd worker died during {name}"


def test_every_golden_scenario_is_covered() -> None:
    assert len(GOLDEN) == 39
    assert set(DIFFERENCES) <= set(ALL), set(DIFFERENCES) - set(ALL)


@pytest.mark.parametrize("name", GOLDEN)
def test_kamailio_matches_golden(name: str, kamailio_run: Callable[[str], KamailioRun]) -> None:
    scenario = load(name)
    live, alive = kamailio_run(name)
    recorded = _recorded(scenario)
    live = [Step(s.conn, s.sent, s.received, s.probe) for s in live]
    for want, got in zip(recorded, live, strict=False):
        if want.sent == ELIDED:
            got.sent = ELIDED
    found = problems(mask_stack_garbage(recorded), mask_stack_garbage(live))
    if name == "first_line_no_method" and found and alive:
        # Kamailio 5.6.3 reads freed memory here (reference §0.5): on a busy machine the
        # worker sometimes hangs instead of crashing. Either is Kamailio's bug, not a
        # change in it; msrpd's side of this scenario is checked exactly elsewhere.
        live_items = [item for step in live for items in step.received.values() for item in items]
        assert "<EOF>" not in live_items, found
        return
    assert not found, f"live Kamailio left its recording in {name}:\n" + "\n".join(found)
    assert alive == scenario.data["relay_alive_after"], "Kamailio alive after the scenario?"


@pytest.mark.parametrize("name", ALL)
def test_msrpd_matches_kamailio(
    name: str,
    kamailio_run: Callable[[str], KamailioRun],
    msrpd_run: Callable[[str], MsrpdRun],
) -> None:
    _check_msrpd(name, kamailio_run(name)[0], msrpd_run(name), "live Kamailio")


@pytest.mark.parametrize("name", GOLDEN)
def test_msrpd_matches_recording(name: str, msrpd_run: Callable[[str], MsrpdRun]) -> None:
    _check_msrpd(name, _recorded(load(name)), msrpd_run(name), "the golden recording")
