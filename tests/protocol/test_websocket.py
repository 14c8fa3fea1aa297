"""Tests for the sans-IO WebSocket core (heron.protocol.websocket, .permessage_deflate).

Parser tests go through :func:`events`, which feeds the same bytes whole, one
byte at a time and (for short inputs) split in two at every position, and
checks that every run gives the same events (or the same error at the same
point of the event stream). A few tests use the ``websockets`` library's sans-IO
client as a real peer, and hypothesis checks round trips and that arbitrary
bytes only ever raise :class:`WebSocketProtocolError`.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from heron.protocol.errors import HandshakeError, LocalProtocolError, WebSocketProtocolError
from heron.protocol.http1 import H1Connection, Request
from heron.protocol.permessage_deflate import (
    DeflateParams,
    Deflater,
    DeflateSettings,
    Inflater,
    negotiate,
)
from heron.protocol.websocket import (
    NEED_DATA,
    YIELD,
    BytesMessage,
    CloseReceived,
    Ping,
    Pong,
    TextMessage,
    WebSocketConnection,
)
from heron.protocol.ws_handshake import (
    ExtensionOffer,
    accept_key,
    extended_connect_response_headers,
    handshake_response_headers,
    parse_extensions,
    validate_extended_connect,
    validate_handshake,
)

# --- a tiny client-side encoder ----------------------------------------------

MASK = b"\x37\xfa\x21\x3d"


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask: bytes | None = MASK,
    length_form: int | None = None,
) -> bytes:
    """One frame as a client would send it; ``length_form`` forces 7/16/64-bit lengths."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0) | (0x10 if rsv3 else 0) | opcode
    n = len(payload)
    form = length_form or (7 if n < 126 else 16 if n < 65536 else 64)
    mask_bit = 0x80 if mask is not None else 0
    if form == 7:
        head = bytes((b0, mask_bit | n))
    elif form == 16:
        head = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(s: str, **kw: Any) -> bytes:
    return frame(0x1, s.encode("utf-8"), **kw)


def close(code: int | None = None, reason: bytes = b"") -> bytes:
    return frame(0x8, b"" if code is None else struct.pack("!H", code) + reason)


class ClientCompressor:
    """permessage-deflate as a client (zlib) would do it."""

    def __init__(self, wbits: int = 15, no_context_takeover: bool = False) -> None:
        self.wbits = wbits
        self.no_context_takeover = no_context_takeover
        self.obj = zlib.compressobj(6, zlib.DEFLATED, -wbits)

    def compress(self, data: bytes) -> bytes:
        if self.no_context_takeover:
            self.obj = zlib.compressobj(6, zlib.DEFLATED, -self.wbits)
        out = self.obj.compress(data) + self.obj.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]


DEFLATE = DeflateParams()  # context takeover both ways, 15-bit windows

# --- the feeding helper ------------------------------------------------------

SPLIT_ALL_MAX = 300


def _drain(conn: WebSocketConnection, out: list[Any]) -> bool:
    """Collect events; False once an error ended the run."""
    while True:
        try:
            event = conn.next_event()
        except WebSocketProtocolError as exc:
            assert len(str(exc).encode()) <= 123  # fits in a close reason
            out.append(("error", exc.close_code))
            return False
        if event is NEED_DATA:
            return True
        if event is YIELD:  # the frame budget of one call: go on
            continue
        out.append(event)


def _run(pieces: Sequence[bytes], eof: bool, kw: dict[str, Any]) -> list[Any]:
    conn = WebSocketConnection(**kw)
    out: list[Any] = []
    for piece in pieces:
        conn.receive_data(piece)
        if not _drain(conn, out):
            return out
    if eof:
        conn.receive_data(b"")
        _drain(conn, out)
    return out


def events(data: bytes, *, eof: bool = False, **kw: Any) -> list[Any]:
    """Events for ``data`` fed whole, byte by byte and split at every point."""
    whole = _run([data], eof, kw)
    assert _run([data[i : i + 1] for i in range(len(data))], eof, kw) == whole
    if len(data) <= SPLIT_ALL_MAX:
        for i in range(1, len(data)):
            assert _run([data[:i], data[i:]], eof, kw) == whole, f"split at {i}"
    return whole


# --- handshake ---------------------------------------------------------------

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def hs_headers(**overrides: bytes | None) -> list[tuple[bytes, bytes]]:
    base: dict[str, bytes | None] = {
        "host": b"example.com",
        "upgrade": b"websocket",
        "connection": b"Upgrade",
        "sec-websocket-key": KEY,
        "sec-websocket-version": b"13",
    }
    base.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return [(k.encode(), v) for k, v in base.items() if v is not None]


