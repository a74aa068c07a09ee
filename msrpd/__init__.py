"""msrpd: an MSRP relay (RFC 4975, RFC 4976)."""

from .hotpath import hot_build, hot_path, install

__all__ = ["__version__", "hot_build", "hot_path"]

__version__ = "0.1.0"

# MSRPD_PURE=1: every msrpd module below loads from its .py source (hotpath.py).
install()
