"""What heron asks of aioquic beyond its public API, kept in one place.

aioquic (the optional ``http3`` extra) is imported only by the HTTP/3 modules,
and they are imported only when ``--quic-bind`` is set.

Six things here reach into aioquic's internals, on purpose and nowhere else:

* **Flow control that follows the app.** aioquic raises a receive window
  (MAX_STREAM_DATA, MAX_DATA) whenever the peer has used half of it, however
  much of what arrived is still unread; a client could then send a body
  without limit to an app that does not read it. :class:`FlowControlledQuic`
  stops that growth (its overrides hide what was received from aioquic's
  doubling rule) and :func:`grant` moves each limit to "what the peer has
  sent, less what waits unread, plus one window", as the app reads, the way
  the HTTP/2 core returns credit (heron.protocol.http2).
* **Concurrent streams.** aioquic opens 128 bidirectional streams to a peer
  and raises the limit by one as each finishes; :func:`set_max_streams`
  starts it at ``--http2-max-concurrent-streams`` instead.
* **SETTINGS and GOAWAY.** :class:`ServerH3` advertises
  SETTINGS_MAX_FIELD_SECTION_SIZE, and SETTINGS_ENABLE_CONNECT_PROTOCOL
  (WebSocket over HTTP/3, RFC 9220) only when WebSocket is on; and
  :func:`send_goaway` writes a GOAWAY frame on the control stream (aioquic
  has no call for it).
* **Server push and the TLS state.** :func:`push_possible` (the client sent
  MAX_PUSH_ID and a push id is left), :func:`push_stream_available` (the
  client's limit on our unidirectional streams lets a push stream open now)
  and :meth:`ServerH3.promise_push` (the push id a promise took);
  :func:`negotiated_cipher_suite` reads the handshake's cipher suite for the
  ASGI ``tls`` extension.
* **CANCEL_PUSH** (RFC 9114 7.2.3), which aioquic skips unread:
  :class:`ServerH3` reads the client's control stream beside aioquic
  (:class:`ControlScan`, a few bytes of state) and reports each CANCEL_PUSH of
  a push id it promised as :class:`PushCancelled`; one of a push id never
  promised (or beyond MAX_PUSH_ID) closes the connection with H3_ID_ERROR.
* **A first Initial that decrypted.** :func:`initial_decrypts` (before a
  connection is made) and :func:`decrypted_any` (after aioquic read it) tell
  a real client's first datagram from garbage, so garbage costs no connection.

``tests/integration/test_http3*.py`` check each of these through a real client.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import (
    H3_ALPN,
    FrameError,
    FrameType,
    H3Connection,
    IdError,
    ProtocolError,
    Setting,
    StreamType,
    encode_frame,
)
from aioquic.h3.events import H3Event
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.events import QuicEvent, StreamDataReceived
from cryptography.hazmat.primitives.serialization import Encoding

if TYPE_CHECKING:
    from aioquic.quic.packet import QuicHeader
    from aioquic.quic.packet_builder import QuicPacketBuilder
    from aioquic.quic.recovery import QuicPacketSpace
    from aioquic.quic.stream import QuicStream

    from ..config import Config

__all__ = [
    "H3_ALPN",
    "ControlScan",
    "FlowControlledQuic",
    "PushCancelled",
    "check_supported",
    "decrypted_any",
    "initial_decrypts",
    "negotiated_cipher_suite",
    "push_possible",
    "push_stream_available",
    "server_certificate",
    "tagged",
    "ServerH3",
    "grant",
    "grant_connection",
    "quic_configuration",
    "responses_delivered",
    "send_goaway",
    "set_max_streams",
    "unsent",
]


def quic_configuration(config: Config) -> QuicConfiguration:
    """The server side of every QUIC connection: ALPN h3, the TLS certificate
    (TLS 1.3 always), the initial windows and the idle timeout. Raises
    OSError / ValueError when the certificate or key can't be loaded."""
    window = config.http2_initial_window_size
    quic = QuicConfiguration(
        alpn_protocols=H3_ALPN,
        is_client=False,
        idle_timeout=config.quic_idle_timeout,
        max_data=4 * window,
        max_stream_data=window,
    )
    check_supported()
    password = config.ssl_keyfile_password.encode() if config.ssl_keyfile_password else None
    assert config.ssl_certfile is not None  # (checked by Config.validate with --quic-bind)
    try:
        quic.load_cert_chain(config.ssl_certfile, config.ssl_keyfile or None, password)
    except (ssl.SSLError, TypeError) as exc:  # (cryptography raises TypeError for a missing password)
        raise ValueError(str(exc)) from None
    return quic


