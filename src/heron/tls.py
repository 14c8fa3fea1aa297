"""TLS: checking the ``ssl_*`` settings, building the server's SSLContext, and
the ASGI ``tls`` scope extension.

* :func:`check_settings` is called by :meth:`heron.config.Config.validate`:
  cheap checks (files exist, settings that need each other) that name the
  setting; a failure is a :class:`~heron.errors.SettingError` (exit 2).
* :func:`create_ssl_context` runs at start-up (it decrypts the key); a failure
  is a :class:`TLSSetupError` with one clear line (exit 3).
* :func:`tls_extension` is called once per TLS connection, after the
  handshake; every request (or stream) on it shares the dict it returns.

The context always requires TLS >= 1.2, disables TLS compression and
renegotiation, and offers ALPN ``h2`` (when HTTP/2 is on) and ``http/1.1``.
"""

from __future__ import annotations

import os
import re
import ssl
from typing import Any, Protocol

from .errors import SettingError

__all__ = [
    "TLSSetupError",
    "check_settings",
    "create_ssl_context",
    "enabled",
    "tls_extension",
    "quic_tls_extension",
    "alpn_protocols",
]


class TLSSettings(Protocol):
    """The settings this module reads (a :class:`heron.config.Config` has them)."""

    @property
    def ssl_certfile(self) -> str | None: ...
    @property
    def ssl_keyfile(self) -> str | None: ...
    @property
    def ssl_keyfile_password(self) -> str | None: ...
    @property
    def ssl_ca_certs(self) -> str | None: ...
    @property
    def ssl_cert_reqs(self) -> int: ...
    @property
    def ssl_ciphers(self) -> str | None: ...
    @property
    def ssl_version(self) -> int: ...
    @property
    def http2(self) -> bool: ...


#: ssl_version values heron accepts: any TLS >= 1.2 (PROTOCOL_TLS, PROTOCOL_TLS_SERVER), or TLS 1.2 only.
_PROTOCOL_TLS = int(ssl.PROTOCOL_TLS)  # deprecated alias of the negotiating method (uvicorn's old default)
_PROTOCOL_TLS_SERVER = int(ssl.PROTOCOL_TLS_SERVER)
_PROTOCOL_TLSv1_2 = 5  # ssl.PROTOCOL_TLSv1_2 (deprecated, so not looked up)
_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)

# RFC 4514 names of subject attributes (Python reports OpenSSL's long names).
# The nine short names RFC 4514 defines, then dotted OIDs for other common ones.
_RFC4514_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
    "emailAddress": "1.2.840.113549.1.9.1",
    "serialNumber": "2.5.4.5",
    "surname": "2.5.4.4",
    "givenName": "2.5.4.42",
    "title": "2.5.4.12",
    "initials": "2.5.4.43",
    "generationQualifier": "2.5.4.44",
    "dnQualifier": "2.5.4.46",
    "pseudonym": "2.5.4.65",
    "postalCode": "2.5.4.17",
    "businessCategory": "2.5.4.15",
}


class TLSSetupError(Exception):
    """The certificate, key or CA file could not be loaded (start-up failure)."""


class _ServerContext(ssl.SSLContext):
    """The server's SSLContext, carrying what :func:`tls_extension` reports."""

    server_cert: str | None
    cipher_ids: dict[str, int]


def enabled(config: TLSSettings) -> bool:
    """TLS is on when a certificate or key file is configured."""
    return bool(config.ssl_certfile or config.ssl_keyfile)


def alpn_protocols(config: TLSSettings) -> list[str]:
    if config.http2:
        return ["h2", "http/1.1"]
    return ["http/1.1"]


# --- settings -----------------------------------------------------------------------------


