"""The settings a reload (SIGHUP) switches to: the file read again and its routing script
loaded before anything changes, so a bad file or script leaves the old generation serving.

Rules: shared memory and the run_dir live as long as the supervisor: changing them takes a
restart (etc/msrpd.toml says so for each key), so a reload keeps the old values and says so.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..config import Settings, load_config
from ..routing import load_route

__all__ = ["reload_settings"]

logger = logging.getLogger(__name__)


def reload_settings(old: Settings, children: int | None) -> Settings:
    """The new settings of `old`'s file, with what needs a restart kept from `old`.

    Raises:
        ConfigError: the file is invalid.
        RouteLoadError: its routing script does not load.
    """
    new = load_config(old.source, children=children)
    route = load_route(new.msrp.route, new.msrp.event_callback)
    logger.info("reload: route %s", route.describe())
    size, entries = old.msrp.cmap_size, old.msrp.cmap_max_entries
    if (new.msrp.cmap_size, new.msrp.cmap_max_entries) != (size, entries):
        logger.warning("reload: cmap_size and cmap_max_entries need a restart; kept")
    if new.core.run_dir != old.core.run_dir:
        logger.warning("reload: run_dir needs a restart; kept %s", old.core.run_dir)
    msrp = replace(new.msrp, cmap_size=size, cmap_max_entries=entries)
    return replace(new, core=replace(new.core, run_dir=old.core.run_dir), msrp=msrp)
