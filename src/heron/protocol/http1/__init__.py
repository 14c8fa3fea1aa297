"""HTTP/1.1 server connection, sans-IO (RFC 9110, RFC 9112).

The package: :mod:`.grammar` (the field grammar both halves share),
:mod:`.events`, :mod:`.connection` (:class:`H1Connection`, the reading half)
and :mod:`.writer` (:class:`~.writer.ResponseWriter`, the writing half).

Bytes go in with :meth:`H1Connection.receive_data`; events come out of
:meth:`H1Connection.next_event`; responses are turned into bytes by
:meth:`send_response`, :meth:`send_data` and :meth:`send_end`. Nothing here
touches a socket, an event loop or ASGI.

Parsing is strict, and every rejection carries the status code to answer with:

* request line: ``token SP request-target SP HTTP/x.y``; only 1.0 and 1.1 are
  served (505 otherwise); the target is origin-form, absolute-form, or ``*``
  for OPTIONS; CONNECT is answered 501.
* header fields: token names, no whitespace before the colon, no obs-fold, no
  control characters (other than HTAB) in values.
* **bare LF is rejected** (400) wherever a CRLF is expected, as is a bare CR.
  RFC 9112 lets a recipient accept a lone LF; we don't, because a front proxy
  that reads the same bytes differently is how requests get smuggled.
* framing: Transfer-Encoding must be exactly ``chunked`` (another final coding
  is 400, an unsupported coding 501), never with Content-Length and never on
  HTTP/1.0; Content-Length must be one decimal number (duplicates and lists
  are 400); chunk sizes are 1-16 hex digits, extensions and trailers are
  bounded and validated, and each chunk must end in exactly CRLF.

Sizes are bounded by :class:`H1Limits`: a request line past the limit is 414,
too many or too large header fields 431.
"""

from __future__ import annotations

from .connection import H1Connection, H1Limits
from .events import NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage, Event, Request
from .grammar import CHUNKS_PER_EVENT, is_field_name, is_field_value
from .writer import simple_response, status_line

__all__ = [
    "H1Connection",
    "H1Limits",
    "Request",
    "Data",
    "EndOfMessage",
    "ConnectionClosed",
    "NEED_DATA",
    "PAUSED",
    "Event",
    "CHUNKS_PER_EVENT",
    "status_line",
    "simple_response",
    "is_field_name",
    "is_field_value",
]