def check_settings(config: TLSSettings) -> None:
    """Validate the ``ssl_*`` settings without loading keys; raise SettingError naming one."""
    if config.ssl_version not in (_PROTOCOL_TLS, _PROTOCOL_TLS_SERVER, _PROTOCOL_TLSv1_2):
        raise SettingError(
            f"ssl_version: {config.ssl_version!r} is not valid; expected {_PROTOCOL_TLS_SERVER} (PROTOCOL_TLS_SERVER: "
            f"TLS 1.2 or 1.3), {_PROTOCOL_TLS} (PROTOCOL_TLS: the same) or {_PROTOCOL_TLSv1_2} (TLS 1.2 only); "
            "heron never speaks TLS below 1.2"
        )
    if config.ssl_cert_reqs not in (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED):
        raise SettingError(
            f"ssl_cert_reqs: {config.ssl_cert_reqs!r} is not valid; expected 0 (no client certificate), "
            "1 (optional) or 2 (required)"
        )
    if config.ssl_ciphers is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise SettingError(
                f"ssl_ciphers: {config.ssl_ciphers!r} is not valid; expected an OpenSSL cipher list that selects "
                "at least one cipher"
            ) from None
    if not enabled(config):
        for name, default in (
            ("ssl_keyfile_password", None),
            ("ssl_ca_certs", None),
            ("ssl_cert_reqs", ssl.CERT_NONE),
        ):
            if getattr(config, name) != default:
                raise SettingError(f"{name}: set, but TLS is off (set ssl_certfile and ssl_keyfile to turn it on)")
        return
    for name in ("ssl_certfile", "ssl_keyfile", "ssl_ca_certs"):
        path = getattr(config, name)
        if path is not None:
            _check_file(name, path)
    if not config.ssl_certfile:
        raise SettingError("ssl_certfile: not set, but ssl_keyfile is; TLS needs both")
    if not config.ssl_keyfile and not _holds_private_key(config.ssl_certfile):
        raise SettingError(
            f"ssl_keyfile: not set, and ssl_certfile {config.ssl_certfile!r} holds no private key; TLS needs both"
        )
    if config.ssl_cert_reqs != ssl.CERT_NONE and not config.ssl_ca_certs:
        raise SettingError(
            f"ssl_ca_certs: not set, but ssl_cert_reqs is {config.ssl_cert_reqs}; client certificates are "
            "verified against the CA certificates in ssl_ca_certs"
        )


def _check_file(name: str, path: str) -> None:
    if not os.path.exists(path):
        raise SettingError(f"{name}: {path!r} does not exist")
    if not os.path.isfile(path):
        raise SettingError(f"{name}: {path!r} is not a file")
    if not os.access(path, os.R_OK):
        raise SettingError(f"{name}: {path!r} is not readable")


