"""What heron asks of aioquic beyond its public API, kept in one place.

aioquic (the optional ``http3`` extra) is imported only by the HTTP/3 modules,
and they are imported only when ``--quic-bind`` is set.

Five things here reach into aioquic's internals, on purpose and nowhere else:

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
  MAX_PUSH_ID and a push id is left) and :func:`push_stream_available` (the
  client's limit on our unidirectional streams lets a push stream open now);
  :func:`negotiated_cipher_suite` reads the handshake's cipher suite for the
  ASGI ``tls`` extension.
* **A first Initial that decrypted.** :func:`initial_decrypts` (before a
  connection is made) and :func:`decrypted_any` (after aioquic read it) tell
  a real client's first datagram from garbage, so garbage costs no connection.

``tests/integration/test_http3.py`` checks each of these through a real client.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, Setting, encode_frame
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.crypto import CryptoPair
from cryptography.hazmat.primitives.serialization import Encoding

if TYPE_CHECKING:
    from aioquic.quic.packet import QuicHeader
    from aioquic.quic.packet_builder import QuicPacketBuilder
    from aioquic.quic.recovery import QuicPacketSpace
    from aioquic.quic.stream import QuicStream

    from ..config import Config

__all__ = [
    "H3_ALPN",
    "FlowControlledQuic",
    "check_supported",
    "decrypted_any",
    "initial_decrypts",
    "negotiated_cipher_suite",
    "push_possible",
    "push_stream_available",
    "server_certificate",
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


class FlowControlledQuic(QuicConnection):
    """A QuicConnection whose receive windows (the connection's, and its request
    streams') move only through :func:`grant`: the client's control and QPACK
    streams, which aioquic reads as they arrive, keep aioquic's own rule.

    aioquic's own rule is hidden from it while it writes its limits: before 1.9
    it doubles a limit once the peer used half of it (``used``, the stream's
    ``highest_offset``); from 1.9 it moves the limit to one (auto-tuned)
    window past what QUIC delivered, when less than half a window is left
    (``_local_max_data_window``, the stream's ``max_stream_data_local_window``).
    """

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
    if not hasattr(H3Connection(probe), "_max_push_id"):
        missing.append("H3Connection._max_push_id")
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


class ServerH3(H3Connection):
    """aioquic's HTTP/3 connection with heron's SETTINGS."""

    def __init__(self, quic: QuicConnection, max_field_section_size: int, extended_connect: bool) -> None:
        self._heron_max_field_section_size = max_field_section_size
        self._heron_extended_connect = extended_connect
        super().__init__(quic)

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
