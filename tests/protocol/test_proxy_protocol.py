"""PROXY protocol v1/v2 headers, bytes in, addresses out (heron.protocol.proxy)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from heron.protocol.proxy import MAX_V2_BODY, V2_SIGNATURE, ProxyHeader, ProxyProtocolError, parse_proxy_header

REST = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


def v2(command: int = 1, family: int = 1, transport: int = 1, body: bytes = b"", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return V2_SIGNATURE + bytes([0x20 | command, family << 4 | transport]) + struct.pack("!H", size) + body


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + struct.pack("!HH", sport, dport)


def assert_whole_and_split(raw: bytes, expected: ProxyHeader) -> None:
    """Whole (with the client's first bytes behind it) and cut at every byte: None until complete."""
    assert parse_proxy_header(raw + REST) == expected
    assert expected.length == len(raw)
    for cut in range(len(raw)):
        assert parse_proxy_header(raw[:cut]) is None, cut


# --- version 1 -------------------------------------------------------------------------------


def test_v1_tcp4() -> None:
    raw = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"
    assert_whole_and_split(raw, ProxyHeader(1, ("192.0.2.7", 56324), ("198.51.100.1", 443), len(raw)))


def test_v1_tcp6() -> None:
    raw = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n"
    assert_whole_and_split(raw, ProxyHeader(1, ("2001:db8::7", 65535), ("2001:db8::1", 0), len(raw)))


def test_v1_unknown_ignores_the_rest_of_the_line() -> None:
    raw = b"PROXY UNKNOWN ffff:f...f:ffff 65535 65535\r\n"
    assert_whole_and_split(raw, ProxyHeader(1, None, None, len(raw)))
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n") == ProxyHeader(1, None, None, 15)


def test_v1_longest_header_fits_and_longer_is_refused() -> None:
    longest = (
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
    )
    assert len(longest) == 104
    assert parse_proxy_header(longest) is not None
    with pytest.raises(ProxyProtocolError, match="107"):
        parse_proxy_header(b"PROXY UNKNOWN " + b"x" * 100)


@pytest.mark.parametrize(
    "raw",
    [
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",  # a field missing
        b"PROXY TCP4 192.0.2.7  198.51.100.1 56324 443\r\n",  # two spaces
        b"PROXY TCP5 192.0.2.7 198.51.100.1 56324 443\r\n",
        b"PROXY TCP4 2001:db8::7 198.51.100.1 56324 443\r\n",  # IPv6 under TCP4
        b"PROXY TCP6 192.0.2.7 2001:db8::1 56324 443\r\n",
        b"PROXY TCP4 192.0.2.700 198.51.100.1 56324 443\r\n",
        b"PROXY TCP4 192.0.2.07 198.51.100.1 56324 443\r\n",  # leading zero: ambiguous (octal?)
        b"PROXY TCP4 example.org 198.51.100.1 56324 443\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 0443 443\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 +443 443\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 \xd9\xa1 443\r\n",  # a non-ASCII digit
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n",  # LF alone
        b"proxy TCP4 192.0.2.7 198.51.100.1 56324 443\r\n",
        b"PROXYTCP4 192.0.2.7 198.51.100.1 56324 443\r\n",
    ],
)
def test_v1_malformed(raw: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(raw)


# --- version 2 -------------------------------------------------------------------------------


def test_v2_ipv4() -> None:
    raw = v2(body=inet("192.0.2.7", "198.51.100.1", 56324, 443))
    assert_whole_and_split(raw, ProxyHeader(2, ("192.0.2.7", 56324), ("198.51.100.1", 443), 28))


def test_v2_ipv6_with_tlvs_skipped() -> None:
    tlvs = b"\x01\x00\x02h2" + b"\xea\x00\x05vpc-1"  # ALPN, then AWS's endpoint id
    raw = v2(family=2, body=inet("2001:db8::7", "2001:db8::1", 1234, 8443) + tlvs)
    assert_whole_and_split(raw, ProxyHeader(2, ("2001:db8::7", 1234), ("2001:db8::1", 8443), len(raw)))


@pytest.mark.parametrize(
    "raw",
    [
        v2(command=0, family=1, body=inet("192.0.2.7", "198.51.100.1", 1, 2)),  # LOCAL: addresses ignored
        v2(command=0, family=0, transport=0),
        v2(command=1, family=0, transport=0, body=b"\x00" * 8),  # UNSPEC
        v2(command=1, family=3, body=b"/run/client.sock".ljust(108, b"\0") + b"/run/heron.sock".ljust(108, b"\0")),
    ],
    ids=["local", "local-unspec", "proxy-unspec", "unix"],
)
def test_v2_without_tcp_addresses(raw: bytes) -> None:
    assert_whole_and_split(raw, ProxyHeader(2, None, None, len(raw)))


@pytest.mark.parametrize(
    "raw, message",
    [
        (V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\0" * 12, "version 1"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\0" * 12, "command 2"),
        (v2(family=4, body=b"\0" * 12), "family"),
        (v2(transport=3, body=b"\0" * 12), "family"),
        (v2(transport=2, body=inet("192.0.2.7", "198.51.100.1", 1, 2)), "datagram"),
        (v2(body=b"\0" * 11), "truncated"),
        (v2(family=2, body=b"\0" * 35), "truncated"),
        (v2(family=3, body=b"\0" * 200), "truncated"),
        (v2(length=MAX_V2_BODY + 1), "more than"),
        (b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x00", "not a PROXY"),
    ],
)
def test_v2_malformed(raw: bytes, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        parse_proxy_header(raw)


def test_v2_largest_allowed_body_is_waited_for() -> None:
    raw = v2(
        body=inet("192.0.2.7", "198.51.100.1", 1, 2)
        + b"\x04"
        + struct.pack("!H", MAX_V2_BODY - 15)
        + b"\0" * (MAX_V2_BODY - 15)
    )
    assert parse_proxy_header(raw[:-1]) is None
    assert parse_proxy_header(raw) == ProxyHeader(2, ("192.0.2.7", 1), ("198.51.100.1", 2), 16 + MAX_V2_BODY)


# --- neither ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00", b"PRI * HTTP/2.0\r\n", b"\r\n\r\nGET"])
def test_a_connection_without_a_header_is_refused(raw: bytes) -> None:
    with pytest.raises(ProxyProtocolError, match="not a PROXY"):
        parse_proxy_header(raw)


def test_nothing_yet() -> None:
    assert parse_proxy_header(b"") is None
