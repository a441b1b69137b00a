#!/usr/bin/env bash
# Installs what building, running and testing lwm2m-gw needs on Debian/Ubuntu.
# Idempotent: what is already there is left alone.
#   scripts/setup.sh          build tools only (enough to run the gateway)
#   scripts/setup.sh --test   also the test peers: libcoap's coap-client, aiocoap in .venv
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup: not root and no sudo; install the packages listed below by hand" >&2
    fi
fi

apt_updated=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: no apt-get; please install: $*" >&2
        return 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

# A C toolchain: rustc links through cc.
command -v cc >/dev/null 2>&1 || apt_install gcc libc6-dev
# Mbed TLS (DTLS) is built from source by mbedtls-sys: cmake, and libclang
# for its bindings (tinydtls-sys's bindings too).
command -v cmake >/dev/null 2>&1 || apt_install cmake
if ! command -v clang >/dev/null 2>&1 || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
    apt_install clang libclang-dev
fi
# tinydtls (raw public keys) is built with autotools by tinydtls-sys.
for t in autoconf automake libtoolize; do
    command -v "$t" >/dev/null 2>&1 || { apt_install autoconf automake libtool; break; }
done

# Rust: the gateway needs 1.85 or newer. Debian 12's plain rustc is older;
# its rustc-web/cargo-web packages are recent enough.
if ! command -v cargo >/dev/null 2>&1; then
    if apt-cache show cargo-web >/dev/null 2>&1; then
        apt_install rustc-web cargo-web
    else
        apt_install rustc cargo
    fi
fi
rust_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "${rust_minor:-0}" -lt 85 ]; then
    echo "setup: $(rustc --version) is too old; lwm2m-gw needs Rust 1.85 or newer (rustup installs it)" >&2
    exit 1
fi

if [ "$want_test" -eq 1 ]; then
    command -v coap-client-notls >/dev/null 2>&1 || apt_install libcoap3-bin
    # gnutls-cli: a DTLS client that can leave out RFC 5746 renegotiation_info.
    command -v gnutls-cli >/dev/null 2>&1 || apt_install gnutls-bin
    # The MQTT tests start their own broker on a loopback port; the Debian
    # service this package would start is not used.
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto mosquitto-clients
    # The MQTT TLS test makes its CA and broker certificate with openssl.
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    # The unit file is checked with systemd-analyze verify.
    command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        apt_install python3-venv python3-pip
    fi
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    # The DTLS client matrix drives Debian's wolfSSL through ctypes.
    ls /usr/lib/*/libwolfssl.so.* >/dev/null 2>&1 || apt_install libwolfssl35
    if ! .venv/bin/python -c 'import aiocoap, mbedtls, DTLSSocket, cbor2' >/dev/null 2>&1; then
        .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/peers/requirements.txt
    fi
    # The web console is tested in Debian's headless Chromium (no browser
    # download), driven by Selenium through chromium-driver, and its API
    # against its OpenAPI document with schemathesis.
    { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } \
        || apt_install chromium chromium-driver
    if ! .venv/bin/python -c 'import selenium, schemathesis' >/dev/null 2>&1; then
        .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/browser/requirements.txt
    fi
    # The Yocto recipe is linted with oelint-adv.
    if [ ! -x .venv/bin/oelint-adv ]; then
        .venv/bin/python -m pip install -q --disable-pip-version-check -r yocto/requirements.txt
    fi
fi
echo "setup: ready ($(rustc --version))"