def tagged(tag: bytes, cid: bytes) -> bytes:
    """Connection id ``cid`` with its first bytes replaced by a worker's ``tag``
    (the same length: the rest stays random)."""
    return tag + cid[len(tag) :]


class FlowControlledQuic(QuicConnection):
    """A QuicConnection whose receive windows (the connection's, and its request
    streams') move only through :func:`grant`: the client's control and QPACK
    streams, which aioquic reads as they arrive, keep aioquic's own rule.

    aioquic's own rule is hidden from it while it writes its limits: before 1.9
    it doubles a limit once the peer used half of it (``used``, the stream's
    ``highest_offset``); from 1.9 it moves the limit to one (auto-tuned)
    window past what QUIC delivered, when less than half a window is left
    (``_local_max_data_window``, the stream's ``max_stream_data_local_window``).

    ``cid_tag``: the first bytes of every connection id it issues (a worker's
    tag, which steers the client's datagrams to it: :mod:`heron.quic_steering`).
    """

    def __init__(self, *, cid_tag: bytes = b"", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cid_tag = cid_tag
        if cid_tag:
            first = self._host_cids[0]
            first.cid = tagged(cid_tag, first.cid)
            self.host_cid = self._local_initial_source_connection_id = first.cid

    def _replenish_connection_ids(self) -> None:
        super()._replenish_connection_ids()
        tag = self._cid_tag
        if tag:
            for connection_id in self._host_cids:
                if not connection_id.was_sent:  # (new: not announced to the client yet)
                    connection_id.cid = tagged(tag, connection_id.cid)

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> None:
        limit = self._local_max_data
        used = limit.used
        window = getattr(self, "_local_max_data_window", None)
        limit.used = 0
        if window is not None:
            self._local_max_data_window = 0
        try:
            super()._write_connection_limits(builder, space)
        finally:
            limit.used = used
            if window is not None:
                self._local_max_data_window = window

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream) -> None:
        if (
            stream.stream_id is None or stream.stream_id % 4
        ):  # not a request stream: control and QPACK streams keep aioquic's rule
            super()._write_stream_limits(builder, space, stream)
            return
        if stream.max_stream_data_local_sent == stream.max_stream_data_local:
            # nothing to send: with highest_offset hidden (below) aioquic's rule would not
            # raise the window either. (Asked per stream for every packet aioquic starts.)
            return
        receiver = stream.receiver
        highest = receiver.highest_offset
        window = getattr(stream, "max_stream_data_local_window", None)
        receiver.highest_offset = 0
        if window is not None:  # (setattr: the attribute exists from aioquic 1.9 on)
            setattr(stream, "max_stream_data_local_window", 0)  # noqa: B010
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            receiver.highest_offset = highest
            if window is not None:
                setattr(stream, "max_stream_data_local_window", window)  # noqa: B010


def check_supported() -> None:
    """Raise ValueError when this aioquic lacks the internals heron adapts (above)."""
    probe = QuicConnection(configuration=QuicConfiguration(is_client=True))
    missing = [
        name
        for name in (
            "_local_max_data",
            "_local_max_streams_bidi",
            "_remote_max_streams_uni",
            "_state",
            "_streams",
            "_write_connection_limits",
        )
        if not hasattr(probe, name)
    ]
    h3 = H3Connection(probe)
    missing.extend(
        f"H3Connection.{name}"
        for name in ("_is_done", "_max_push_id", "_next_push_id", "_peer_control_stream_id", "_stream")
        if not hasattr(h3, name)
    )
    if not hasattr(FlowControlledQuic, "_write_stream_limits") or missing:
        raise ValueError(f"this aioquic version is not supported by heron (missing {', '.join(missing)})")


def initial_decrypts(data: bytes, header: QuicHeader, payload_offset: int) -> bool:
    """The client Initial that starts ``data`` (its ``header`` pulled, ``payload_offset``
    past it) decrypts with the Initial keys of its connection id (RFC 9001 5.2).
    About a sixth of what a connection object costs: garbage is dropped for less."""
    if header.version is None:
        return False
    crypto = CryptoPair()
    crypto.setup_initial(header.destination_cid, is_client=False, version=header.version)
    try:
        crypto.decrypt_packet(data[: header.packet_length], payload_offset, 0)
    except (ValueError, IndexError):  # (aioquic's CryptoError is a ValueError)
        return False
    return True