def test_accept_key_rfc_example() -> None:
    assert accept_key(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_handshake() -> None:
    headers = hs_headers(
        upgrade=b"foo/2, WebSocket",
        connection=b"keep-alive, UPGRADE",
    ) + [
        (b"sec-websocket-protocol", b"chat, superchat"),
        (b"sec-websocket-protocol", b" v2.json ,, "),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits, x-foo"),
    ]
    request = validate_handshake(b"GET", "1.1", headers)
    assert request.key == KEY
    assert request.subprotocols == ["chat", "superchat", "v2.json"]
    assert request.extensions == [
        ExtensionOffer("permessage-deflate", [("client_max_window_bits", None)]),
        ExtensionOffer("x-foo", []),
    ]


def test_handshake_without_optional_headers() -> None:
    request = validate_handshake(b"GET", "1.1", hs_headers())
    assert request.subprotocols == [] and request.extensions == []


@pytest.mark.parametrize(
    "method, version, overrides",
    [
        (b"POST", "1.1", {}),
        (b"GET", "1.0", {}),
        (b"GET", "1.1", {"upgrade": None}),
        (b"GET", "1.1", {"upgrade": b"h2c"}),
        (b"GET", "1.1", {"connection": None}),
        (b"GET", "1.1", {"connection": b"keep-alive"}),
        (b"GET", "1.1", {"sec_websocket_key": None}),
        (b"GET", "1.1", {"sec_websocket_key": b"dGhlIHNhbXBsZSBub25jZQ"}),  # no padding
        (b"GET", "1.1", {"sec_websocket_key": b"dGhlIHNhbXBsZSBub25jZR=="}),  # non-canonical
        (b"GET", "1.1", {"sec_websocket_key": b"dGhlIHNhbXBsZSBub25j"}),  # 15 bytes
        (b"GET", "1.1", {"sec_websocket_key": b"dGhlIHNhbXBsZSBub25jZQ==AAAA"}),
        (b"GET", "1.1", {"sec_websocket_key": b"dGhlIHNhbXBsZSBub25jZ*=="}),
        (b"GET", "1.1", {"sec_websocket_key": b""}),
    ],
)
def test_handshake_rejected_400(method: bytes, version: str, overrides: dict[str, bytes | None]) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_handshake(method, version, hs_headers(**overrides))
    assert info.value.status_code == 400


def test_handshake_two_keys() -> None:
    headers = hs_headers() + [(b"sec-websocket-key", KEY)]
    with pytest.raises(HandshakeError) as info:
        validate_handshake(b"GET", "1.1", headers)
    assert info.value.status_code == 400


@pytest.mark.parametrize("version", [None, b"8", b"13, 8", b"14", b""])
def test_handshake_bad_version_426(version: bytes | None) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_handshake(b"GET", "1.1", hs_headers(sec_websocket_version=version))
    assert info.value.status_code == 426
    assert (b"sec-websocket-version", b"13") in info.value.extra_headers
    assert (b"upgrade", b"websocket") in info.value.extra_headers


def test_handshake_two_version_headers_426() -> None:
    headers = hs_headers() + [(b"sec-websocket-version", b"13")]
    with pytest.raises(HandshakeError) as info:
        validate_handshake(b"GET", "1.1", headers)
    assert info.value.status_code == 426


@pytest.mark.parametrize(
    "name, value",
    [
        (b"sec-websocket-protocol", b"chat, sup er"),
        (b"sec-websocket-protocol", b'"quoted"'),
        (b"sec-websocket-extensions", b"permessage-deflate;"),
        (b"sec-websocket-extensions", b"permessage-deflate; a=b=c"),
        (b"sec-websocket-extensions", b"=x"),
        (b"sec-websocket-extensions", b'foo; a="unterminated'),
        (b"sec-websocket-extensions", b"foo bar"),
    ],
)
def test_handshake_malformed_lists(name: bytes, value: bytes) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_handshake(b"GET", "1.1", hs_headers() + [(name, value)])
    assert info.value.status_code == 400


def test_parse_extensions() -> None:
    values = [
        b'permessage-deflate ; server_max_window_bits = "10" ; client_no_context_takeover',
        b', , x-webkit-deflate-frame,foo;a=b;c="q\\"s"',
    ]
    assert parse_extensions(values) == [
        ExtensionOffer("permessage-deflate", [("server_max_window_bits", "10"), ("client_no_context_takeover", None)]),
        ExtensionOffer("x-webkit-deflate-frame", []),
        ExtensionOffer("foo", [("a", "b"), ("c", 'q"s')]),
    ]
    assert parse_extensions([b"", b" , "]) == []


def test_response_headers() -> None:
    headers = handshake_response_headers(
        accept_key(KEY),
        "chat",
        b"permessage-deflate",
        [(b"Set-Cookie", b"a=b"), (b"x-tab", b"a\tb")],
        offered_subprotocols=["chat"],
    )
    assert headers == [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        (b"sec-websocket-protocol", b"chat"),
        (b"sec-websocket-extensions", b"permessage-deflate"),
        (b"Set-Cookie", b"a=b"),
        (b"x-tab", b"a\tb"),
    ]
    assert handshake_response_headers(b"acc") == [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b"acc"),
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"extra_headers": [(b"x-a", b"a\r\nb")]},
        {"extra_headers": [(b"x-a", b"a\nb")]},
        {"extra_headers": [(b"x-a", b"a\x00b")]},
        {"extra_headers": [(b"x a", b"b")]},
        {"extra_headers": [(b"", b"b")]},
        {"extra_headers": [(b"Sec-WebSocket-Accept", b"forged")]},
        {"extra_headers": [(b"upgrade", b"h2c")]},
        {"extra_headers": [(b"Connection", b"close")]},
        {"extra_headers": [(b"sec-websocket-extensions", b"permessage-deflate")]},
        {"extra_headers": [(b"sec-websocket-protocol", b"chat")]},
        {"extra_headers": [("x-a", "str")]},
        {"extra_headers": [(b"x-a",)]},
        {"subprotocol": "two words"},
        {"subprotocol": "caf\u00e9"},
        {"subprotocol": "\ud800"},
        {"subprotocol": "other", "offered_subprotocols": ["chat"]},
    ],
)
def test_response_headers_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        handshake_response_headers(b"acc", **kwargs)


def h2_headers(**overrides: bytes | None) -> list[tuple[bytes, bytes]]:
    base: dict[str, bytes | None] = {
        ":method": b"CONNECT",
        ":protocol": b"websocket",
        ":scheme": b"https",
        ":path": b"/chat",
        ":authority": b"example.com",
        "sec-websocket-version": b"13",
    }
    base.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return [(k.encode(), v) for k, v in base.items() if v is not None]


def test_extended_connect() -> None:
    headers = h2_headers() + [
        (b"sec-websocket-protocol", b"chat"),
        (b"sec-websocket-extensions", b"permessage-deflate"),
    ]
    request = validate_extended_connect(headers)
    assert request.key is None
    assert request.subprotocols == ["chat"]
    assert request.extensions == [ExtensionOffer("permessage-deflate", [])]
    assert extended_connect_response_headers("chat", b"permessage-deflate", [(b"X-Foo", b"1")]) == [
        (b":status", b"200"),
        (b"sec-websocket-protocol", b"chat"),
        (b"sec-websocket-extensions", b"permessage-deflate"),
        (b"x-foo", b"1"),
    ]
    with pytest.raises(LocalProtocolError):
        extended_connect_response_headers(extra_headers=[(b"connection", b"close")])
    with pytest.raises(LocalProtocolError):
        extended_connect_response_headers(extra_headers=[(b":status", b"101")])


