"""One exception tree for the protocol layer, carrying the MSRP status to answer with.

Rules: code inside msrpd/protocol raises LocalProtocolError; the reader's public entry point
re-raises it as RemoteProtocolError (the peer sent it), in the manner of h11. The worker answers
a RemoteProtocolError with `status` when `tid` is known and closes the connection either way:
once framing is lost nothing later on the stream can be trusted (RFC 4975 §9, our §8 policy).
"""

from __future__ import annotations

from .status import Status

__all__ = ["LocalProtocolError", "MsrpProtocolError", "RemoteProtocolError"]


class MsrpProtocolError(Exception):
    """Base class: a protocol rule was broken.

    Attributes:
        status: the MSRP status a response should carry (400 unless said otherwise).
        tid: the transaction id of the frame at fault, when it could be read, else None.
        head: what was buffered of that frame (capped), so a reply can be addressed.
    """

    def __init__(
        self,
        msg: str,
        status: Status = Status.UNINTELLIGIBLE,
        tid: bytes | None = None,
        head: bytes = b"",
    ) -> None:
        if type(self) is MsrpProtocolError:
            raise TypeError("raise LocalProtocolError or RemoteProtocolError")
        super().__init__(msg)
        self.status = status
        self.tid = tid
        self.head = head

    @property
    def message(self) -> str:
        return str(self.args[0])


class LocalProtocolError(MsrpProtocolError):
    """Raised inside the protocol package; also what a caller gets for misusing a writer."""

    def as_remote(self, tid: bytes | None = None, head: bytes = b"") -> RemoteProtocolError:
        return RemoteProtocolError(self.message, self.status, self.tid or tid, head)


class RemoteProtocolError(MsrpProtocolError):
    """The peer sent something this relay cannot accept."""