def decrypted_any(quic: QuicConnection) -> bool:
    """The server side has decrypted a packet of the peer (its first Initial was not
    garbage: aioquic drops a packet it can't decrypt and keeps waiting)."""
    return bool(quic._state is not QuicConnectionState.FIRSTFLIGHT)


def grant(quic: QuicConnection, stream_id: int, unread: int, window: int) -> bool:
    """Let the peer send up to ``window`` bytes beyond what it sent on
    ``stream_id``, less the ``unread`` body bytes the app has not taken;
    raised in steps of half a window. True when the limit moved."""
    stream = quic._streams.get(stream_id)
    if stream is None:
        return False
    target = stream.receiver.highest_offset - unread + window
    if target - stream.max_stream_data_local >= window // 2:
        stream.max_stream_data_local = target
        return True
    return False


def grant_connection(quic: QuicConnection, unread: int, window: int) -> bool:
    """:func:`grant` for the whole connection (MAX_DATA)."""
    limit = quic._local_max_data
    target = limit.used - unread + window
    if target - limit.value >= window // 2:
        limit.value = target
        return True
    return False


def set_max_streams(quic: QuicConnection, count: int) -> None:
    """Request streams the peer may have open at once (before the handshake)."""
    limit = quic._local_max_streams_bidi
    limit.value = limit.sent = count


