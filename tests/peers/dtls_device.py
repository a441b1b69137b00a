"""A small LwM2M device over DTLS with a pre-shared key, on a DTLS stack
that is not the gateway's, for tests/dtls_matrix.rs.

    dtls_device.py STACK HOST PORT ENDPOINT IDENTITY KEY_HEX

STACK is one of:
  openssl   Debian's libssl3 through ctypes (a datagram BIO on the socket)
  gnutls    Debian's libgnutls30 through ctypes (GNUTLS_DATAGRAM)
  mbedtls   python-mbedtls (Mbed TLS 2.28 from PyPI), minimum DTLS 1.0
  tinydtls  aiocoap's CoAP on DTLSSocket (tinydtls from PyPI)
  wolfssl   Debian's libwolfssl35 through ctypes

It registers (POST /rd, objects </1/0>,</3/0>) and prints "registered",
or "failed: WHY" and exits 1; then answers GETs of /3/0/0 (manufacturer:
"STACK device") and /3/0/9 (battery: 87) as plain text until killed.
All but tinydtls speak CoAP through the few lines below; tinydtls through
aiocoap, a second CoAP stack that is not the gateway's either."""
import asyncio
import ctypes
import ctypes.util
import os
import select
import socket
import struct
import sys

VALUES = {"3/0/0": None, "3/0/9": b"87"}
LINKS = b"</1/0>,</3/0>"


# --- CoAP, just what a device needs ---------------------------------------

def coap(mtype, code, mid, token, options, payload=b""):
    """A CoAP message: options as (number, bytes) in ascending order."""
    out = bytearray([0x40 | (mtype << 4) | len(token), code])
    out += struct.pack("!H", mid) + token
    last = 0
    for num, val in options:
        delta, last = num - last, num
        hdr = bytearray([0])
        for shift, field in ((4, delta), (0, len(val))):
            if field < 13:
                hdr[0] |= field << shift
            else:
                hdr[0] |= 13 << shift
                hdr.append(field - 13)
        out += hdr + val
    if payload:
        out += b"\xff" + payload
    return bytes(out)


def parse(d):
    """(type, code, mid, token, {option: [values]}, payload), or None."""
    if len(d) < 4 or d[0] >> 6 != 1:
        return None
    tkl = d[0] & 15
    mtype, code, mid = (d[0] >> 4) & 3, d[1], struct.unpack("!H", d[2:4])[0]
    token, i, num, opts = d[4:4 + tkl], 4 + tkl, 0, {}
    while i < len(d) and d[i] != 0xFF:
        delta, length = d[i] >> 4, d[i] & 15
        i += 1
        ext = []
        for field in (delta, length):
            if field == 13:
                field, i = d[i] + 13, i + 1
            elif field == 14:
                field, i = struct.unpack("!H", d[i:i + 2])[0] + 269, i + 2
            ext.append(field)
        num += ext[0]
        opts.setdefault(num, []).append(d[i:i + ext[1]])
        i += ext[1]
    payload = d[i + 1:] if i < len(d) else b""
    return mtype, code, mid, token, opts, payload


def register_message(endpoint):
    queries = [f"ep={endpoint}", "lt=120", "b=U", "lwm2m=1.1"]
    opts = [(11, b"rd"), (12, bytes([40]))] + [(15, q.encode()) for q in queries]
    return coap(0, 0x02, 0x1234, b"\x42\x17", opts, LINKS)


def answer(request):
    """The reply to a request from the gateway, or None."""
    m = parse(request)
    if m is None:
        return None
    mtype, code, mid, token, opts, _ = m
    if code == 0 or code >= 32:
        return None  # an empty message or a response
    path = "/".join(p.decode() for p in opts.get(11, []))
    rtype = 2 if mtype == 0 else 1
    if code == 1 and path in VALUES:
        return coap(rtype, 0x45, mid, token, [(12, b"")], VALUES[path])
    return coap(rtype, 0x84, mid, token, [])


def serve_records(send, recv, endpoint):
    """Register over a DTLS channel, then answer requests forever."""
    send(register_message(endpoint))
    while True:
        d = recv(10.0)
        if d is None:
            fail("no answer to the Register")
        m = parse(d)
        if m and m[3] == b"\x42\x17" and m[1] >= 64:
            if m[1] != 0x41:
                fail(f"Register answered {m[1] >> 5}.{m[1] & 31:02}")
            break
    print("registered", flush=True)
    while True:
        d = recv(3600.0)
        if d is not None:
            reply = answer(d)
            if reply:
                send(reply)


