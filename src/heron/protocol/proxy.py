"""The PROXY protocol, versions 1 and 2 (HAProxy's specification), sans-IO.

A TCP load balancer (HAProxy ``send-proxy``/``send-proxy-v2``, AWS NLB, many
Kubernetes ingresses) opens each connection with one header that names the
client it accepted, before any byte of the client's own (and before TLS).
:func:`parse_proxy_header` reads that header from the first bytes of a
connection: it returns ``None`` while the header is incomplete, a
:class:`ProxyHeader` once it is whole, and raises :class:`ProxyProtocolError`
for anything else. It never reads more than the header's own bytes, and never
waits for more than :data:`MAX_V1` (version 1) or ``16 +`` :data:`MAX_V2_BODY`
(version 2) bytes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["MAX_V1", "MAX_V2_BODY", "V2_SIGNATURE", "ProxyHeader", "ProxyProtocolError", "parse_proxy_header"]

#: a version 1 header is at most 107 bytes, CRLF included (the specification's bound)
MAX_V1 = 107
#: version 2: the 16-byte preamble, then this many bytes at most of addresses and TLVs
#: (the format allows 65535; TLVs that proxies send, e.g. AWS's endpoint id or
#: HAProxy's TLS facts, fit easily: more is refused rather than buffered)
MAX_V2_BODY = 4096
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "

Address = tuple[str, int]


class ProxyProtocolError(ValueError):
    """The connection does not start with a valid PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    """What the header said. ``client``/``server`` are ``None`` when the proxy sent
    no addresses (version 1 ``UNKNOWN``, version 2 ``LOCAL`` or an unspecified
    family, e.g. its own health checks): the connection's own addresses stand."""

    version: int
    client: Address | None
    server: Address | None
    #: bytes of the connection the header took; what follows is the client's
    length: int


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The PROXY header at the start of ``data``; ``None``: not all of it has arrived."""
    if data[:1] == b"P":
        if not _V1_PREFIX.startswith(data[:6]):
            raise ProxyProtocolError("not a PROXY protocol header")
        return _parse_v1(data)
    if data[:1] == b"\r":
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyProtocolError("not a PROXY protocol header")
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyProtocolError("not a PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, MAX_V1)
    if end < 0:
        if len(data) >= MAX_V1:
            raise ProxyProtocolError("PROXY v1 header longer than 107 bytes")
        if b"\n" in data:
            raise ProxyProtocolError("PROXY v1 header not ended by CRLF")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 header is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, None, None, end + 2)  # the rest of the line is to be ignored
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 header {line!r:.120}")
    family = 4 if parts[1] == "TCP4" else 6
    client = (_v1_address(parts[2], family), _v1_port(parts[4]))
    server = (_v1_address(parts[3], family), _v1_port(parts[5]))
    return ProxyHeader(1, client, server, end + 2)


def _v1_address(text: str, family: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"invalid address {text!r:.60} in PROXY v1 header") from None
    if address.version != family:
        raise ProxyProtocolError(f"address {text!r} is not IPv{family} in PROXY v1 header")
    return str(address)


def _v1_port(text: str) -> int:
    # decimal 0..65535, without sign, spaces or leading zeros
    if not (text.isdigit() and text.isascii()) or len(text) > 5 or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError(f"invalid port {text!r:.20} in PROXY v1 header")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"invalid port {text!r} in PROXY v1 header")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        return None
    version_command, family_transport = data[12], data[13]
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"PROXY protocol version {version_command >> 4} (only 1 and 2 exist)")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyProtocolError(f"unknown PROXY v2 command {command}")
    length = int.from_bytes(data[14:16], "big")
    if length > MAX_V2_BODY:
        raise ProxyProtocolError(f"PROXY v2 header of {length} bytes (more than {MAX_V2_BODY})")
    if len(data) < 16 + length:
        return None
    total = 16 + length
    if command == 0:  # LOCAL: the proxy's own connection (a health check); addresses ignored
        return ProxyHeader(2, None, None, total)
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family > 3 or transport > 2:
        raise ProxyProtocolError(f"unknown PROXY v2 address family/protocol 0x{family_transport:02x}")
    if transport == 2:
        raise ProxyProtocolError("PROXY v2 header for a datagram (UDP) connection on a TCP listener")
    body = data[16:total]
    if family == 1:  # AF_INET: source address, destination address, source port, destination port
        if length < 12:
            raise ProxyProtocolError("PROXY v2 IPv4 addresses truncated")
        client = (str(ipaddress.IPv4Address(body[0:4])), int.from_bytes(body[8:10], "big"))
        server = (str(ipaddress.IPv4Address(body[4:8])), int.from_bytes(body[10:12], "big"))
        return ProxyHeader(2, client, server, total)
    if family == 2:  # AF_INET6
        if length < 36:
            raise ProxyProtocolError("PROXY v2 IPv6 addresses truncated")
        client = (str(ipaddress.IPv6Address(body[0:16])), int.from_bytes(body[32:34], "big"))
        server = (str(ipaddress.IPv6Address(body[16:32])), int.from_bytes(body[34:36], "big"))
        return ProxyHeader(2, client, server, total)
    if family == 3 and length < 216:  # AF_UNIX: two 108-byte paths
        raise ProxyProtocolError("PROXY v2 unix addresses truncated")
    # AF_UNSPEC, or a unix-socket client: no TCP address to report; the connection's own stand
    return ProxyHeader(2, None, None, total)