@pytest.mark.parametrize(
    "overrides, status",
    [
        ({":method": b"GET"}, 400),
        ({":protocol": None}, 400),
        ({":protocol": b"h2c"}, 400),
        ({":path": None}, 400),
        ({":path": b""}, 400),
        ({":scheme": None}, 400),
        ({":authority": None}, 400),
        ({"sec_websocket_version": None}, 426),
        ({"sec_websocket_version": b"8"}, 426),
    ],
)
def test_extended_connect_rejected(overrides: dict[str, bytes | None], status: int) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_extended_connect(h2_headers(**overrides))
    assert info.value.status_code == status


# --- receiving: messages -----------------------------------------------------


def test_single_frames() -> None:
    assert events(text("héllo") + frame(0x2, b"\x00\xff") + frame(0x1) + frame(0x2)) == [
        TextMessage("héllo"),
        BytesMessage(b"\x00\xff"),
        TextMessage(""),
        BytesMessage(b""),
    ]


@pytest.mark.parametrize("mask", [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04"])
def test_masks(mask: bytes) -> None:
    assert events(frame(0x2, bytes(range(7)), mask=mask)) == [BytesMessage(bytes(range(7)))]


@pytest.mark.parametrize("size", [125, 126, 127, 65535, 65536, 70001])
def test_length_forms(size: int) -> None:
    payload = os.urandom(size)
    conn = WebSocketConnection()
    conn.receive_data(frame(0x2, payload))
    assert conn.next_event() == BytesMessage(payload)
    assert conn.next_event() is NEED_DATA


def test_large_frame_in_odd_pieces() -> None:
    """Partial payloads rotate the mask; 64 KiB blocks and the remainder join up."""
    payload = os.urandom(300_003)
    data = frame(0x2, payload, mask=b"\x01\x02\x03\x04")
    for size in (len(data), 65537, 7001, 200_001):
        conn = WebSocketConnection()
        got: list[Any] = []
        for i in range(0, len(data), size):
            conn.receive_data(data[i : i + size])
            while (event := conn.next_event()) is not NEED_DATA:
                got.append(event)
        assert got == [BytesMessage(payload)], size


def test_binary_payloads_collected_across_reads() -> None:
    """An incomplete binary frame's payload is kept as it came and unmasked once
    complete: pieces that end a frame and start the next, a fragmented message
    whose frames each span reads, and a control frame between its fragments."""
    one, two, three = os.urandom(5000), os.urandom(3001), os.urandom(70_001)
    data = (
        frame(0x2, one, mask=b"\x01\x02\x03\x04")
        + frame(0x2, two[:1000], fin=False, mask=b"\xa0\xb0\xc0\xd0")
        + frame(0x9, b"in between")
        + frame(0x0, two[1000:], mask=b"\x11\x22\x33\x44")
        + frame(0x1, b"text")
        + frame(0x2, three)
    )
    expected = [BytesMessage(one), Ping(b"in between"), BytesMessage(two), TextMessage("text"), BytesMessage(three)]
    for size in (1, 2, 3, 7, 999, 4096, 65536, len(data)):
        assert _run([data[i : i + size] for i in range(0, len(data), size)], False, {}) == expected, size


def test_receive_data_keeps_no_reference_to_a_mutable_buffer() -> None:
    """bytes are kept as they came; a bytearray (or memoryview) is copied, so a
    caller that reuses its buffer can't change a payload being collected."""
    payload = os.urandom(1000)
    data = frame(0x2, payload)
    conn = WebSocketConnection()
    buffer = bytearray(data[:600])
    conn.receive_data(buffer)
    assert conn.next_event() is NEED_DATA
    buffer[:] = b"\x00" * len(buffer)
    view = memoryview(bytearray(data[600:]))
    conn.receive_data(view)
    view[:] = b"\x00" * len(view)
    assert conn.next_event() == BytesMessage(payload)


def test_eof_while_a_binary_payload_is_collected() -> None:
    data = frame(0x2, os.urandom(1000))
    assert events(data[:500], eof=True) == [CloseReceived(1006, "")]


@pytest.mark.parametrize("form", [16, 64])
def test_non_minimal_lengths_accepted(form: int) -> None:
    data = frame(0x2, b"abc", length_form=form) + frame(0x9, b"p", length_form=form)
    assert events(data) == [BytesMessage(b"abc"), Ping(b"p")]


def test_fragmented_messages_with_interleaved_control_frames() -> None:
    data = (
        frame(0x1, "hé".encode()[:2], fin=False)  # split inside the é
        + frame(0x9, b"ping")
        + frame(0x0, "hé".encode()[2:], fin=False)
        + frame(0xA, b"pong")
        + frame(0x0, b"", fin=False)
        + frame(0x0, b"!")
        + frame(0x2, b"a", fin=False)
        + frame(0x0, b"b")
    )
    assert events(data) == [Ping(b"ping"), Pong(b"pong"), TextMessage("hé!"), BytesMessage(b"ab")]


def test_ping_pong_payloads() -> None:
    assert events(frame(0x9) + frame(0x9, b"x" * 125) + frame(0xA, b"\x00")) == [
        Ping(b""),
        Ping(b"x" * 125),
        Pong(b"\x00"),
    ]


# --- receiving: close --------------------------------------------------------


def test_close_with_code_and_reason_then_data_ignored() -> None:
    data = close(1001, "bye ✓".encode()) + text("ignored") + b"\x00garbage"
    assert events(data) == [CloseReceived(1001, "bye ✓")]


def test_close_without_code() -> None:
    assert events(close()) == [CloseReceived(1005, "")]


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
)
def test_valid_close_codes(code: int) -> None:
    assert events(close(code)) == [CloseReceived(code, "")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes(code: int) -> None:
    assert events(close(code)) == [("error", 1002)]


def test_close_payload_of_one_byte() -> None:
    assert events(frame(0x8, b"\x03")) == [("error", 1002)]


def test_close_reason_invalid_utf8() -> None:
    assert events(close(1000, b"\xff")) == [("error", 1007)]


def test_receive_after_close_is_ignored() -> None:
    conn = WebSocketConnection()
    conn.receive_data(close(1000))
    assert conn.next_event() == CloseReceived(1000, "")
    conn.receive_data(b"\xff\xff\xff")
    conn.receive_data(b"")
    assert conn.next_event() is NEED_DATA
    assert conn.close_received and not conn.closed


# --- receiving: protocol errors ----------------------------------------------


@pytest.mark.parametrize(
    "data, code",
    [
        (frame(0x1, b"x", mask=None), 1002),
        (frame(0x9, b"", mask=None), 1002),
        (frame(0x1, b"x", rsv1=True), 1002),  # no permessage-deflate
        (frame(0x1, b"x", rsv2=True), 1002),
        (frame(0x1, b"x", rsv3=True), 1002),
        (frame(0x9, b"", rsv2=True), 1002),
        *[(frame(op, b"x"), 1002) for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)],
        (frame(0x9, b"x", fin=False), 1002),
        (frame(0x8, b"", fin=False), 1002),
        (frame(0x9, b"x" * 126), 1002),
        (frame(0xA, b"x" * 126, length_form=16), 1002),
        (frame(0x8, b"x" * 126, length_form=64), 1002),
        (frame(0x0, b"x"), 1002),
        (frame(0x0, b"x", fin=False), 1002),
        (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002),
        (frame(0x2, b"a", fin=False) + frame(0x2, b"b"), 1002),
        (b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x01" + MASK, 1002),  # 64-bit length, top bit set
        (frame(0x1, b"\xff"), 1007),
        (frame(0x1, b"\xc3"), 1007),  # truncated sequence at the end of the message
        (frame(0x1, b"\xc3", fin=False) + frame(0x0, b"a"), 1007),
        (frame(0x1, b"\xed\xa0\x80"), 1007),  # UTF-16 surrogate
        (frame(0x1, b"\xf4\x90\x80\x80"), 1007),  # beyond U+10FFFF
        (frame(0x1, b"\xc0\xaf"), 1007),  # overlong
    ],
)
def test_protocol_errors(data: bytes, code: int) -> None:
    assert events(data) == [("error", code)]


def test_errors_after_good_events_and_error_is_sticky() -> None:
    assert events(frame(0x1, b"a") + frame(0x0, b"b")) == [TextMessage("a"), ("error", 1002)]
    data = text("ok") + frame(0x9, b"p") + frame(0x1, b"x", mask=None)
    assert events(data) == [TextMessage("ok"), Ping(b"p"), ("error", 1002)]
    conn = WebSocketConnection()
    conn.receive_data(frame(0x3))
    with pytest.raises(WebSocketProtocolError) as first:
        conn.next_event()
    conn.receive_data(text("more"))
    with pytest.raises(WebSocketProtocolError) as again:
        conn.next_event()
    assert again.value is first.value
    # the caller can still send its Close frame
    reason = str(first.value).encode()
    assert conn.send_close(first.value.close_code, str(first.value)) == b"\x88%c\x03\xea%s" % (2 + len(reason), reason)


def test_rsv1_rules_with_deflate() -> None:
    payload = ClientCompressor().compress(b"hello")
    assert events(frame(0x1, payload, rsv1=True, fin=False) + frame(0x0, b"", rsv1=True), deflate=DEFLATE) == [
        ("error", 1002)
    ]
    assert events(frame(0x9, b"", rsv1=True), deflate=DEFLATE) == [("error", 1002)]
    assert events(frame(0x8, b"", rsv1=True), deflate=DEFLATE) == [("error", 1002)]


def test_invalid_utf8_fails_fast_across_fragments() -> None:
    conn = WebSocketConnection()
    conn.receive_data(frame(0x1, b"valid \xce", fin=False))
    assert conn.next_event() is NEED_DATA  # \xce may still become a letter
    conn.receive_data(frame(0x0, b"\xbb ok", fin=False))
    assert conn.next_event() is NEED_DATA
    conn.receive_data(frame(0x0, b"\xfe", fin=False))  # not the last fragment
    with pytest.raises(WebSocketProtocolError) as info:
        conn.next_event()
    assert info.value.close_code == 1007


@pytest.mark.parametrize("bad", [b"\xff", b"\xed\xa0", b"\xf4\x90", b"\xe0\x80", b"\xc1"])
def test_invalid_utf8_fails_fast_inside_a_frame(bad: bytes) -> None:
    """Only the frame's first bytes have arrived; the bad prefix is already reported."""
    data = frame(0x1, b"abc" + bad + b"x" * 1000)
    conn = WebSocketConnection()
    conn.receive_data(data[: 8 + 3 + len(bad)])  # 8-byte header with the 16-bit length
    with pytest.raises(WebSocketProtocolError) as info:
        conn.next_event()
    assert info.value.close_code == 1007


# --- receiving: size limits --------------------------------------------------


def test_frame_too_big_detected_from_the_header() -> None:
    conn = WebSocketConnection(max_message_size=1000, max_frame_size=100)
    conn.receive_data(frame(0x2, b"x" * 101)[:4])  # 2 bytes + 16-bit length, no mask yet
    with pytest.raises(WebSocketProtocolError) as info:
        conn.next_event()
    assert info.value.close_code == 1009
    huge = b"\x82\xff" + struct.pack("!Q", 2**62)
    assert events(huge) == [("error", 1009)]


def test_message_too_big_across_fragments() -> None:
    data = frame(0x2, b"x" * 60, fin=False) + frame(0x0, b"y" * 41)
    assert events(data, max_message_size=100) == [("error", 1009)]
    conn = WebSocketConnection(max_message_size=100)
    conn.receive_data(data[: 6 + 60])
    assert conn.next_event() is NEED_DATA  # the first frame is fine...
    conn.receive_data(data[6 + 60 : 6 + 60 + 2])
    with pytest.raises(WebSocketProtocolError):
        conn.next_event()  # ...and the second fails on its first two bytes


def test_message_exactly_at_the_limit() -> None:
    data = frame(0x1, b"x" * 60, fin=False) + frame(0x0, b"y" * 40) + frame(0x2, b"z" * 100)
    assert events(data, max_message_size=100) == [TextMessage("x" * 60 + "y" * 40), BytesMessage(b"z" * 100)]


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        WebSocketConnection(max_message_size=0)
    with pytest.raises(ValueError):
        WebSocketConnection(max_frame_size=0)


def test_decompression_bomb() -> None:
    bomb = ClientCompressor().compress(b"\x00" * (4 * 1024 * 1024))  # about 4 KiB on the wire
    assert len(bomb) < 8192
    conn = WebSocketConnection(max_message_size=1024 * 1024, deflate=DEFLATE)
    conn.receive_data(frame(0x2, bomb, rsv1=True))
    with pytest.raises(WebSocketProtocolError) as info:
        conn.next_event()
    assert info.value.close_code == 1009


def test_inflater_never_inflates_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = zlib.decompressobj

    class Spy:
        def __init__(self, *args: Any) -> None:
            self.obj = real(*args)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            assert max_length > 0
            out = self.obj.decompress(data, max_length)
            seen.append(len(out))
            return out

        def __getattr__(self, name: str) -> Any:
            return getattr(self.obj, name)

    monkeypatch.setattr(zlib, "decompressobj", Spy)
    inflater = Inflater(DEFLATE)
    bomb = ClientCompressor().compress(b"a" * 10_000_000)
    with pytest.raises(WebSocketProtocolError):
        inflater.decompress(bomb, 5000)
    assert seen == [5001]


def test_compressed_message_at_and_over_the_limit() -> None:
    for size, expected in ((100, [TextMessage("x" * 100)]), (101, [("error", 1009)])):
        payload = ClientCompressor().compress(b"x" * size)
        assert events(frame(0x1, payload, rsv1=True), max_message_size=100, deflate=DEFLATE) == expected
    # the limit also holds when the tail is what pushes the message over
    payload = ClientCompressor().compress(b"x" * 101)
    assert events(
        frame(0x1, payload[:3], rsv1=True, fin=False) + frame(0x0, payload[3:]), max_message_size=100, deflate=DEFLATE
    ) == [("error", 1009)]


# --- receiving: EOF ----------------------------------------------------------


def test_eof_without_close_frame() -> None:
    assert events(text("a") + frame(0x2, b"half")[:5], eof=True) == [TextMessage("a"), CloseReceived(1006, "")]
    conn = WebSocketConnection()
    conn.receive_data(b"")
    event = conn.next_event()
    assert isinstance(event, CloseReceived) and event == CloseReceived(1006, "")
    assert conn.closed
    assert conn.close_reply(event) == b""  # nobody to answer
    assert conn.next_event() is NEED_DATA


# --- sending -----------------------------------------------------------------


def parse_server_frame(data: bytes) -> tuple[int, int, bytes, bytes]:
    """(b0, length form, payload, rest) of one unmasked server frame."""
    b0, b1 = data[0], data[1]
    assert not b1 & 0x80, "server frames are never masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", data[2:4])
        return b0, 16, data[4 : 4 + n], data[4 + n :]
    if n == 127:
        (n,) = struct.unpack("!Q", data[2:10])
        return b0, 64, data[10 : 10 + n], data[10 + n :]
    return b0, 7, data[2 : 2 + n], data[2 + n :]


@pytest.mark.parametrize("size, form", [(0, 7), (125, 7), (126, 16), (65535, 16), (65536, 64)])
def test_send_lengths(size: int, form: int) -> None:
    conn = WebSocketConnection()
    b0, got_form, payload, rest = parse_server_frame(conn.send_bytes(b"x" * size))
    assert (b0, got_form, payload, rest) == (0x82, form, b"x" * size, b"")


@pytest.mark.parametrize("deflate", [None, DEFLATE])
def test_frame_message_is_send_without_the_join(deflate: DeflateParams | None) -> None:
    """frame_message() gives the header and the payload apart (for writelines); joined
    they are what send_bytes()/send_text() return, compression included."""
    for message in (b"\x00" * 70_000, "hé" * 100, b"", ""):
        one, two = WebSocketConnection(deflate=deflate), WebSocketConnection(deflate=deflate)
        header, payload = one.frame_message(message)
        whole = two.send_text(message) if isinstance(message, str) else two.send_bytes(message)
        assert header + payload == whole
        if deflate is None and isinstance(message, bytes):
            assert payload is message  # no copy
    conn = WebSocketConnection()
    conn.send_close()
    with pytest.raises(LocalProtocolError):
        conn.frame_message(b"late")


def test_send_messages_and_control_frames() -> None:
    conn = WebSocketConnection()
    assert conn.send_text("hé") == b"\x81\x03h\xc3\xa9"
    assert conn.send_ping() == b"\x89\x00"
    assert conn.send_ping(b"x" * 125)[:2] == b"\x89\x7d"
    assert conn.send_pong(b"p") == b"\x8a\x01p"
    assert conn.pong_reply(Ping(b"abc")) == b"\x8a\x03abc"
    with pytest.raises(LocalProtocolError):
        conn.send_ping(b"x" * 126)
    with pytest.raises(LocalProtocolError):
        conn.send_pong(b"x" * 126)
    with pytest.raises(LocalProtocolError):
        conn.send_text("\ud800")


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999])
def test_send_close_codes(code: int) -> None:
    assert WebSocketConnection().send_close(code, "r") == b"\x88\x03" + struct.pack("!H", code) + b"r"


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_send_close_refuses_codes(code: int) -> None:
    with pytest.raises(LocalProtocolError):
        WebSocketConnection().send_close(code)


