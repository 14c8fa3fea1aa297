"""TLS through real sockets on 127.0.0.1, with trustme certificates.

Clients: raw ``ssl`` sockets (to pin TLS versions and compare ciphers), httpx,
curl, the ``websockets`` client over wss, the ``heron`` command, and a headless
Chromium page. Covers the ``ssl_*`` settings, mutual TLS, encrypted keys, ALPN
and the ASGI ``tls`` scope extension.

HTTP/2 (ALPN ``h2``) is tested once heron has an HTTP/2 protocol
(``heron.transport.http2.H2Protocol`` and the ``http2`` setting); until then
those tests are skipped, the ALPN test checks that ``h2`` is *not* offered,
and the Chromium page is checked over HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect as ws_connect

from heron.config import Config, SettingError
from heron.tls import TLSSetupError, create_ssl_context, rfc4514_name

from ..conftest import chromium_command, need_program, read_response, serve

pytestmark = pytest.mark.timeout(60)

LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
KEYS = {"server_cert", "client_cert_chain", "client_cert_name", "client_cert_error", "tls_version", "cipher_suite"}


# --- certificates ------------------------------------------------------------------------------


@dataclasses.dataclass
class Certs:
    dir: Path
    ca: trustme.CA
    ca_file: str
    server: trustme.LeafCert
    certfile: str
    keyfile: str
    encrypted_keyfile: str  # password "s3cret"
    combined_file: str  # certificate and key in one file
    client: trustme.LeafCert  # issued by an intermediate CA: it sends a chain of two
    client_certfile: str
    client_keyfile: str
    client_name: str  # RFC 4514, as cryptography writes it

    def server_pem(self) -> str:
        return self.server.cert_chain_pems[0].bytes().decode()

    def client_context(self, *, cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if cert:
            self.client.configure_cert(context)
        return context

    def tls(self, **settings: Any) -> dict[str, Any]:
        return {"ssl_certfile": self.certfile, "ssl_keyfile": self.keyfile, **settings}


@pytest.fixture(scope="module")
def certs() -> Iterator[Certs]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.create_child_ca().issue_cert("alice@example.org", common_name="alice")
        ca.cert_pem.write_to_path(str(d / "ca.pem"))
        server.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
        server.private_key_pem.write_to_path(str(d / "server.key"))
        key = serialization.load_pem_private_key(server.private_key_pem.bytes(), None)
        (d / "server-encrypted.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"s3cret"),
            )
        )
        (d / "combined.pem").write_bytes(server.private_key_pem.bytes() + server.cert_chain_pems[0].bytes())
        (d / "client.pem").write_bytes(b"".join(pem.bytes() for pem in client.cert_chain_pems))
        client.private_key_pem.write_to_path(str(d / "client.key"))
        name = x509.load_pem_x509_certificate(client.cert_chain_pems[0].bytes()).subject.rfc4514_string()
        yield Certs(
            d,
            ca,
            str(d / "ca.pem"),
            server,
            str(d / "server.pem"),
            str(d / "server.key"),
            str(d / "server-encrypted.key"),
            str(d / "combined.pem"),
            client,
            str(d / "client.pem"),
            str(d / "client.key"),
            name,
        )


# --- apps and clients --------------------------------------------------------------------------


def make_app(seen: list[dict[str, Any]]) -> Any:
    """Answers (and records) what the scope says about the connection."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        extensions = scope["extensions"]
        tls = extensions.get("tls")
        seen.append(scope)
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            message = await receive()
            info = {"scheme": scope["scheme"], "tls": tls, "extensions": sorted(extensions), "got": message.get("text")}
            await send({"type": "websocket.send", "text": json.dumps(info)})
            await send({"type": "websocket.close", "code": 1000})
            return
        while (await receive()).get("more_body"):
            pass
        body = json.dumps(
            {
                "scheme": scope["scheme"],
                "http_version": scope["http_version"],
                "tls": tls,
                "extensions": sorted(extensions),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def tls_connect(port: int, context: ssl.SSLContext, alpn: list[str] | None = None) -> ssl.SSLSocket:
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return context.wrap_socket(sock, server_hostname="127.0.0.1")
    except BaseException:
        sock.close()
        raise


def get(sock: socket.socket, path: str = "/") -> dict[str, Any]:
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
    status, _, body, _ = read_response(sock)
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def cipher_id(context: ssl.SSLContext, negotiated: tuple[str, str, int] | None) -> int:
    """The IANA id of the cipher suite a client negotiated (``SSLSocket.cipher()``)."""
    assert negotiated is not None
    return {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}[negotiated[0]]


def tls11_context() -> ssl.SSLContext:
    """A client that offers TLS 1.1 only (OpenSSL's security level lowered so it can)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def https(port: int, path: str = "/") -> str:
    return f"https://127.0.0.1:{port}{path}"


# --- HTTPS and the tls extension ------------------------------------------------------------


@LOOPS
def test_https_scope_and_tls_extension(certs: Certs, loop: str) -> None:
    seen: list[dict[str, Any]] = []
    with serve(make_app(seen), loop=loop, **certs.tls()) as srv:
        context = certs.client_context()
        with tls_connect(srv.port, context) as sock:
            first = get(sock)
            second = get(sock, "/again")  # keep-alive: the same connection
            negotiated = sock.cipher()
            assert sock.version() == "TLSv1.3"
        with tls_connect(srv.port, context) as sock:
            get(sock)
    assert first["scheme"] == "https" and first["http_version"] == "1.1"
    tls = first["tls"]
    assert set(tls) == KEYS
    assert tls["server_cert"] == certs.server_pem()
    assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None and tls["client_cert_error"] is None
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] == cipher_id(context, negotiated) and tls["cipher_suite"] in (0x1301, 0x1302, 0x1303)
    assert second["tls"] == tls
    # computed once per connection: every request on it shares the dict; a new connection gets its own
    assert seen[0]["extensions"]["tls"] is seen[1]["extensions"]["tls"]
    assert seen[2]["extensions"]["tls"] is not seen[0]["extensions"]["tls"]
    assert seen[0]["extensions"] is not seen[1]["extensions"]  # the extensions dict itself is per request


def test_tls_1_2_client_gets_0x0303_and_an_iana_cipher_suite(certs: Certs) -> None:
    with serve(make_app([]), **certs.tls()) as srv:
        context = certs.client_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with tls_connect(srv.port, context) as sock:
            info = get(sock)
            negotiated = sock.cipher()
    assert info["tls"]["tls_version"] == 0x0303
    assert info["tls"]["cipher_suite"] == cipher_id(context, negotiated)
    assert info["tls"]["cipher_suite"] >> 8 == 0xC0  # an ECDHE suite from OpenSSL's defaults, e.g. 0xC02F


def test_cleartext_connections_have_no_tls_extension() -> None:
    with serve(make_app([])) as srv:
        info = httpx.get(srv.url + "/", timeout=5).json()
    assert info["scheme"] == "http" and "tls" not in info["extensions"]


def test_httpx_verifies_heron_with_the_ca(certs: Certs) -> None:
    with serve(make_app([]), **certs.tls()) as srv:
        with httpx.Client(verify=certs.client_context(), timeout=5) as client:
            response = client.get(https(srv.port))
            assert response.status_code == 200 and response.http_version == "HTTP/1.1"
            assert response.json()["scheme"] == "https"
        # an unknown CA: the client refuses heron's certificate
        with httpx.Client(verify=ssl.create_default_context(), timeout=5) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                client.get(https(srv.port))


def test_certificate_and_key_in_one_file(certs: Certs) -> None:
    with serve(make_app([]), ssl_certfile=certs.combined_file) as srv:
        info = httpx.get(https(srv.port), verify=certs.client_context(), timeout=5).json()
    assert info["tls"]["server_cert"] == certs.server_pem()


def test_encrypted_keyfile_with_password(certs: Certs) -> None:
    settings = certs.tls(ssl_keyfile=certs.encrypted_keyfile, ssl_keyfile_password="s3cret")
    with serve(make_app([]), **settings) as srv:
        info = httpx.get(https(srv.port), verify=certs.client_context(), timeout=5).json()
    assert info["scheme"] == "https"


@LOOPS
def test_tls_1_1_client_is_refused(certs: Certs, loop: str, caplog: pytest.LogCaptureFixture) -> None:
    with serve(make_app([]), loop=loop, **certs.tls()) as srv:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            tls_connect(srv.port, tls11_context()).close()
        # cleartext HTTP on the TLS port: refused too (the handshake fails), quietly
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            assert plain.recv(100) == b""
        # and the server still serves
        assert httpx.get(https(srv.port), verify=certs.client_context(), timeout=5).status_code == 200
    assert [r for r in caplog.records if r.levelno >= 30] == []


@LOOPS
def test_handshake_must_finish_within_timeout_request_header(certs: Certs, loop: str) -> None:
    with serve(make_app([]), loop=loop, timeout_request_header=1, **certs.tls()) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as idle:
            started = time.monotonic()
            try:
                assert idle.recv(100) == b""  # closed, no handshake ever started
            except ConnectionResetError:
                pass
            assert 0.5 < time.monotonic() - started < 5
            assert srv.server.connection_count == 0


def test_context_always_requires_tls_1_2(certs: Certs) -> None:
    context = create_ssl_context(Config(**certs.tls()).validate())
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.verify_mode == ssl.CERT_NONE
    for version in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS):
        assert (
            create_ssl_context(Config(**certs.tls(ssl_version=int(version)))).minimum_version == ssl.TLSVersion.TLSv1_2
        )
    pinned = create_ssl_context(Config(**certs.tls(ssl_version=5)).validate())
    assert (pinned.minimum_version, pinned.maximum_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)


def test_ssl_version_5_pins_tls_1_2(certs: Certs) -> None:
    with serve(make_app([]), **certs.tls(ssl_version=5)) as srv:
        with tls_connect(srv.port, certs.client_context()) as sock:
            assert sock.version() == "TLSv1.2"
            assert get(sock)["tls"]["tls_version"] == 0x0303


def test_ssl_ciphers(certs: Certs) -> None:
    with serve(
        make_app([]), **certs.tls(ssl_ciphers="ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-CHACHA20-POLY1305")
    ) as srv:
        context = certs.client_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with tls_connect(srv.port, context) as sock:
            info = get(sock)
            assert "CHACHA20" in (sock.cipher() or ("",))[0]
    assert info["tls"]["cipher_suite"] in (0xCCA8, 0xCCA9)


# --- mutual TLS ----------------------------------------------------------------------------


@LOOPS
def test_mutual_tls_required(certs: Certs, loop: str) -> None:
    seen: list[dict[str, Any]] = []
    with serve(make_app(seen), loop=loop, **certs.tls(ssl_cert_reqs=2, ssl_ca_certs=certs.ca_file)) as srv:
        # without a certificate: refused (with TLS 1.3 the client learns it on its first read)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with tls_connect(srv.port, certs.client_context()) as sock:
                get(sock)
        with tls_connect(srv.port, certs.client_context(cert=True)) as sock:
            info = get(sock)
        with httpx.Client(verify=certs.client_context(cert=True), timeout=5) as client:
            assert client.get(https(srv.port)).json()["tls"] == info["tls"]
    assert len(seen) == 2  # the refused client never reached the app
    tls = info["tls"]
    chain = [pem.bytes().decode() for pem in certs.client.cert_chain_pems]
    assert len(chain) == 2  # the client's certificate, then the intermediate CA that signed it
    assert tls["client_cert_chain"] == chain
    assert tls["client_cert_name"] == certs.client_name
    assert tls["client_cert_name"].startswith("CN=alice,OU=")
    assert tls["client_cert_error"] is None
    assert tls["server_cert"] == certs.server_pem()


def test_mutual_tls_optional(certs: Certs) -> None:
    with serve(make_app([]), **certs.tls(ssl_cert_reqs=1, ssl_ca_certs=certs.ca_file)) as srv:
        with tls_connect(srv.port, certs.client_context()) as sock:
            anonymous = get(sock)["tls"]
        with tls_connect(srv.port, certs.client_context(cert=True)) as sock:
            alice = get(sock)["tls"]
        # a certificate from a CA heron does not trust: refused
        stranger = trustme.CA().issue_cert("mallory@example.org")
        context = certs.client_context()
        stranger.configure_cert(context)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with tls_connect(srv.port, context) as sock:
                get(sock)
    assert anonymous["client_cert_chain"] == [] and anonymous["client_cert_name"] is None
    assert alice["client_cert_name"] == certs.client_name and len(alice["client_cert_chain"]) == 2


def test_rfc4514_name_escaping() -> None:
    subject = (
        (("countryName", "NZ"),),
        (("organizationName", 'Heron, "Ltd"+Co'),),
        (("organizationalUnitName", " padded "), ("emailAddress", "a@b.example")),
        (("commonName", "#hash;<>\\"),),
    )
    assert rfc4514_name(subject) == (
        'CN=\\#hash\\;\\<\\>\\\\,OU=\\ padded\\ +1.2.840.113549.1.9.1=a@b.example,O=Heron\\, \\"Ltd\\"\\+Co,C=NZ'
    )
    assert rfc4514_name(()) is None


# --- settings --------------------------------------------------------------------------------


def test_settings_are_validated_naming_the_setting(certs: Certs) -> None:
    missing = str(certs.dir / "missing.pem")
    cases = [
        ({"ssl_certfile": missing, "ssl_keyfile": certs.keyfile}, "ssl_certfile: '" + missing + "' does not exist"),
        ({"ssl_certfile": certs.certfile, "ssl_keyfile": missing}, "ssl_keyfile: '" + missing + "' does not exist"),
        ({"ssl_certfile": certs.certfile}, "ssl_keyfile: not set"),
        ({"ssl_keyfile": certs.keyfile}, "ssl_certfile: not set"),
        ({"ssl_certfile": str(certs.dir), "ssl_keyfile": certs.keyfile}, "is not a file"),
        (certs.tls(ssl_cert_reqs=2), "ssl_ca_certs: not set, but ssl_cert_reqs is 2"),
        (certs.tls(ssl_cert_reqs=3), "ssl_cert_reqs: 3 is not valid"),
        (certs.tls(ssl_version=4), "ssl_version: 4 is not valid"),  # PROTOCOL_TLSv1_1
        (certs.tls(ssl_version=16), "ssl_version: 16 is not valid"),  # PROTOCOL_TLS_CLIENT
        (certs.tls(ssl_ciphers="NO-SUCH-CIPHER"), "ssl_ciphers: 'NO-SUCH-CIPHER' is not valid"),
        (certs.tls(ssl_ca_certs=missing, ssl_cert_reqs=2), "ssl_ca_certs: '" + missing + "' does not exist"),
        ({"ssl_ca_certs": certs.ca_file}, "ssl_ca_certs: set, but TLS is off"),
        ({"ssl_cert_reqs": 2}, "ssl_cert_reqs: set, but TLS is off"),
        ({"ssl_keyfile_password": "x"}, "ssl_keyfile_password: set, but TLS is off"),
    ]
    for settings, message in cases:
        with pytest.raises(SettingError) as info:
            Config(**settings).validate()
        assert message in str(info.value), (settings, str(info.value))


def test_key_loading_failures_are_one_clear_line(certs: Certs) -> None:
    other = certs.ca.issue_cert("other.example")
    other_key = certs.dir / "other.key"
    other.private_key_pem.write_to_path(str(other_key))
    not_a_cert = certs.dir / "not-a-cert.pem"
    not_a_cert.write_text("hello\n")
    ec_cert, rsa_key = certs.dir / "ec.pem", certs.dir / "rsa.key"  # an EC certificate with an RSA key
    trustme.CA().issue_cert("localhost", key_type=trustme.KeyType.ECDSA).cert_chain_pems[0].write_to_path(str(ec_cert))
    trustme.CA().issue_cert("localhost", key_type=trustme.KeyType.RSA).private_key_pem.write_to_path(str(rsa_key))
    cases = [
        (
            certs.tls(ssl_certfile=str(ec_cert), ssl_keyfile=str(rsa_key)),
            "is not the key of the certificate in ssl_certfile",
        ),
        (
            certs.tls(ssl_keyfile=certs.encrypted_keyfile, ssl_keyfile_password="wrong"),
            "ssl_keyfile_password: wrong password",
        ),
        (certs.tls(ssl_keyfile=certs.encrypted_keyfile), "is encrypted: set ssl_keyfile_password"),
        (certs.tls(ssl_keyfile=str(other_key)), "is not the key of the certificate in ssl_certfile"),
        (certs.tls(ssl_certfile=str(not_a_cert)), "holds no PEM certificate"),
        (certs.tls(ssl_keyfile=certs.certfile), "holds no usable PEM private key"),
        (certs.tls(ssl_ca_certs=str(not_a_cert), ssl_cert_reqs=2), "ssl_ca_certs: could not load CA certificates"),
    ]
    for settings, message in cases:
        with pytest.raises(TLSSetupError) as info:
            create_ssl_context(Config(**settings).validate())
        assert message in str(info.value) and "\n" not in str(info.value), (settings, str(info.value))


# --- the heron command -------------------------------------------------------------------------


def heron_cmd(args: list[str], cwd: Path, **kwargs: Any) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "heron", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_wrong_password_exits_3_with_one_line(certs: Certs, tmp_path: Path) -> None:
    args = ["--port", "0", "--ssl-certfile", certs.certfile, "--ssl-keyfile", certs.encrypted_keyfile]
    for extra, message in (
        (["--ssl-keyfile-password", "wrong"], "ssl_keyfile_password: wrong password for ssl_keyfile"),
        ([], "is encrypted: set ssl_keyfile_password"),  # never an interactive prompt
    ):
        proc = heron_cmd(args + extra, tmp_path)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 3, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], err


def test_cli_invalid_tls_option_exits_2(certs: Certs, tmp_path: Path) -> None:
    proc = heron_cmd(["--ssl-certfile", certs.certfile], tmp_path)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [err.strip()] and "ssl_keyfile: not set" in err
    proc = heron_cmd(
        ["--ssl-certfile", certs.certfile, "--ssl-keyfile", certs.keyfile, "--ssl-cert-reqs", "two"], tmp_path
    )
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "--ssl-cert-reqs" in err


@pytest.mark.usefixtures("curl_path")
def test_cli_serves_https_to_curl(certs: Certs, tmp_path: Path) -> None:
    """The heron command with TLS options (and HERON_SSL_* variables), curl --cacert, mutual TLS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
    env.update(PYTHONUNBUFFERED="1", HERON_SSL_CA_CERTS=certs.ca_file)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "heron", "--port", "0",
            "--ssl-certfile", certs.certfile, "--ssl-keyfile", certs.keyfile, "--ssl-cert-reqs", "1",
        ],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "heron exited before serving"
            if "Serving" in line:
                assert "on https://127.0.0.1:" in line, line
                port = int(line.split("https://127.0.0.1:")[1].split()[0])
        assert port is not None
        curl = ["curl", "-sS", "--max-time", "10", "--cacert", certs.ca_file, "-w", "\n%{http_version}"]
        result = subprocess.run([*curl, https(port)], capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stderr
        body, version = result.stdout.rsplit("\n", 1)
        assert "heron" in body.lower() and version == "2"  # ALPN
        with_cert = ["--cert", certs.client_certfile, "--key", certs.client_keyfile, https(port)]
        result = subprocess.run([*curl, *with_cert], capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stderr
        # without --cacert curl does not trust heron's certificate
        result = subprocess.run(["curl", "-sS", "--max-time", "10", https(port)], capture_output=True, text=True)
        assert result.returncode == 60, result.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0


@pytest.mark.usefixtures("curl_path")
def test_curl_sees_the_client_certificate(certs: Certs) -> None:
    seen: list[dict[str, Any]] = []
    with serve(make_app(seen), **certs.tls(ssl_cert_reqs=2, ssl_ca_certs=certs.ca_file)) as srv:
        curl = ["curl", "-sS", "--max-time", "10", "--cacert", certs.ca_file, "--http1.1"]
        result = subprocess.run(
            [*curl, "--cert", certs.client_certfile, "--key", certs.client_keyfile, https(srv.port)],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        refused = subprocess.run([*curl, https(srv.port)], capture_output=True, text=True, timeout=20)
        assert refused.returncode != 0
    assert info["tls"]["client_cert_name"] == certs.client_name
    assert len(info["tls"]["client_cert_chain"]) == 2


# --- WebSocket over TLS ------------------------------------------------------------------------


@LOOPS
def test_websocket_over_wss(certs: Certs, loop: str) -> None:
    seen: list[dict[str, Any]] = []
    with serve(make_app(seen), loop=loop, **certs.tls(ssl_cert_reqs=1, ssl_ca_certs=certs.ca_file)) as srv:

        async def talk() -> dict[str, Any]:
            async with ws_connect(f"wss://127.0.0.1:{srv.port}/ws", ssl=certs.client_context(cert=True)) as ws:
                await ws.send("hi")
                return json.loads(await ws.recv())  # type: ignore[no-any-return]

        info = asyncio.run(talk())
    assert info["scheme"] == "wss" and info["got"] == "hi"
    assert "tls" in info["extensions"] and "websocket.http.response" in info["extensions"]
    assert info["tls"]["client_cert_name"] == certs.client_name
    assert info["tls"]["tls_version"] == 0x0304 and info["tls"]["server_cert"] == certs.server_pem()


# --- ALPN and HTTP/2 ---------------------------------------------------------------------------


def test_alpn_offers_http_1_1(certs: Certs) -> None:
    settings = {"http2": True}
    with serve(make_app([]), **certs.tls(**settings)) as srv:
        with tls_connect(srv.port, certs.client_context(), alpn=["http/1.1"]) as sock:
            assert sock.selected_alpn_protocol() == "http/1.1"
            assert get(sock)["http_version"] == "1.1"
        with tls_connect(srv.port, certs.client_context(), alpn=["h2", "http/1.1"]) as sock:
            assert sock.selected_alpn_protocol() == "h2"
        with tls_connect(srv.port, certs.client_context()) as sock:  # no ALPN at all: HTTP/1.1
            assert sock.selected_alpn_protocol() is None
            assert get(sock)["http_version"] == "1.1"


def test_h2_preface_without_alpn_h2_is_not_http2(certs: Certs) -> None:
    """Over TLS, HTTP/2 is negotiated with ALPN only (RFC 9113 3.3): no prior knowledge."""
    with serve(make_app([]), **certs.tls(http2=True)) as srv:
        with tls_connect(srv.port, certs.client_context(), alpn=["http/1.1"]) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            status, _, _, _ = read_response(sock)
            assert status in (400, 505)


def test_alpn_h2_not_offered_when_http2_is_off(certs: Certs) -> None:
    with serve(make_app([]), **certs.tls(http2=False)) as srv:
        with tls_connect(srv.port, certs.client_context(), alpn=["h2", "http/1.1"]) as sock:
            assert sock.selected_alpn_protocol() == "http/1.1"


@LOOPS
def test_httpx_http2_over_tls(certs: Certs, loop: str) -> None:
    seen: list[dict[str, Any]] = []
    with serve(make_app(seen), loop=loop, **certs.tls(http2=True, ssl_cert_reqs=1, ssl_ca_certs=certs.ca_file)) as srv:
        with httpx.Client(http2=True, verify=certs.client_context(cert=True), timeout=5) as client:
            responses = [client.get(https(srv.port, f"/{i}")) for i in range(3)]
    assert all(r.http_version == "HTTP/2" for r in responses)
    info = responses[0].json()
    assert info["scheme"] == "https" and info["http_version"] == "2"
    assert info["tls"]["client_cert_name"] == certs.client_name and info["tls"]["server_cert"] == certs.server_pem()
    assert all(scope["extensions"]["tls"] is seen[0]["extensions"]["tls"] for scope in seen)  # once per connection


@pytest.mark.usefixtures("curl_path")
def test_curl_http2_over_tls(certs: Certs) -> None:
    with serve(make_app([]), **certs.tls(http2=True)) as srv:
        result = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--http2", "--cacert", certs.ca_file, "-w", "\n%{http_version}", https(srv.port)],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body, version = result.stdout.rsplit("\n", 1)
    info = json.loads(body)
    assert version == "2" and info["http_version"] == "2" and info["scheme"] == "https"
    assert info["tls"]["server_cert"] == certs.server_pem() and info["tls"]["tls_version"] == 0x0304


# --- a browser -----------------------------------------------------------------------------------

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>loading</title>
<script src="/s1.js"></script><script src="/s2.js"></script><script src="/s3.js"></script>
</head><body>
<img src="/i1.svg"><img src="/i2.svg"><img src="/i3.svg"><img src="/i4.svg"><img src="/i5.svg"><img src="/i6.svg">
<script>
window.addEventListener("load", () => {
  const shown = [...document.images].filter((img) => img.complete && img.naturalWidth === 10).length;
  document.title = "scripts:" + window.ran.length + " images:" + shown + " https:" + (location.protocol === "https:");
});
</script>
</body></html>
"""
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
RESOURCES = {"/", "/s1.js", "/s2.js", "/s3.js"} | {f"/i{i}.svg" for i in range(1, 7)}


@pytest.mark.timeout(90)
def test_headless_chromium_loads_a_page_over_tls(certs: Certs) -> None:
    """Chromium loads a page and its scripts and images from heron over https.

    With HTTP/2 (once heron has it) every resource must arrive as HTTP/2 over
    one connection; until then the page is served over HTTP/1.1.
    """
    need_program("chromium", "chromium-browser")  # (skips before anything starts)
    requests: list[tuple[str, str, Any, str]] = []
    lock = threading.Lock()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        path = scope["path"]
        with lock:
            requests.append((path, scope["http_version"], scope["client"], scope["scheme"]))
        if path == "/":
            body, ctype = PAGE, b"text/html; charset=utf-8"
        elif path.endswith(".js"):
            body, ctype = b'(window.ran = window.ran || []).push("%s");' % path.encode(), b"text/javascript"
        elif path.endswith(".svg"):
            body, ctype = SVG, b"image/svg+xml"
        else:
            body, ctype = b"not found", b"text/plain"
        status = 404 if ctype == b"text/plain" else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
        await send({"type": "http.response.body", "body": body})

    settings = certs.tls(http2=True)
    with serve(app, **settings) as srv, tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            chromium_command(
                profile, "--ignore-certificate-errors", "--virtual-time-budget=10000", "--dump-dom", https(srv.port)
            ),
            capture_output=True,
            timeout=60,
        )
    dom = proc.stdout.decode(errors="replace")
    log = proc.stderr.decode(errors="replace")[-2000:]
    assert "<title>scripts:3 images:6 https:true</title>" in dom, (dom[-1500:], log)
    with lock:
        served = [r for r in requests if r[0] in RESOURCES]
    assert {r[0] for r in served} == RESOURCES, requests
    assert all(r[3] == "https" for r in served)
    assert {r[1] for r in served} == {"2"}, served
    assert len({r[2] for r in served}) == 1, served  # one connection
