"""The configuration: the settings tree (sections.py), its checks (checks.py) and the TOML loader
(load.py); address.py parses the addresses it names, selfuri.py the URIs that name this relay.

The package exports the tree and load_config: what the rest of msrpd reads.
"""

from .address import ListenAddress
from .cluster import ClusterSettings
from .load import load_config
from .sections import (
    DEFAULT_PORT,
    AuthSettings,
    ControlSettings,
    CoreSettings,
    DialSettings,
    LimitsSettings,
    LogLevel,
    LogSettings,
    MetricsSettings,
    MsrpSettings,
    Settings,
    TlsSettings,
    WebSocketSettings,
    default_run_dir,
)

__all__ = [
    "DEFAULT_PORT",
    "AuthSettings",
    "ClusterSettings",
    "ControlSettings",
    "CoreSettings",
    "DialSettings",
    "LimitsSettings",
    "ListenAddress",
    "LogLevel",
    "LogSettings",
    "MetricsSettings",
    "MsrpSettings",
    "Settings",
    "TlsSettings",
    "WebSocketSettings",
    "default_run_dir",
    "load_config",
]