def fail(why):
    print(f"failed: {why}", flush=True)
    sys.exit(1)


def connected_socket(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.connect((host, port))
    return s


def sockaddr_in(host, port):
    """A struct sockaddr_in, as the C libraries take a peer."""
    return struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)


def psk_callback(identity, key):
    """A PSK client callback of the OpenSSL shape (wolfSSL's is the same):
    (ssl, hint, identity_out, max_identity, psk_out, max_psk) -> psk length."""
    vp, cp, ui = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint

    @ctypes.CFUNCTYPE(ui, vp, cp, vp, ui, vp, ui)
    def cb(_ssl, _hint, ident, max_ident, psk, max_psk):
        ident_b = identity.encode() + b"\0"
        if len(ident_b) > max_ident or len(key) > max_psk:
            return 0
        ctypes.memmove(ident, ident_b, len(ident_b))
        ctypes.memmove(psk, key, len(key))
        return len(key)

    return cb


def serve_ssl_api(lib, prefix, ssl, sock, endpoint, name):
    """Serves over a connected session of an OpenSSL-shaped API whose
    functions are named PREFIX + write, read, pending and get_error."""
    write, read = getattr(lib, prefix + "write"), getattr(lib, prefix + "read")
    pending, get_error = getattr(lib, prefix + "pending"), getattr(lib, prefix + "get_error")
    buf = ctypes.create_string_buffer(2048)

    def send(d):
        write(ssl, d, len(d))

    def recv(timeout):
        if pending(ssl) == 0 and not select.select([sock], [], [], timeout)[0]:
            return None
        n = read(ssl, buf, len(buf))
        if n <= 0:
            fail(f"{name} read error {get_error(ssl, n)}")
        return buf.raw[:n]

    serve_records(send, recv, endpoint)


# --- OpenSSL (libssl3) ----------------------------------------------------

def run_openssl(host, port, endpoint, identity, key):
    lib = ctypes.CDLL(ctypes.util.find_library("ssl") or "libssl.so.3")
    vp, cp, ui = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint
    for name, res, args in [
        ("DTLS_client_method", vp, []),
        ("SSL_CTX_new", vp, [vp]),
        ("SSL_CTX_set_cipher_list", ctypes.c_int, [vp, cp]),
        ("SSL_CTX_set_psk_client_callback", None, [vp, vp]),
        ("SSL_new", vp, [vp]),
        ("BIO_new_dgram", vp, [ctypes.c_int, ctypes.c_int]),
        ("BIO_ctrl", ctypes.c_long, [vp, ctypes.c_int, ctypes.c_long, vp]),
        ("SSL_set_bio", None, [vp, vp, vp]),
        ("SSL_connect", ctypes.c_int, [vp]),
        ("SSL_get_error", ctypes.c_int, [vp, ctypes.c_int]),
        ("SSL_read", ctypes.c_int, [vp, vp, ctypes.c_int]),
        ("SSL_write", ctypes.c_int, [vp, cp, ctypes.c_int]),
        ("SSL_pending", ctypes.c_int, [vp]),
        ("OpenSSL_version", cp, [ctypes.c_int]),
    ]:
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    print(lib.OpenSSL_version(0).decode(), file=sys.stderr, flush=True)

    psk_cb = psk_callback(identity, key)

    ctx = lib.SSL_CTX_new(lib.DTLS_client_method())
    # CCM_8, LwM2M's suite, sits below OpenSSL 3's default security level.
    lib.SSL_CTX_set_cipher_list(ctx, b"PSK:@SECLEVEL=0")
    lib.SSL_CTX_set_psk_client_callback(ctx, ctypes.cast(psk_cb, vp))
    ssl = lib.SSL_new(ctx)
    s = connected_socket(host, port)
    bio = lib.BIO_new_dgram(s.fileno(), 0)
    lib.BIO_ctrl(bio, 32, 0, ctypes.c_char_p(sockaddr_in(host, port)))  # BIO_CTRL_DGRAM_SET_CONNECTED
    lib.SSL_set_bio(ssl, bio, bio)
    if lib.SSL_connect(ssl) != 1:
        fail("OpenSSL handshake failed")
    serve_ssl_api(lib, "SSL_", ssl, s, endpoint, "OpenSSL")


