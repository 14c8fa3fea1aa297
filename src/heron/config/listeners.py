"""Where heron listens: a :class:`Listener` per address, parsed from the text
``--bind`` and ``--metrics-bind`` take."""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

from .checks import fail


class Listener(NamedTuple):
    """One address to listen on: kind is ``tcp``, ``unix`` or ``fd`` (``udp``: a ``--quic-bind`` address)."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_bind(text: str, setting: str = "bind") -> Listener:
    """Parse ``HOST:PORT``, ``[IPv6]:PORT``, ``HOST`` (port 8000), ``unix:PATH`` or ``fd://N``."""
    allowed = "HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"
    if not isinstance(text, str) or not text:
        fail(setting, text, allowed)
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            fail(setting, text, allowed)
        return Listener("unix", path=path)
    if text.startswith("fd://"):
        number = text[5:]
        if not number.isdigit():
            fail(setting, text, allowed)
        return Listener("fd", fd=int(number))
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or ":" not in host or (rest and not rest.startswith(":")):
            fail(setting, text, allowed)
        port_text = rest[1:] if rest else "8000"
    elif text.count(":") > 1:
        fail(setting, text, allowed + " (put an IPv6 address in brackets)")
    else:
        host, _, port_text = text.partition(":")
        port_text = port_text or "8000"
        if not host:
            fail(setting, text, allowed)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        fail(setting, text, allowed + " with a port between 0 and 65535")
    return Listener("tcp", host=host, port=int(port_text))


def check_metrics_bind(text: str) -> None:
    """``metrics_bind``: a ``--bind`` address, but not an inherited descriptor."""
    if parse_bind(text, "metrics_bind").kind == "fd":
        fail("metrics_bind", text, "HOST:PORT, [IPv6]:PORT or unix:PATH")


def parse_quic_bind(text: str) -> Listener:
    """A ``--quic-bind`` address: ``HOST:PORT`` or ``[IPv6]:PORT`` (UDP)."""
    allowed = "HOST:PORT or [IPv6]:PORT (a UDP address)"
    if not isinstance(text, str) or text.startswith(("unix:", "fd://")) or text.rpartition(":")[1] != ":":
        fail("quic_bind", text, allowed)
    listener = parse_bind(text, "quic_bind")
    return listener._replace(kind="udp")


def check_quic_bind(texts: tuple[str, ...], tls: bool, cert_reqs: int) -> None:
    """``quic_bind``: UDP addresses, and TLS configured (QUIC always runs TLS 1.3)
    without client certificates (not offered over QUIC yet); aioquic installed."""
    for text in texts:
        parse_quic_bind(text)
    if texts and not tls:
        fail("quic_bind", ",".join(texts), "--ssl-certfile and --ssl-keyfile too (QUIC always uses TLS 1.3)")
    if texts and cert_reqs:
        fail("quic_bind", ",".join(texts), "no --ssl-cert-reqs: client certificates are not supported over QUIC")
    if texts and importlib.util.find_spec("aioquic") is None:
        fail("quic_bind", ",".join(texts), "the aioquic package installed: pip install 'heron[http3]'")
