/*
 * LD_PRELOAD shim for the tls-handshakes scenario: every TLS connection the
 * client (wrk) opens does a full handshake, never a resumed one.
 *
 * wrk reuses one SSL object per connection slot: on reconnect it calls
 * SSL_clear(), which keeps the session of the closed connection, and its
 * SSL_CTX has a client session cache, so the next SSL_connect() offers that
 * session (a TLS 1.3 PSK from the server's ticket, or a TLS 1.2 session id or
 * ticket) and the server does a resumed handshake: no certificate, no
 * signature. Measured here: without this shim, wrk resumed all but the first
 * handshake of each connection slot. The shim drops the session before a
 * handshake starts, so the client offers nothing to resume.
 *
 * Built by bench/run.py into the run's temp dir:
 *     cc -shared -fPIC -O2 -o no_resume.so bench/no_resume.c -ldl
 * No OpenSSL headers needed: the two functions used are declared here and
 * resolved from the libssl the client already loads.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_in_before(const SSL *s);
int SSL_set_session(SSL *s, SSL_SESSION *session);

int SSL_connect(SSL *s)
{
    static int (*real_connect)(SSL *);
    if (real_connect == NULL)
        real_connect = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    /* Non-blocking clients call SSL_connect() again until the handshake is
       done: only touch the session before the first call. */
    if (SSL_in_before(s))
        SSL_set_session(s, NULL);
    return real_connect(s);
}