# --- GnuTLS (libgnutls30) -------------------------------------------------

class Datum(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_uint)]


def run_gnutls(host, port, endpoint, identity, key):
    lib = ctypes.CDLL(ctypes.util.find_library("gnutls") or "libgnutls.so.30")
    vp = ctypes.c_void_p
    lib.gnutls_check_version.restype = ctypes.c_char_p
    lib.gnutls_strerror.restype = ctypes.c_char_p
    lib.gnutls_record_recv.restype = ctypes.c_ssize_t
    lib.gnutls_record_send.restype = ctypes.c_ssize_t
    lib.gnutls_record_check_pending.restype = ctypes.c_size_t
    for f in ("gnutls_record_recv", "gnutls_record_send"):
        getattr(lib, f).argtypes = [vp, vp, ctypes.c_size_t]
    print("GnuTLS " + lib.gnutls_check_version(None).decode(), file=sys.stderr, flush=True)
    lib.gnutls_global_init()
    session, cred = vp(), vp()
    lib.gnutls_init(ctypes.byref(session), 2 | 4)  # GNUTLS_CLIENT | GNUTLS_DATAGRAM
    lib.gnutls_psk_allocate_client_credentials(ctypes.byref(cred))
    kb = ctypes.create_string_buffer(key, len(key))
    datum = Datum(ctypes.cast(kb, vp), len(key))
    # GNUTLS_PSK_KEY_RAW = 0
    lib.gnutls_psk_set_client_credentials(cred, identity.encode(), ctypes.byref(datum), 0)
    lib.gnutls_credentials_set(session, 4, cred)  # GNUTLS_CRD_PSK
    err = vp()
    r = lib.gnutls_priority_set_direct(
        session, b"NORMAL:+PSK:+ECDHE-PSK:+AES-128-CCM-8:+AES-128-CCM", ctypes.byref(err)
    )
    if r < 0:
        fail("GnuTLS priority: " + lib.gnutls_strerror(r).decode())
    s = connected_socket(host, port)
    lib.gnutls_transport_set_int2(session, s.fileno(), s.fileno())
    lib.gnutls_handshake_set_timeout(session, 10_000)
    while True:
        r = lib.gnutls_handshake(session)
        if r >= 0:
            break
        if lib.gnutls_error_is_fatal(r):
            fail("GnuTLS handshake: " + lib.gnutls_strerror(r).decode())
    buf = ctypes.create_string_buffer(2048)

    def send(d):
        lib.gnutls_record_send(session, d, len(d))

    def recv(timeout):
        if lib.gnutls_record_check_pending(session) == 0 and not select.select([s], [], [], timeout)[0]:
            return None
        n = lib.gnutls_record_recv(session, buf, len(buf))
        if n < 0:
            fail("GnuTLS read: " + lib.gnutls_strerror(int(n)).decode())
        return buf.raw[:n]

    serve_records(send, recv, endpoint)


# --- wolfSSL (libwolfssl35) ----------------------------------------------

