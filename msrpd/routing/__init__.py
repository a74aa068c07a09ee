"""Routing scripts with Kamailio's msrp module API (DESIGN §6)."""

from .api import Msrp
from .env import Destination, RouteEnv, RoutePolicy, SendFlags
from .script import DEFAULT_ROUTE, RouteLoadError, RouteScript, describe_route, load_route

__all__ = [
    "DEFAULT_ROUTE",
    "Destination",
    "Msrp",
    "RouteEnv",
    "RouteLoadError",
    "RoutePolicy",
    "RouteScript",
    "SendFlags",
    "describe_route",
    "load_route",
]
