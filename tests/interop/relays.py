"""msrpd as the system under test: the real CLI, the cmap route, Kamailio's example settings.

tests/integration/relay.py's Relay starts and stops msrpd (daemon mode, its own run_dir and
free port); here its user store and realm are replaced by the oracle's: realm "myrealm", and
every user the golden files authenticate with the password "xyz123". `use_path_addr` stays
unset, so Use-Path names the listen address, as Kamailio's cfg does with 127.0.0.1:PORT.
"""

from __future__ import annotations

from msrpd.users.sqlite import SqliteUsers
from tests.integration.relay import Relay

from .scenarios import PASSWORD, REALM, USERS

__all__ = ["MsrpdRelay"]


class MsrpdRelay(Relay):
    def __init__(self) -> None:
        super().__init__(children=2, core={"log_level": "info"})
        users = self.run_dir / "interop-users.sqlite"
        store = SqliteUsers(users)
        for name in USERS:
            store.add(name, REALM, PASSWORD)
        store.close()
        self.sections["auth"] = {"realm": REALM, "users": str(users)}
        self.write_config()