def test_send_close_reason_rules() -> None:
    assert WebSocketConnection().send_close(None) == b"\x88\x00"
    assert len(WebSocketConnection().send_close(1000, "é" * 61 + "x")) == 2 + 2 + 123
    for code, reason in ((1000, "x" * 124), (1000, "é" * 62), (None, "why"), (1000, "\udc80")):
        with pytest.raises(LocalProtocolError):
            WebSocketConnection().send_close(code, reason)


def test_nothing_is_sent_after_close() -> None:
    conn = WebSocketConnection()
    conn.send_close()
    assert conn.close_sent and not conn.closed
    sends: list[Callable[[], bytes]] = [
        lambda: conn.send_text("x"),
        lambda: conn.send_bytes(b"x"),
        conn.send_ping,
        conn.send_close,
    ]
    for send in sends:
        with pytest.raises(LocalProtocolError):
            send()
    assert conn.pong_reply(Ping(b"")) == b""
    assert conn.close_reply(CloseReceived(1000, "")) == b""


def test_closing_handshake_server_first() -> None:
    conn = WebSocketConnection()
    conn.receive_data(text("in flight"))
    conn.send_close(1001, "going away")
    assert conn.next_event() == TextMessage("in flight")
    assert not conn.closed
    conn.receive_data(close(1001))
    event = conn.next_event()
    assert event == CloseReceived(1001, "")
    assert conn.closed
    assert conn.close_reply(event) == b""


