"""Cleartext HTTP/2 (h2c) reached from an HTTP/1.1 connection.

Two ways in, both starting on :class:`~heron.transport.http1.H1Protocol`:

* **prior knowledge**: the connection opens with the HTTP/2 client preface;
  the HTTP/1.1 protocol recognises it and hands the connection over;
* **``Upgrade: h2c``** (RFC 7540 3.2; RFC 9113 drops it, clients still send
  it): a request that validly asks for it (:func:`upgrade_settings`) is
  answered ``101`` once its body is read, and stream 1 of the new HTTP/2
  connection serves it. While the body is read an :class:`UpgradeBody` stands
  in for the ASGI cycle; a body over :data:`MAX_UPGRADE_BODY` makes the request
  an ordinary HTTP/1.1 one (the upgrade is optional for the server, RFC 9110 7.8).

The HTTP/1.1 protocol is driven through :class:`UpgradeOwner` only; HTTP/2
never calls back into it.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Protocol

from ..asgi.budget import BodyBuffer, ReadBudget
from ..asgi.http import BODY_HIGH_WATER

if TYPE_CHECKING:
    from ..protocol.http1 import Request

__all__ = ["PREFACE", "MAX_UPGRADE_BODY", "UpgradeOwner", "UpgradeBody", "upgrade_settings"]

#: The HTTP/2 client preface: h2c with prior knowledge on the HTTP/1.1 port.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Request body an ``Upgrade: h2c`` request may carry (read before the 101,
#: charged to the connection's budget); a bigger one is served over HTTP/1.1.
MAX_UPGRADE_BODY = BODY_HIGH_WATER


class UpgradeOwner(Protocol):
    """What an :class:`UpgradeBody` needs of the HTTP/1.1 connection it belongs to."""

    @property
    def budget(self) -> ReadBudget: ...
    def wait_for_body(self, waiting: bool) -> None:
        """Start (or stop) the request-body idle clock."""

    def refuse(self, status: int) -> None:
        """Answer ``status`` and close."""

    def switch_to_h2(self, request: Request, settings: bytes, body: bytes) -> None:
        """The body is complete: answer 101 and serve ``request`` as stream 1."""

    def serve_over_http1(self, request: Request, body: bytes) -> None:
        """The body is too big to hold: serve ``request`` as an HTTP/1.1 request."""


def upgrade_settings(request: Request) -> bytes | None:
    """The HTTP2-Settings value when ``request`` validly asks for ``Upgrade: h2c``
    (RFC 7540 3.2: exactly one HTTP2-Settings field, named in Connection), padded
    for base64 decoding; None otherwise."""
    if request.upgrade is None or b"h2c" not in [t.strip() for t in request.upgrade.split(b",")]:
        return None
    values = [value for name, value in request.headers if name == b"http2-settings"]
    connection = b",".join(value for name, value in request.headers if name == b"connection").lower()
    if len(values) != 1 or b"http2-settings" not in [t.strip() for t in connection.split(b",")]:
        return None
    padded = values[0] + b"=" * (-len(values[0]) % 4)
    try:
        base64.urlsafe_b64decode(padded)
    except ValueError:
        return None
    return padded


class UpgradeBody:
    """Stands in for the ASGI cycle while the body of an ``Upgrade: h2c`` request is read.

    The HTTP/1.1 protocol feeds it like a cycle (``feed_body``, ``end_body``,
    ``refuse_body``, ``disconnect``, ``client_eof``); the body waits in a
    :class:`~heron.asgi.budget.BodyBuffer` charged to the connection's budget.
    """

    __slots__ = ("owner", "request", "settings", "body", "task", "status", "bytes_sent", "response_complete")

    def __init__(self, owner: UpgradeOwner, request: Request, settings: bytes) -> None:
        self.owner = owner
        self.request = request
        self.settings = settings
        self.body = BodyBuffer(owner.budget)
        # what the HTTP/1.1 protocol reads of a cycle: no app runs yet
        self.task = None
        self.status = 0
        self.bytes_sent = 0
        self.response_complete = False

    def feed_body(self, data: bytes) -> None:
        body = self.body
        body.append(data)
        if body.size > MAX_UPGRADE_BODY:
            self.owner.serve_over_http1(self.request, body.take())
        else:
            self.owner.wait_for_body(True)  # restarts the idle clock

    def end_body(self) -> None:
        self.owner.switch_to_h2(self.request, self.settings, self.body.take())

    def refuse_body(self, status: int) -> None:
        """The body stopped coming (408): answer and close, as for a request."""
        self.body.clear()
        self.owner.refuse(status)

    def disconnect(self) -> None:
        self.body.clear()

    def client_eof(self) -> None:
        pass
