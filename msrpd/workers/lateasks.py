"""The values a route may have to wait for (routing/waits.py), asked for a ConnEnv: a user's
HA1 from a remote store, the node holding a token. Asked after the route has answered or
relayed (`acted`), such a value cannot be waited for: routing the frame again would answer or
relay it twice, so the asker gets what it would without the value, and the lookup goes on
and fills the cache for the next frame."""

from __future__ import annotations

import logging

from ..cluster.shares import Asker
from ..protocol import MsrpUri
from ..routing.waits import NotYet, Unavailable
from ..users import Ha1Source
from .ports import NodeLookup

__all__ = ["ha1_of", "node_of"]

logger = logging.getLogger("msrpd.route")


def ha1_of(
    users: Ha1Source | None, username: str, realm: str, acted: bool, peer: str
) -> str | None:
    """users.get_ha1 (None without a user store); raises NotYet (not `acted`) or Unavailable."""
    if users is None:
        return None
    try:
        return users.get_ha1(username, realm)
    except NotYet:
        if not acted:
            raise
        logger.error("route on %s asked for a user after it answered or relayed: unavailable", peer)
        raise Unavailable("user store") from None


def node_of(finder: NodeLookup, sessid: str, asker: Asker, acted: bool) -> MsrpUri | None:
    """finder.where; raises NotYet (not `acted`: else this frame gets 481)."""
    try:
        return finder.where(sessid, asker)
    except NotYet:
        if not acted:
            raise
        finder.cannot_wait(sessid)
        return None
