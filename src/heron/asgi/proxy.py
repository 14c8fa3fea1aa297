"""The client and scheme a trusted reverse proxy reports (``--proxy-headers``).

Behind nginx or HAProxy every connection comes from the proxy, so the scope's
``client`` and ``scheme`` would describe the proxy, not the user. When the
connection's peer is in ``--forwarded-allow-ips`` (default ``127.0.0.1,::1``,
or ``$FORWARDED_ALLOW_IPS``), heron takes them from the request instead:

* ``X-Forwarded-For``: all such fields joined as one list, read from the
  right (the hop nearest to heron) leftwards; the first address that is not a
  trusted proxy is the client. If every hop is trusted, the leftmost one is.
  An entry may carry a port (``1.2.3.4:5678``, ``[2001:db8::1]:443``); without
  one the client port is 0.
* ``X-Forwarded-Proto``: the last list element, if it is ``http``, ``https``,
  ``ws`` or ``wss``; it sets ``scheme`` (``https`` becomes ``wss`` in a
  ``websocket`` scope and ``wss`` becomes ``https`` in an ``http`` one).

* ``Forwarded`` (RFC 7239): its elements (all such fields joined) are read
  by the same rule, from the right, by their ``for=`` node (``192.0.2.7``,
  ``"[2001:db8::1]:443"``, ``"192.0.2.7:80"``); the chosen element's ``proto=``,
  if any, sets the scheme. A node that is no address (``unknown``, an
  obfuscated ``_name``) is never trusted: when it is chosen the client is
  unknown (``None``). When a request has a ``Forwarded`` field, the
  ``X-Forwarded-*`` fields are not looked at: one source, never a mix.

Anything else in those fields is ignored, never an error: a proxy's headers are
not the client's fault. Untrusted peers' headers are passed to the app as they
are and change nothing. ``*`` trusts every peer, UNIX-socket peers included
(a UNIX socket has no address to list).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HTTP_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_FORWARDED = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"))
_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


class ProxyTrust:
    """The parsed ``--forwarded-allow-ips`` list."""

    def __init__(self, allow: str) -> None:
        self.everyone = False
        self.networks: list[_Network] = []
        for item in (part.strip() for part in allow.split(",")):
            if not item:
                continue
            if item == "*":
                self.everyone = True
                continue
            # ValueError for anything else (Config.validate has refused it already)
            self.networks.append(ipaddress.ip_network(item, strict=False))

    def trusts(self, host: str | None) -> bool:
        if self.everyone:
            return True
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def trusts_peer(self, client: tuple[str, int] | None) -> bool:
        """Should this connection's proxy headers be applied at all?"""
        return self.trusts(client[0] if client is not None else None)

    def resolve(
        self, headers: Iterable[tuple[bytes, bytes]], client: tuple[str, int] | None, scheme: str
    ) -> tuple[tuple[str, int] | None, str]:
        """(client, scheme) for one request from a trusted peer."""
        # Per request behind a proxy (and for every local request, trusted by
        # default): most have neither field, so look for them first, cheaply.
        for name, _ in headers:
            if name in _FORWARDED:
                return self._resolve(headers, client, scheme)
        return client, scheme

    def _resolve(
        self, headers: Iterable[tuple[bytes, bytes]], client: tuple[str, int] | None, scheme: str
    ) -> tuple[tuple[str, int] | None, str]:
        forwarded_for: list[bytes] = []
        proto = None
        forwarded: list[bytes] = []
        for name, value in headers:
            if name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name == b"x-forwarded-proto":
                proto = value
            elif name == b"forwarded":
                forwarded.append(value)
        if forwarded:
            return self._resolve_rfc7239(b",".join(forwarded).decode("latin-1"), client, scheme)
        if proto is not None:
            candidate = proto.decode("latin-1").rsplit(",", 1)[-1].strip().lower()
            table = _WS_SCHEMES if scheme in ("ws", "wss") else _HTTP_SCHEMES
            scheme = table.get(candidate, scheme)
        if forwarded_for:
            hops = [hop.strip() for hop in b",".join(forwarded_for).decode("latin-1").split(",")]
            hops = [hop for hop in hops if hop]
            chosen = None
            for hop in reversed(hops):
                chosen = _split_host_port(hop)
                if not self.trusts(chosen[0]):
                    break
            if chosen is not None:
                client = chosen
        return client, scheme

    def _resolve_rfc7239(
        self, value: str, client: tuple[str, int] | None, scheme: str
    ) -> tuple[tuple[str, int] | None, str]:
        chosen: dict[str, str] | None = None
        node: tuple[str, int] | None = None
        for element in reversed(_forwarded_elements(value)):
            if "for" not in element:
                continue  # an element without a client says nothing about who it is
            chosen = element
            node = _forwarded_node(element["for"])
            if node is None or not self.trusts(node[0]):
                break
        if chosen is None:
            return client, scheme
        proto = chosen.get("proto")
        if proto is not None:
            table = _WS_SCHEMES if scheme in ("ws", "wss") else _HTTP_SCHEMES
            scheme = table.get(proto.lower(), scheme)
        return node, scheme


def _forwarded_elements(value: str) -> list[dict[str, str]]:
    """``for=a;proto=https, for="[::1]:80"`` -> [{"for": "a", "proto": "https"}, {"for": "[::1]:80"}].

    Parameter names are case-insensitive; a quoted value may hold ``,`` and ``;``
    and backslash escapes. A malformed pair is skipped, not the whole field.
    """
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    i, n = 0, len(value)
    while i < n:
        char = value[i]
        if char in " \t;":
            i += 1
            continue
        if char == ",":
            elements.append(current)
            current = {}
            i += 1
            continue
        equals = value.find("=", i)
        if equals < 0:
            break
        name = value[i:equals].strip().lower()
        i = equals + 1
        if i < n and value[i] == '"':
            chars: list[str] = []
            i += 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            i += 1  # the closing quote
            text = "".join(chars)
        else:
            end = i
            while end < n and value[end] not in ",;":
                end += 1
            text = value[i:end].strip()
            i = end
        if name and name not in current:
            current[name] = text
    elements.append(current)
    return elements


def _forwarded_node(node: str) -> tuple[str, int] | None:
    """A ``for=`` node as (address, port or 0); ``None`` for ``unknown`` and obfuscated names."""
    if node.startswith("["):
        end = node.find("]")
        host, rest = (node[1:end], node[end + 1 :]) if end > 0 else ("", "")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = node.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if node.startswith("[") != (address.version == 6):
        return None  # RFC 7239: an IPv6 node is bracketed, an IPv4 one is not
    return str(address), int(port) if port.isdigit() and len(port) <= 5 and int(port) < 65536 else 0


def _split_host_port(hop: str) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]:80`` -> (host, port or 0)."""
    if hop.startswith("["):
        end = hop.find("]")
        if end > 0:
            host, rest = hop[1:end], hop[end + 1 :]
            port = rest[1:] if rest.startswith(":") else ""
            return host, int(port) if port.isdigit() and int(port) < 65536 else 0
        return hop, 0
    if hop.count(":") == 1:
        host, _, port = hop.partition(":")
        return host, int(port) if port.isdigit() and int(port) < 65536 else 0
    return hop, 0
