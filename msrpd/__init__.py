"""msrpd: an MSRP relay (RFC 4975, RFC 4976)."""

__version__ = "0.1.0"