@pytest.mark.parametrize("received, reply", [(1001, 1001), (4000, 4000), (None, 1000)])
def test_closing_handshake_client_first(received: int | None, reply: int) -> None:
    conn = WebSocketConnection()
    conn.receive_data(close(received, b"bye" if received else b""))
    event = conn.next_event()
    assert isinstance(event, CloseReceived)
    assert not conn.closed
    assert conn.close_reply(event) == b"\x88\x02" + struct.pack("!H", reply)
    assert conn.closed


# --- permessage-deflate ------------------------------------------------------


def offer(value: bytes) -> list[ExtensionOffer]:
    return parse_extensions([value])


@pytest.mark.parametrize(
    "value, settings, response, params",
    [
        (
            b"permessage-deflate",
            DeflateSettings(),
            b"permessage-deflate; server_max_window_bits=12",
            DeflateParams(server_max_window_bits=12, mem_level=5),
        ),
        (
            b"permessage-deflate; client_max_window_bits",
            DeflateSettings(server_max_window_bits=15, client_max_window_bits=15),
            b"permessage-deflate; client_max_window_bits=15",
            DeflateParams(mem_level=5),
        ),
        (
            b"permessage-deflate; client_max_window_bits=10; server_max_window_bits=11",
            DeflateSettings(),
            b"permessage-deflate; server_max_window_bits=11; client_max_window_bits=10",
            DeflateParams(server_max_window_bits=11, client_max_window_bits=10, mem_level=5),
        ),
        (
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            DeflateSettings(server_max_window_bits=15),
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            DeflateParams(server_no_context_takeover=True, client_no_context_takeover=True, mem_level=5),
        ),
        (
            b"permessage-deflate",
            DeflateSettings(
                server_no_context_takeover=True, client_no_context_takeover=True, server_max_window_bits=15
            ),
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            DeflateParams(server_no_context_takeover=True, client_no_context_takeover=True, mem_level=5),
        ),
        (
            b"permessage-deflate; server_max_window_bits=8",
            DeflateSettings(),
            b"permessage-deflate; server_max_window_bits=8",
            DeflateParams(server_max_window_bits=8, mem_level=5),
        ),
        (
            # malformed, unknown and duplicated params skip an offer; the next one wins
            (
                b"x-other, permessage-deflate; server_max_window_bits, permessage-deflate; server_max_window_bits=7,"
                b" permessage-deflate; client_max_window_bits=010, permessage-deflate; client_no_context_takeover=1,"
                b" permessage-deflate; foo, permessage-deflate; server_no_context_takeover; server_no_context_takeover,"
                b' permessage-deflate; server_max_window_bits="9"'
            ),
            DeflateSettings(),
            b"permessage-deflate; server_max_window_bits=9",
            DeflateParams(server_max_window_bits=9, mem_level=5),
        ),
    ],
)
def test_negotiate(value: bytes, settings: DeflateSettings, response: bytes, params: DeflateParams) -> None:
    assert negotiate(offer(value), settings) == (response, params)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"x-foo",
        b"permessage-deflate; server_max_window_bits=16",
        b"permessage-deflate; bogus",
        b"permessage-deflate; client_max_window_bits=abc",
    ],
)
def test_negotiate_nothing_acceptable(value: bytes) -> None:
    assert negotiate(offer(value)) is None