def unsent(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written to ``stream_id`` that the peer has not acknowledged yet."""
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    return len(stream.sender._buffer)


def responses_delivered(quic: QuicConnection) -> bool:
    """Every request (or push) stream that we answered (or reset) has it acknowledged: a
    CONNECTION_CLOSE now loses nothing (aioquic drops unsent stream data on close)."""
    for stream_id, stream in quic._streams.items():
        sender = stream.sender
        answered = sender._buffer_fin is not None or sender._reset_error_code is not None
        if stream_id % 4 in (0, 3) and answered and not sender.is_finished:  # (3: our push streams)
            return False
    return True


def server_certificate(configuration: QuicConfiguration) -> str | None:
    """The configured certificate in PEM, as the TLS listener reports it (``tls.tls_extension``)."""
    certificate = configuration.certificate
    if certificate is None:
        return None
    return ssl.DER_cert_to_PEM_cert(certificate.public_bytes(Encoding.DER))


def negotiated_cipher_suite(quic: QuicConnection) -> int | None:
    """The TLS 1.3 cipher suite of the handshake (None before the ServerHello)."""
    schedule = quic.tls.key_schedule
    return int(schedule.cipher_suite) if schedule is not None else None


def push_possible(h3: H3Connection) -> bool:
    """The client allows a further push (RFC 9114 4.6: it sent MAX_PUSH_ID, and an id is left)."""
    max_push_id: int | None = h3._max_push_id
    return max_push_id is not None and h3._next_push_id <= max_push_id


def push_stream_available(quic: QuicConnection) -> bool:
    """A unidirectional stream of ours can open now within the client's MAX_STREAMS
    (aioquic would hold one beyond it, blocked, until the client raised the limit)."""
    return bool(quic.get_next_available_stream_id(is_unidirectional=True) // 4 < quic._remote_max_streams_uni)


@dataclass
class PushCancelled(H3Event):
    """The client sent CANCEL_PUSH for ``push_id``, a push we promised (RFC 9114 7.2.3)."""

    push_id: int


def _varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """A QUIC variable-length integer (RFC 9000 16) at ``pos``: (value, next position),
    or None when ``data`` ends inside it."""
    if pos >= len(data):
        return None
    first = data[pos]
    end = pos + (1 << (first >> 6))
    if end > len(data):
        return None
    value = first & 0x3F
    for byte in data[pos + 1 : end]:
        value = (value << 8) | byte
    return value, end


class ControlScan:
    """The frames of the client's control stream (after its stream type), read for the
    one aioquic skips that a server must act on: CANCEL_PUSH. Other frames' payloads are
    skipped as they come; what is kept is at most a frame header or a push id (16 bytes)."""

    __slots__ = ("_head", "_skip", "_payload", "_want")

    def __init__(self) -> None:
        self._head = bytearray()  # a frame header not complete yet (two varints: at most 16 bytes)
        self._skip = 0  # payload bytes of the current frame still to skip
        self._payload = bytearray()  # the CANCEL_PUSH payload read so far
        self._want = 0  # the CANCEL_PUSH payload's length (0: not in one)

    def feed(self, data: bytes) -> list[int]:
        """The push ids of the CANCEL_PUSH frames completed by ``data``. Raises FrameError
        for a CANCEL_PUSH whose payload is not one variable-length integer (RFC 9114 7.1)."""
        found: list[int] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
            elif self._want:
                take = min(self._want - len(self._payload), end - pos)
                self._payload += data[pos : pos + take]
                pos += take
                if len(self._payload) == self._want:
                    parsed = _varint(self._payload, 0)
                    if parsed is None or parsed[1] != self._want:
                        raise FrameError("CANCEL_PUSH payload is not one push id")
                    found.append(parsed[0])
                    self._payload.clear()
                    self._want = 0
            else:
                head = self._head
                had = len(head)
                head += data[pos : pos + 16 - had]
                kind = _varint(head, 0)
                length = _varint(head, kind[1]) if kind is not None else None
                if kind is None or length is None:
                    pos += len(head) - had  # (a header split across packets: kept until complete)
                    continue
                pos += length[1] - had
                head.clear()
                if kind[0] == FrameType.CANCEL_PUSH:
                    if not 1 <= length[0] <= 8:
                        raise FrameError("CANCEL_PUSH payload is not one push id")
                    self._want = length[0]
                else:
                    self._skip = length[0]
        return found


class ServerH3(H3Connection):
    """aioquic's HTTP/3 connection with heron's SETTINGS, and CANCEL_PUSH read."""

    def __init__(self, quic: QuicConnection, max_field_section_size: int, extended_connect: bool) -> None:
        self._heron_max_field_section_size = max_field_section_size
        self._heron_extended_connect = extended_connect
        self._heron_control = ControlScan()
        super().__init__(quic)

    def promise_push(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
        """A PUSH_PROMISE on request stream ``stream_id`` (NoAvailablePushIDError when the
        client allows no further push): the push id, and the push stream aioquic opened."""
        push_id: int = self._next_push_id
        return push_id, self.send_push_promise(stream_id, headers)

    def handle_event(self, event: QuicEvent) -> list[H3Event]:
        if not isinstance(event, StreamDataReceived) or event.stream_id % 4 != 2 or self._is_done:
            return super().handle_event(event)  # (2: the client's unidirectional streams)
        sid = event.stream_id
        control = self._peer_control_stream_id
        data: bytes | None = None
        if sid == control:
            data = event.data
        elif control is None:  # maybe the control stream: the bytes of its type are kept in aioquic's buffer
            stream = self._stream.get(sid)
            head = stream.buffer if stream is not None and stream.stream_type is None else b""
            data = head + event.data
        events = super().handle_event(event)
        if data is None or self._is_done or self._peer_control_stream_id != sid:
            return events
        if control is None:  # the first bytes of the control stream: past its stream type
            kind = _varint(data, 0)
            if kind is None or kind[0] != StreamType.CONTROL:  # (never: aioquic just read it so)
                return events
            data = data[kind[1] :]
        try:
            for push_id in self._heron_control.feed(data):
                if push_id >= self._next_push_id:  # RFC 9114 7.2.3 (beyond MAX_PUSH_ID included)
                    raise IdError("CANCEL_PUSH of a push id never promised")
                events.append(PushCancelled(push_id))
        except ProtocolError as exc:
            self._is_done = True
            self._quic.close(error_code=exc.error_code, reason_phrase=exc.reason_phrase)
        return events

    def _get_local_settings(self) -> dict[int, int]:
        settings: dict[int, Any] = super()._get_local_settings()
        if self._heron_extended_connect:
            settings[Setting.ENABLE_CONNECT_PROTOCOL] = 1
        else:
            settings.pop(Setting.ENABLE_CONNECT_PROTOCOL, None)
        settings[Setting.MAX_FIELD_SECTION_SIZE] = self._heron_max_field_section_size
        return settings


def send_goaway(h3: H3Connection, quic: QuicConnection, stream_id: int) -> None:
    """GOAWAY (RFC 9114 5.2): requests on ``stream_id`` and above are not processed."""
    control = h3._local_control_stream_id
    if control is not None:
        quic.send_stream_data(control, encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id)))