def _holds_private_key(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"PRIVATE KEY-----" in f.read()
    except OSError:
        return False


# --- the SSLContext -----------------------------------------------------------------------


def create_ssl_context(config: TLSSettings) -> ssl.SSLContext:
    """The server's SSLContext; raise TLSSetupError with one clear line if a file won't load."""
    context = _ServerContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.ssl_version == _PROTOCOL_TLSv1_2:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    if config.ssl_ciphers is not None:
        context.set_ciphers(config.ssl_ciphers)
    certfile = config.ssl_certfile
    keyfile = config.ssl_keyfile
    assert certfile, "create_ssl_context() needs ssl_certfile (Config.validate() checks it)"
    _load_cert_chain(context, certfile, keyfile, config.ssl_keyfile_password)
    if config.ssl_ca_certs:
        try:
            context.load_verify_locations(cafile=config.ssl_ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise TLSSetupError(
                f"ssl_ca_certs: could not load CA certificates from {config.ssl_ca_certs!r} ({_reason(exc)})"
            ) from None
    context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    context.set_alpn_protocols(alpn_protocols(config))
    context.server_cert = _first_certificate(certfile)
    context.cipher_ids = {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}
    return context


#: what OpenSSL says when the key is not the certificate's: the same type but another key
#: (values mismatch), or another type (an RSA key for an EC certificate: "no certificate
#: assigned" to the key's type)
_MISMATCH_REASONS = ("KEY_VALUES_MISMATCH", "KEY_TYPE_MISMATCH", "NO_CERTIFICATE_ASSIGNED")


def _load_cert_chain(context: ssl.SSLContext, certfile: str, keyfile: str | None, password: str | None) -> None:
    asked = []

    def give_password() -> str:
        # never OpenSSL's interactive prompt: a server must not wait on a terminal
        asked.append(True)
        if password is None:
            raise TLSSetupError(f"ssl_keyfile {keyfile or certfile!r} is encrypted: set ssl_keyfile_password")
        return password

    try:
        context.load_cert_chain(certfile, keyfile, password=give_password)
    except TLSSetupError:
        raise
    except (ssl.SSLError, OSError) as exc:
        reason = _reason(exc)
        if asked:
            message = f"ssl_keyfile_password: wrong password for ssl_keyfile {keyfile or certfile!r}"
        elif _first_certificate(certfile) is None:
            message = f"ssl_certfile {certfile!r} holds no PEM certificate"
        elif getattr(exc, "reason", None) in _MISMATCH_REASONS:
            message = f"ssl_keyfile {keyfile!r} is not the key of the certificate in ssl_certfile {certfile!r}"
        else:
            message = f"ssl_keyfile {keyfile or certfile!r} holds no usable PEM private key ({reason})"
        raise TLSSetupError(message) from None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason).replace("_", " ").lower()
    return getattr(exc, "strerror", None) or str(exc)


def _first_certificate(path: str) -> str | None:
    """The first certificate in a PEM file, normalised (None if there is none)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            match = _PEM_CERT.search(f.read())
        if match is None:
            return None
        return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(match.group(0)))
    except (OSError, ValueError):
        return None


# --- the ASGI tls extension ------------------------------------------------------------------


def tls_extension(ssl_object: Any) -> dict[str, Any]:
    """``scope["extensions"]["tls"]`` for a connection (asgiref TLS extension 0.2).

    Call once per connection, after the handshake; share the dict between
    the connection's scopes.
    """
    context = ssl_object.context
    cipher = ssl_object.cipher()
    chain: list[str] = []
    name = None
    if context.verify_mode != ssl.CERT_NONE:
        der = ssl_object.getpeercert(binary_form=True)
        if der is not None:
            chain = _client_chain(ssl_object, der)
            name = rfc4514_name(ssl_object.getpeercert().get("subject", ()))
    return {
        "server_cert": getattr(context, "server_cert", None),
        "client_cert_chain": chain,
        "client_cert_name": name,
        # OpenSSL refuses the handshake when a client certificate fails verification
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version()),
        "cipher_suite": getattr(context, "cipher_ids", {}).get(cipher[0]) if cipher else None,
    }


def quic_tls_extension(server_cert: str | None, cipher_suite: int | None) -> dict[str, Any]:
    """:func:`tls_extension` for a QUIC connection (HTTP/3): always TLS 1.3, and no
    client certificate (heron asks for none over QUIC). ``server_cert`` is the PEM
    of the configured certificate, ``cipher_suite`` the negotiated one's id."""
    return {
        "server_cert": server_cert,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS["TLSv1.3"],
        "cipher_suite": cipher_suite,
    }


def _client_chain(ssl_object: Any, der: bytes) -> list[str]:
    """The client's certificate, then the intermediates it sent."""
    # public on Python >= 3.13; on the internal object since 3.10
    get_chain = getattr(ssl_object, "get_unverified_chain", None) or getattr(
        getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None
    )
    if get_chain is not None:
        try:
            pems = [cert.public_bytes() for cert in get_chain() or ()]
        except (AttributeError, TypeError, ValueError, ssl.SSLError):
            pems = []
        if pems and all(isinstance(pem, str) for pem in pems):
            return pems
    return [ssl.DER_cert_to_PEM_cert(der)]


def rfc4514_name(subject: Any) -> str | None:
    """RFC 4514 string of a subject from ``SSLObject.getpeercert()`` (most specific RDN first)."""
    if not subject:
        return None
    rdns = []
    for rdn in reversed(subject):
        rdns.append("+".join(f"{_RFC4514_NAMES.get(key, key)}={_escape_dn_value(value)}" for key, value in rdn))
    return ",".join(rdns)


def _escape_dn_value(value: str) -> str:
    out = []
    for char in value:
        if char in '"+,;<>\\':
            out.append("\\" + char)
        elif char == "\x00":
            out.append("\\00")
        else:
            out.append(char)
    if out and out[0] in ("#", " "):
        out[0] = "\\" + out[0]
    if out and out[-1] == " ":
        out[-1] = "\\ "
    return "".join(out)