def test_negotiate_disabled_and_settings_validation() -> None:
    assert negotiate(offer(b"permessage-deflate"), DeflateSettings(enabled=False)) is None
    bad: list[dict[str, Any]] = [
        {"server_max_window_bits": 7},
        {"client_max_window_bits": 16},
        {"compress_level": 10},
        {"mem_level": 0},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            DeflateSettings(**kwargs)


def test_rfc7692_examples() -> None:
    hello = b"\xf2\x48\xcd\xc9\xc9\x07\x00"
    # 7.2.3.1 a message in one frame; 7.2.3.2 the same message twice, with context takeover
    assert events(frame(0x1, hello, rsv1=True) + frame(0x1, b"\xf2\x00\x11\x00\x00", rsv1=True), deflate=DEFLATE) == [
        TextMessage("Hello"),
        TextMessage("Hello"),
    ]
    # 7.2.3.1 the same, fragmented
    data = frame(0x1, b"\xf2\x48\xcd", rsv1=True, fin=False) + frame(0x0, b"\xc9\xc9\x07\x00")
    assert events(data, deflate=DEFLATE) == [TextMessage("Hello")]
    # 7.2.3.3 stored (uncompressed) block; 7.2.3.4 final block, then a fresh context
    stored = b"\x00\x05\x00\xfa\xff\x48\x65\x6c\x6c\x6f\x00"
    final = b"\xf3\x48\xcd\xc9\xc9\x07\x00\x00"
    assert (
        events(
            frame(0x1, stored, rsv1=True) + frame(0x1, final, rsv1=True) + frame(0x1, hello, rsv1=True), deflate=DEFLATE
        )
        == [TextMessage("Hello")] * 3
    )
    # empty compressed message, empty payload, uncompressed message on the same connection
    assert events(
        frame(0x2, b"\x00", rsv1=True) + frame(0x2, b"", rsv1=True) + frame(0x2, b"raw"), deflate=DEFLATE
    ) == [
        BytesMessage(b""),
        BytesMessage(b""),
        BytesMessage(b"raw"),
    ]


def test_invalid_compressed_data() -> None:
    assert events(frame(0x1, b"\xff\xff\xff\xff", rsv1=True), deflate=DEFLATE) == [("error", 1002)]


@pytest.mark.parametrize("takeover", [True, False])
def test_compressed_fragmented_messages_with_and_without_takeover(takeover: bool) -> None:
    params = DeflateParams(client_no_context_takeover=not takeover)
    compressor = ClientCompressor(no_context_takeover=not takeover)
    data = b""
    messages = ["héllo wörld " * 20, "héllo wörld " * 20 + "!", "x"]
    for message in messages:
        payload = compressor.compress(message.encode())
        data += (
            frame(0x1, payload[:5], rsv1=True, fin=False)
            + frame(0x9, b"p")
            + frame(0x0, payload[5:7], fin=False)
            + frame(0x0, payload[7:])
        )
    expected: list[Any] = []
    for message in messages:
        expected += [Ping(b"p"), TextMessage(message)]
    assert events(data, deflate=params) == expected


@pytest.mark.parametrize("takeover", [True, False])
def test_deflater(takeover: bool) -> None:
    deflater = Deflater(DeflateParams(server_no_context_takeover=not takeover))
    message = b"the quick brown fox jumps over the lazy dog " * 10
    first, second = deflater.compress(message), deflater.compress(message)
    assert (len(second) < len(first)) is takeover
    inflate = zlib.decompressobj(-15)
    assert inflate.decompress(first + b"\x00\x00\xff\xff") == message
    if not takeover:
        inflate = zlib.decompressobj(-15)
    assert inflate.decompress(second + b"\x00\x00\xff\xff") == message


def test_deflater_window_8_fits_a_256_byte_window() -> None:
    """zlib can't compress with wbits=-8; with 9 every match still fits in 256 bytes."""
    deflater = Deflater(DeflateParams(server_max_window_bits=8))
    words = [os.urandom(3).hex().encode() for _ in range(60)]
    message = b" ".join(words[(i * 7) % 60] for i in range(5000))
    inflate = zlib.decompressobj(-8)
    for _ in range(2):
        assert inflate.decompress(deflater.compress(message) + b"\x00\x00\xff\xff") == message


def test_client_window_8_inflates() -> None:
    agreed = negotiate(offer(b"permessage-deflate; client_max_window_bits=8"))
    assert agreed is not None and agreed[1].client_max_window_bits == 8
    message = b" ".join(os.urandom(2).hex().encode() for _ in range(3000))
    payload = ClientCompressor(wbits=9).compress(message)  # what zlib does when asked for 8
    assert events(frame(0x2, payload, rsv1=True) * 2, deflate=agreed[1]) == [BytesMessage(message)] * 2


def test_public_api() -> None:
    from heron.protocol import permessage_deflate, websocket

    for module in (websocket, permessage_deflate):
        assert module.__all__ and all(hasattr(module, name) for name in module.__all__)
        assert sorted(set(module.__all__)) == sorted(module.__all__)


def test_sent_messages_are_compressed() -> None:
    conn = WebSocketConnection(deflate=DEFLATE)
    data = conn.send_text("Hello")
    assert data == b"\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00"  # RFC 7692 7.2.3.1
    assert conn.send_text("Hello") == b"\xc1\x05\xf2\x00\x11\x00\x00"  # 7.2.3.2
    assert conn.send_ping(b"x") == b"\x89\x01x"  # control frames are never compressed


# --- against a real peer: the websockets sans-IO client ------------------------


def connect(
    extensions: Sequence[ClientPerMessageDeflateFactory] | None = None,
    settings: DeflateSettings | None = None,
    max_message_size: int = 16 * 1024 * 1024,
) -> tuple[ClientProtocol, WebSocketConnection]:
    client = ClientProtocol(
        parse_uri("ws://example.com/chat"),
        extensions=extensions,
        subprotocols=[Subprotocol("chat"), Subprotocol("v2")],
        max_size=None,
    )
    client.send_request(client.connect())
    h1 = H1Connection()
    h1.receive_data(b"".join(client.data_to_send()))
    request = h1.next_event()
    assert isinstance(request, Request) and request.upgrade == b"websocket"
    handshake = validate_handshake(request.method, request.http_version, request.headers)
    assert handshake.key is not None
    agreed = negotiate(handshake.extensions, settings)
    headers = handshake_response_headers(
        accept_key(handshake.key),
        "v2",
        agreed[0] if agreed else None,
        [(b"x-served-by", b"heron")],
        offered_subprotocols=handshake.subprotocols,
    )
    client.receive_data(
        b"HTTP/1.1 101 Switching Protocols\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    )
    [response] = client.events_received()
    assert isinstance(response, Response) and response.status_code == 101 and client.state is State.OPEN
    assert client.subprotocol == "v2"
    assert bool(client.extensions) == (agreed is not None)
    return client, WebSocketConnection(deflate=agreed[1] if agreed else None, max_message_size=max_message_size)


def to_server(client: ClientProtocol, conn: WebSocketConnection) -> list[Any]:
    conn.receive_data(b"".join(client.data_to_send()))
    out: list[Any] = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def to_client(client: ClientProtocol, data: bytes) -> list[tuple[Opcode, bytes, bool]]:
    client.receive_data(data)
    frames = client.events_received()
    assert all(isinstance(f, Frame) for f in frames)
    return [(f.opcode, bytes(f.data), f.fin) for f in frames if isinstance(f, Frame)]


@pytest.mark.parametrize("deflate", [False, True])
def test_interop_messages_both_ways(deflate: bool) -> None:
    client, conn = connect([ClientPerMessageDeflateFactory()] if deflate else None)
    big = os.urandom(70_000)
    client.send_text("héllo".encode())
    client.send_binary(big)
    client.send_text(b"frag " * 50, fin=False)
    client.send_ping(b"are you there")
    client.send_continuation("mént ".encode() * 50, fin=False)
    client.send_continuation(b"", fin=True)
    client.send_binary(b"")
    assert to_server(client, conn) == [
        TextMessage("héllo"),
        BytesMessage(big),
        Ping(b"are you there"),
        TextMessage("frag " * 50 + "mént " * 50),
        BytesMessage(b""),
    ]
    data = conn.send_text("hé" * 1000) + conn.send_bytes(big) + conn.send_ping(b"p") + conn.pong_reply(Ping(b"q"))
    assert to_client(client, data) == [
        (Opcode.TEXT, "hé".encode() * 1000, True),
        (Opcode.BINARY, big, True),
        (Opcode.PING, b"p", True),
        (Opcode.PONG, b"q", True),
    ]
    client.send_close(1000, "done")
    pong, event = to_server(client, conn)
    assert pong == Pong(b"p")  # websockets answers pings by itself
    assert event == CloseReceived(1000, "done")
    assert to_client(client, conn.close_reply(event)) == [(Opcode.CLOSE, b"\x03\xe8", True)]
    assert conn.closed and client.close_rcvd is not None and client.close_rcvd.code == 1000


@pytest.mark.parametrize(
    "factory, settings",
    [
        (ClientPerMessageDeflateFactory(), DeflateSettings()),
        (ClientPerMessageDeflateFactory(client_max_window_bits=None), DeflateSettings()),
        (
            ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True),
            DeflateSettings(),
        ),
        (
            ClientPerMessageDeflateFactory(),
            DeflateSettings(server_no_context_takeover=True, client_no_context_takeover=True),
        ),
        (ClientPerMessageDeflateFactory(server_max_window_bits=8, client_max_window_bits=9), DeflateSettings()),
        (
            ClientPerMessageDeflateFactory(server_max_window_bits=15, client_max_window_bits=15),
            DeflateSettings(server_max_window_bits=15, client_max_window_bits=15),
        ),
    ],
    ids=["default", "no-client-bits", "client-asks-no-takeover", "server-asks-no-takeover", "window-8", "window-15"],
)
def test_interop_deflate_parameters(factory: ClientPerMessageDeflateFactory, settings: DeflateSettings) -> None:
    client, conn = connect([factory], settings)
    [extension] = client.extensions
    takeover = not extension.local_no_context_takeover  # type: ignore[attr-defined]
    message = ("the quick brown fox jumps over the lazy dog; " * 40).encode()
    # client -> server: the same message three times, the middle one fragmented
    client.send_text(message)
    client.send_text(message[:100], fin=False)
    client.send_continuation(message[100:], fin=True)
    client.send_text(message)
    sent = b"".join(client.data_to_send())
    conn.receive_data(sent)
    assert [conn.next_event() for _ in range(4)] == [TextMessage(message.decode())] * 3 + [NEED_DATA]
    # server -> client: with context takeover the second copy is nearly free
    first, second = conn.send_text(message.decode()), conn.send_text(message.decode())
    assert (len(second) < len(first) / 2) is (not extension.remote_no_context_takeover)  # type: ignore[attr-defined]
    assert first[0] == second[0] == 0xC1  # FIN + RSV1 + text
    assert to_client(client, first + second) == [(Opcode.TEXT, message, True)] * 2
    assert takeover is not (factory.client_no_context_takeover or settings.client_no_context_takeover)


def test_interop_limits() -> None:
    client, conn = connect([ClientPerMessageDeflateFactory()], max_message_size=10_000)
    client.send_binary(b"\x00" * 10_001)
    with pytest.raises(WebSocketProtocolError) as info:
        to_server(client, conn)
    assert info.value.close_code == 1009
    assert to_client(client, conn.send_close(1009, str(info.value))) == [
        (Opcode.CLOSE, b"\x03\xf1" + str(info.value).encode(), True)
    ]


# --- property tests ----------------------------------------------------------

_messages = st.lists(
    st.tuples(
        st.one_of(st.text(max_size=300), st.binary(max_size=300)),
        st.lists(st.integers(0, 400), max_size=4),  # fragment boundaries
        st.lists(st.binary(max_size=125), max_size=2),  # pings between fragments
        st.binary(min_size=4, max_size=4),  # mask
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=_messages,
    compress=st.sampled_from([None, True, False]),  # no deflate / takeover / no takeover
    cuts=st.lists(st.integers(0, 5000), max_size=8),
)
def test_round_trip(
    messages: list[tuple[str | bytes, list[int], list[bytes], bytes]],
    compress: bool | None,
    cuts: list[int],
) -> None:
    params = None if compress is None else DeflateParams(client_no_context_takeover=not compress)
    compressor = ClientCompressor(no_context_takeover=not compress)
    stream = b""
    expected: list[Any] = []
    for content, bounds, pings, mask in messages:
        is_text = isinstance(content, str)
        raw = content.encode("utf-8") if isinstance(content, str) else content
        payload = compressor.compress(raw) if params is not None else raw
        points = sorted({min(b, len(payload)) for b in bounds})
        pieces = [payload[i:j] for i, j in zip([0, *points], [*points, len(payload)])]
        for index, piece in enumerate(pieces):
            first, last = index == 0, index == len(pieces) - 1
            opcode = (0x1 if is_text else 0x2) if first else 0x0
            stream += frame(opcode, piece, fin=last, rsv1=first and params is not None, mask=mask)
            if not last and pings:
                stream += frame(0x9, pings[index % len(pings)], mask=mask)
                expected.append(Ping(pings[index % len(pings)]))
        expected.append(TextMessage(content) if isinstance(content, str) else BytesMessage(content))
    conn = WebSocketConnection(deflate=params)
    got: list[Any] = []
    points = sorted({min(c, len(stream)) for c in cuts})
    for i, j in zip([0, *points], [*points, len(stream)]):
        if i == j:
            continue  # b"" would mean EOF
        conn.receive_data(stream[i:j])
        while (event := conn.next_event()) is not NEED_DATA:
            got.append(event)
    assert got == expected


_frames = st.builds(
    lambda b0, masked, payload, mask: (
        bytes((b0, (0x80 if masked else 0) | len(payload))) + (mask if masked else b"") + payload
    ),
    st.integers(0, 255),
    st.booleans(),
    st.binary(max_size=125),
    st.binary(min_size=4, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=40), _frames, st.sampled_from([text("ok"), close(1000), frame(0x1, b"a", fin=False)])
        )
    ),
    deflate=st.booleans(),
    cut=st.integers(0, 200),
)
@example(chunks=[b"\x82\xff\xff\xff\xff\xff\xff\xff\xff\xff"], deflate=False, cut=0)
@example(chunks=[b"\xc1\x85" + MASK + b"\xff" * 5], deflate=True, cut=3)
def test_arbitrary_bytes_only_raise_protocol_errors(chunks: list[bytes], deflate: bool, cut: int) -> None:
    data = b"".join(chunks)
    conn = WebSocketConnection(max_message_size=4096, deflate=DEFLATE if deflate else None)
    for piece in [p for p in (data[:cut], data[cut:]) if p] + [b""]:  # b"" is EOF
        conn.receive_data(piece)
        try:
            while (event := conn.next_event()) is not NEED_DATA:
                assert isinstance(event, (TextMessage, BytesMessage, Ping, Pong, CloseReceived))
        except WebSocketProtocolError as exc:
            assert exc.close_code in (1002, 1007, 1009)
            return
