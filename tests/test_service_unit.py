"""etc/msrpd.service: the unit reloads through the CLI and waits longer than drain_timeout."""

from __future__ import annotations

import configparser
from pathlib import Path

from msrpd.config import load_config

UNIT = Path(__file__).parents[1] / "etc" / "msrpd.service"


def test_unit_reloads_with_the_cli_and_outwaits_the_drain() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    service = unit["Service"]
    assert service["ExecReload"].split()[1:3] == ["reload", "-c"]
    assert "start --foreground" in service["ExecStart"]
    assert service["KillSignal"] == "SIGTERM"
    drain = load_config(Path(__file__).parents[1] / "etc" / "msrpd.toml").core.drain_timeout
    assert float(service["TimeoutStopSec"]) > drain
