"""HTTP/2, sans-IO: the server side of one connection (RFC 9113, RFC 7541, RFC 8441).

The package: :mod:`.frames` (types, flags, error codes, the frame head),
:mod:`.fields` (request validation), :mod:`.events`, :mod:`.encoder` (HPACK
for responses), :mod:`.stream` (the stream states of RFC 9113 5.1 as a
transition table, and what is kept per stream), :mod:`.limits`, and
:class:`H2Core`, the connection, built of :mod:`.base` (its state; closing and
resetting streams), :mod:`.sending` (response heads, body, trailers),
:mod:`.control` (SETTINGS, WINDOW_UPDATE, PING, PRIORITY, RST_STREAM, GOAWAY),
:mod:`.receiving` (the frame loop, header blocks, DATA) and
:mod:`.connection` (setup, and what the caller does to a stream or the
connection).

Bytes go in with :meth:`H2Core.receive_data`, heron's own events come out
(:class:`RequestReceived`, :class:`DataReceived`, :class:`StreamEnded`,
:class:`StreamReset`, :class:`StreamWritable`, :class:`ConnectionEnded`), and
the ``send_*`` methods queue frames that :meth:`H2Core.data_to_send` (or
:meth:`H2Core.take_output`, without joining them) hands back.
:meth:`receive_data` never raises: a connection error queues a GOAWAY and
returns :class:`ConnectionEnded`.

The frame layer, stream states and flow control are heron's own: a server
needs a small part of a general HTTP/2 library, and a request costs a few
dozen Python operations here instead of several hundred. Header blocks are
decoded by the ``hpack`` package's Decoder (Huffman, table size updates, its
error checks), except for blocks made only of one-byte indexed fields (the
usual shape of a repeated request once the client's dynamic table is warm),
which are looked up directly. Responses are encoded by :class:`_Encoder`
(static table, a dynamic table for the fields that repeat, no Huffman), and
the encoded block of a repeated header set is reused while the dynamic table
is unchanged.

What this core decides:

* Request validation: pseudo-header fields (known, once each, before the
  regular fields, the right set for the method), lowercase token names,
  values without NUL/CR/LF or surrounding whitespace, no connection-specific
  fields, ``te`` only ``trailers``, a well-formed ``content-length`` matching
  the DATA received. A malformed request is a *stream* error (RST_STREAM
  PROTOCOL_ERROR); the connection keeps working. ``:authority`` becomes the
  ``host`` field, first, as the ASGI spec asks; split ``cookie`` fields are
  joined again (RFC 9113 8.2.3).
* Stream states (RFC 9113 5.1, the table in :mod:`.stream`): frames on idle
  streams, DATA or HEADERS on a stream we promised (reserved (local)), a lower
  stream id than one already opened, HEADERS on a stream that completed are
  connection errors (PROTOCOL_ERROR); DATA or HEADERS after END_STREAM, or
  after the peer's RST_STREAM, are stream errors (STREAM_CLOSED); frames on a
  stream we reset ourselves are ignored (their DATA still counts on the
  connection window).
* HPACK errors are connection errors with COMPRESSION_ERROR.
* Flow control: window credit is returned only when the caller says the
  bytes were consumed (:meth:`H2Core.acknowledge`), in batches (half a window,
  as ``h2`` did); outbound DATA is queued per stream and sent in pieces that
  fit the peer's windows and maximum frame size, as WINDOW_UPDATEs arrive.
* Graceful GOAWAY (:meth:`H2Core.start_shutdown`) keeps the streams below
  the last stream id working; a peer's GOAWAY NO_ERROR does not stop the
  responses in flight either.
* A stream opened and reset within one :meth:`receive_data` call is reported
  only by its :class:`StreamReset` (rapid reset never starts the app).

Denial-of-service guards, all on by default (:class:`H2Limits`):

* ``max_concurrent_streams`` (advertised): a stream beyond it is refused
  with RST_STREAM REFUSED_STREAM, not a connection error, and the streams
  already accepted go on. Refusals start no work, so they are not counted as
  resets; only more than ``10 * max_resets`` of them within ``RESET_WINDOW``
  seconds (a client that keeps opening what it is told it can't) get GOAWAY
  ENHANCE_YOUR_CALM.
* Rapid reset (CVE-2023-44487) and "MadeYouReset" (2025): resets sent by the
  peer and resets the peer provokes from us (malformed requests, frames on
  closed streams, per-stream flow-control errors) are counted together; more
  than ``max_resets`` within ``RESET_WINDOW`` seconds gets GOAWAY
  ENHANCE_YOUR_CALM.
* Frames that carry nothing (CVE-2019-9518 and kin): DATA without payload or
  END_STREAM, PRIORITY (advisory, ignored here), frame types we don't know,
  CONTINUATION without payload that doesn't end the block, and PING or
  SETTINGS acknowledgements we never asked for. More than
  ``max_empty_frames`` within ``RESET_WINDOW`` seconds gets GOAWAY
  ENHANCE_YOUR_CALM.
* Fairness: one :meth:`H2Core.receive_data` call handles at most
  :data:`FRAMES_PER_CALL` frames; the rest waits in the input buffer and
  :attr:`H2Core.input_pending` says so (the caller lets other connections
  run, then calls ``receive_data(b"")``).
* CONTINUATION flood (CVE-2024-27316): the encoded header block collected
  across HEADERS/CONTINUATION frames may not exceed ``max_header_list_size``
  plus one frame, nor span more than 64 frames (GOAWAY ENHANCE_YOUR_CALM).
* HPACK bomb: the *decoded* header list is bounded by
  ``max_header_list_size`` while decoding (GOAWAY ENHANCE_YOUR_CALM).
* SETTINGS/PING floods: replies (ACKs, resets) queued while the transport has
  not flushed its output are counted; beyond ``max_control_frames`` the
  connection gets GOAWAY ENHANCE_YOUR_CALM. (The transport also stops reading
  while its write buffer is full.)
* Zero-window stalls: :attr:`H2Core.blocked` maps each stream whose queued
  data waits for window credit to the time it started waiting; the transport
  resets or closes what waits longer than its write timeout.
"""

from __future__ import annotations

from .connection import H2Core
from .events import ConnectionEnded, DataReceived, RequestReceived, StreamEnded, StreamReset, StreamWritable
from .frames import PREFACE, ErrorCodes
from .limits import FRAMES_PER_CALL, RESET_WINDOW, H2Limits

__all__ = [
    "PREFACE",
    "FRAMES_PER_CALL",
    "RESET_WINDOW",
    "H2Limits",
    "H2Core",
    "RequestReceived",
    "DataReceived",
    "StreamEnded",
    "StreamReset",
    "StreamWritable",
    "ConnectionEnded",
    "ErrorCodes",
]
