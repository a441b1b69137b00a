#!/usr/bin/env bash
# Cross-builds the release gateway for the boards' targets on a plain Debian 12
# machine, without Docker, and runs it under qemu-user: --version, the server
# key, and a self-test in which the host's libcoap registers a device with the
# emulated gateway over CoAP and over DTLS (PSK).
#   scripts/cross-build.sh [--unit-tests] [TARGET...]
# TARGET: aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf (default both).
# --unit-tests also runs the library's unit tests under qemu (a debug build
# for the target: several minutes more).
# Binaries: target/cross/<target>/release/lwm2m-gw. Prints per target the
# stripped size, the build time and the idle gateway's own resident memory.
set -euo pipefail
cd "$(dirname "$0")/.."

unit_tests=0
targets=()
for a in "$@"; do
    case "$a" in
        --unit-tests) unit_tests=1 ;;
        *) targets+=("$a") ;;
    esac
done
[ ${#targets[@]} -eq 0 ] && targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
need=()
# Debian's newer Rust (rustup cannot fetch other targets here) with its std
# sources, built for the target with -Zbuild-std.
[ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/src/rust/library ] || need+=(rustc-web cargo-web rust-web-src)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
./scripts/setup.sh --test >/dev/null

export RUSTC=/usr/bin/rustc
export RUSTC_BOOTSTRAP=1
CARGO=/usr/bin/cargo
export CARGO_TARGET_DIR="$PWD/target/cross"

guest_base=0x1000000000
# Resident KiB of the mappings inside the guest's 4 GiB at $guest_base.
guest_rss_kib() {
    local lo=$((guest_base)) hi=$((guest_base + 0x100000000)) inside=0 kib=0 first second
    while read -r first second _; do
        if [[ $first =~ ^([0-9a-f]+)-([0-9a-f]+)$ ]]; then
            inside=$(( 16#${BASH_REMATCH[1]} >= lo && 16#${BASH_REMATCH[2]} <= hi ))
        elif [ "$first" = "Rss:" ] && [ "$inside" -eq 1 ]; then
            kib=$((kib + second))
        fi
    done < "/proc/$1/smaps"
    echo "$kib"
}

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

for target in "${targets[@]}"; do
    case "$target" in
        # -R: a 4 GiB guest address space for the 64-bit guest, so that all
        # of its memory lies at a known place (qemu-arm reserves one anyway).
        aarch64-unknown-linux-gnu) gnu=aarch64-linux-gnu; qemu=qemu-aarch64-static; reserve=(-R 0xffff0000) ;;
        armv7-unknown-linux-gnueabihf) gnu=arm-linux-gnueabihf; qemu=qemu-arm-static; reserve=() ;;
        *) echo "cross-build: unknown target $target" >&2; exit 2 ;;
    esac
    t=${target//-/_}
    T=$(echo "$t" | tr '[:lower:]' '[:upper:]')
    export "CC_$t=$gnu-gcc" "AR_$t=$gnu-ar" "CXX_$t=$gnu-g++"
    export "CARGO_TARGET_${T}_LINKER=$gnu-gcc"
    export "CARGO_TARGET_${T}_RUNNER=$qemu -L /usr/$gnu"
    export "BINDGEN_EXTRA_CLANG_ARGS_$t=--sysroot=/usr/$gnu"
    echo "== $target"
    start=$(date +%s)
    $CARGO build --locked --release --target "$target" -Zbuild-std=std,panic_unwind \
        --bin lwm2m-gw --bin lwm2m-gw-sim
    took=$(( $(date +%s) - start ))
    bin="$CARGO_TARGET_DIR/$target/release/lwm2m-gw"
    # ELF e_machine: 0xb7 aarch64, 0x28 ARM.
    machine=$(od -An -tx1 -j18 -N1 "$bin" | tr -d ' ')
    [ "$machine" = "$( [ "$gnu" = aarch64-linux-gnu ] && echo b7 || echo 28)" ] \
        || { echo "cross-build: $bin is not a $target binary (e_machine $machine)" >&2; exit 1; }
    # The release profile strips symbols, and boards have little flash.
    ! "$gnu-readelf" -S "$bin" | grep -q '\.symtab' \
        || { echo "cross-build: $bin still has a symbol table" >&2; exit 1; }
    size=$(stat -c %s "$bin")
    [ "$size" -le 8000000 ] || { echo "cross-build: $bin is $size bytes, over the 8 MB budget" >&2; exit 1; }
    run() { $qemu -L "/usr/$gnu" "$@"; }

    run "$bin" --version
    dir=$(mktemp -d)
    trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
    key=$(run "$bin" server-key --data-dir "$dir/data" 2>/dev/null)
    [ -n "$key" ] || { echo "cross-build: no server key" >&2; exit 1; }
    coap=$(free_port); dtls=$(free_port)
    printf '[coap]\nbind = "127.0.0.1"\n[registration]\nallow_unknown_endpoints = true\n' > "$dir/gw.toml"
    # qemu started directly, so that $! is the emulated gateway itself. -B
    # puts the guest's address space at a known host address: the pages
    # resident there are the gateway's own (its binary, libc, heap, stacks),
    # the rest of the process is qemu's (translated code, its own heap).
    RUST_LOG=info $qemu -L "/usr/$gnu" -B "$guest_base" "${reserve[@]}" "$bin" serve \
        --config "$dir/gw.toml" --coap-port "$coap" --dtls-port "$dtls" \
        --bootstrap-port 0 --bootstrap-dtls-port 0 \
        --data-dir "$dir/data" --models-dir models 2> "$dir/log" &
    gw=$!
    for _ in $(seq 100); do grep -q "listening on CoAP" "$dir/log" && break; sleep 0.1; done
    grep -q "listening on CoAP" "$dir/log" || { cat "$dir/log"; echo "cross-build: gateway did not start" >&2; exit 1; }
    sleep 3
    rss=$(guest_rss_kib "$gw")
    qemu_rss=$(awk '/VmRSS/ {print $2}' "/proc/$gw/status")
    coap-client-notls -B 10 -m post -t 40 -e '</3/0>' "coap://127.0.0.1:$coap/rd?ep=cross-plain&lt=60"
    run "$bin" device add cross-dtls --psk-identity cross-dtls --psk-key 7365637265746b657930313233343536 \
        --control-socket "$dir/data/control.sock" >/dev/null
    coap-client-gnutls -B 10 -m post -u cross-dtls -k secretkey0123456 "coaps://127.0.0.1:$dtls/rd?ep=cross-dtls&lt=60"
    for ep in cross-plain cross-dtls; do
        grep -q "ep=$ep registered" "$dir/log" || { cat "$dir/log"; echo "cross-build: $ep did not register" >&2; exit 1; }
    done
    kill "$gw"; wait "$gw" 2>/dev/null || true
    rm -rf "$dir"; trap - EXIT
    checked="plain and DTLS registrations OK"
    if [ "$unit_tests" -eq 1 ]; then
        $CARGO test --locked --lib --target "$target" -Zbuild-std=std,panic_unwind
        checked+=", unit tests pass under qemu"
    fi
    echo "cross-build: $target: $size bytes stripped, built in ${took} s; idle gateway resident ${rss} KiB (qemu-user process in all ${qemu_rss} KiB); $checked"
done