def run_wolfssl(host, port, endpoint, identity, key):
    lib = ctypes.CDLL(ctypes.util.find_library("wolfssl") or "libwolfssl.so.35")
    vp, cp, ui, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_int
    for name, res, args in [
        ("wolfDTLSv1_2_client_method", vp, []),
        ("wolfSSL_CTX_new", vp, [vp]),
        ("wolfSSL_CTX_set_cipher_list", i, [vp, cp]),
        ("wolfSSL_CTX_set_psk_client_callback", None, [vp, vp]),
        ("wolfSSL_new", vp, [vp]),
        ("wolfSSL_dtls_set_peer", i, [vp, cp, ui]),
        ("wolfSSL_set_fd", i, [vp, i]),
        ("wolfSSL_connect", i, [vp]),
        ("wolfSSL_get_error", i, [vp, i]),
        ("wolfSSL_read", i, [vp, vp, i]),
        ("wolfSSL_write", i, [vp, cp, i]),
        ("wolfSSL_pending", i, [vp]),
        ("wolfSSL_lib_version", cp, []),
    ]:
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    print("wolfSSL " + lib.wolfSSL_lib_version().decode(), file=sys.stderr, flush=True)
    lib.wolfSSL_Init()
    psk_cb = psk_callback(identity, key)
    ctx = lib.wolfSSL_CTX_new(lib.wolfDTLSv1_2_client_method())
    # Debian's build has no plain PSK suite the gateway offers.
    if lib.wolfSSL_CTX_set_cipher_list(ctx, b"ECDHE-PSK-AES128-CBC-SHA256") != 1:
        fail("wolfSSL: no ECDHE-PSK-AES128-CBC-SHA256 in this build")
    lib.wolfSSL_CTX_set_psk_client_callback(ctx, ctypes.cast(psk_cb, vp))
    ssl = lib.wolfSSL_new(ctx)
    s = connected_socket(host, port)
    peer = sockaddr_in(host, port)
    lib.wolfSSL_dtls_set_peer(ssl, peer, len(peer))
    lib.wolfSSL_set_fd(ssl, s.fileno())
    if lib.wolfSSL_connect(ssl) != 1:
        fail(f"wolfSSL handshake failed ({lib.wolfSSL_get_error(ssl, 0)})")
    serve_ssl_api(lib, "wolfSSL_", ssl, s, endpoint, "wolfSSL")


# --- Mbed TLS (python-mbedtls) --------------------------------------------

def run_mbedtls(host, port, endpoint, identity, key):
    import mbedtls
    from mbedtls import tls

    print(mbedtls.version.version, file=sys.stderr, flush=True)
    conf = tls.DTLSConfiguration(
        pre_shared_key=(identity, key),
        lowest_supported_version=tls.DTLSVersion.DTLSv1_0,
        validate_certificates=False,
    )
    s = tls.ClientContext(conf).wrap_socket(connected_socket(host, port), server_hostname=None)
    try:
        s.do_handshake()
    except Exception as e:  # noqa: BLE001 - any handshake error is the answer
        fail(f"Mbed TLS handshake: {e}")

    def recv(timeout):
        if not select.select([s], [], [], timeout)[0]:
            return None
        try:
            return s.recv(2048)
        except Exception as e:  # noqa: BLE001
            fail(f"Mbed TLS read: {e}")

    serve_records(s.send, recv, endpoint)


# --- tinydtls through aiocoap ---------------------------------------------

def run_tinydtls(host, port, endpoint, identity, key):
    import aiocoap
    import aiocoap.resource as resource
    from aiocoap import Code, Message

    class Value(resource.Resource):
        def __init__(self, path):
            super().__init__()
            self.path = path

        async def render_get(self, request):
            return Message(payload=VALUES[self.path], content_format=0)

    async def main():
        site = resource.Site()
        for path in VALUES:
            site.add_resource(path.split("/"), Value(path))
        ctx = await aiocoap.Context.create_server_context(site, transports=["tinydtls"])
        ctx.client_credentials.load_from_dict({
            f"coaps://{host}:{port}/*": {
                "dtls": {"psk": {"hex": key.hex()}, "client-identity": {"ascii": identity}}
            }
        })
        req = Message(code=Code.POST, payload=LINKS,
                      uri=f"coaps://{host}:{port}/rd?ep={endpoint}&lt=120&b=U&lwm2m=1.1")
        req.opt.content_format = 40
        try:
            resp = await asyncio.wait_for(ctx.request(req).response, 20)
        except Exception as e:  # noqa: BLE001
            fail(f"tinydtls: {type(e).__name__} {e}")
        if resp.code != Code.CREATED:
            fail(f"Register answered {resp.code}")
        print("registered", flush=True)
        while True:
            await asyncio.sleep(3600)

    asyncio.run(main())


def main():
    stack, host, port, endpoint, identity, key_hex = sys.argv[1:7]
    VALUES["3/0/0"] = f"{stack} device".encode()
    run = {
        "openssl": run_openssl,
        "gnutls": run_gnutls,
        "mbedtls": run_mbedtls,
        "tinydtls": run_tinydtls,
        "wolfssl": run_wolfssl,
    }[stack]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run(host, int(port), endpoint, identity, bytes.fromhex(key_hex))


if __name__ == "__main__":
    main()
