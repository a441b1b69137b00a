#!/usr/bin/env bash
# Packaging checks, run by scripts/test.sh after the test suite: the Yocto
# recipe's crate list matches Cargo.lock, the recipe passes oelint-adv for
# each Yocto LTS release the layer claims, and the release binaries
# cross-build for the boards and run under qemu-user (scripts/cross-build.sh).
#   scripts/check-packaging.sh [--no-cross]
set -euo pipefail
cd "$(dirname "$0")/.."

cross=1
[ "${1:-}" = "--no-cross" ] && cross=0

./scripts/setup.sh --test >/dev/null
# tomllib needs Python 3.11; the venv's Python is the one setup.sh checked.
.venv/bin/python scripts/yocto-crates.py --check

layer=yocto/meta-lwm2m-gw
# bitbake refuses the recipe when the licence lines it names have moved.
for recipe in "$layer"/recipes-*/*/*.bb; do
    read -r first last md5 < <(sed -n \
        's/^LIC_FILES_CHKSUM = "file:\/\/Cargo.toml;beginline=\([0-9]*\);endline=\([0-9]*\);md5=\([0-9a-f]*\)"$/\1 \2 \3/p' "$recipe")
    [ -n "${md5:-}" ] || { echo "check-packaging: $recipe: no LIC_FILES_CHKSUM on Cargo.toml" >&2; exit 1; }
    [ "$(sed -n "${first},${last}p" Cargo.toml | md5sum | cut -d' ' -f1)" = "$md5" ] \
        || { echo "check-packaging: $recipe: LIC_FILES_CHKSUM no longer matches Cargo.toml lines $first-$last" >&2; exit 1; }
done
releases=$(sed -n 's/^LAYERSERIES_COMPAT_lwm2m-gw = "\(.*\)"/\1/p' "$layer/conf/layer.conf")
[ -n "$releases" ] || { echo "check-packaging: no LAYERSERIES_COMPAT in $layer/conf/layer.conf" >&2; exit 1; }
# Two rules are left out on purpose:
# - homepageping fetches HOMEPAGE, and CI has no network;
# - bbclassextend asks for native/nativesdk variants, and a site gateway
#   built for the build host makes no sense.
for release in $releases; do
    findings=$(.venv/bin/oelint-adv --quiet --mode all --relpaths --release "$release" \
        --suppress oelint.vars.homepageping --suppress oelint.var.bbclassextend \
        "$layer"/recipes-*/*/*.bb "$layer/conf/layer.conf" 2>&1) || true
    if [ -n "$findings" ]; then
        printf '%s\n' "$findings" >&2
        echo "check-packaging: oelint-adv ($release) has findings on the recipe" >&2
        exit 1
    fi
    echo "check-packaging: oelint-adv ($release): recipe clean"
done

if [ "$cross" -eq 1 ]; then
    # The unit tests run under qemu on the 32-bit target, where a narrowing
    # cast bites and 64-bit x86 hides it; aarch64 gets the release checks.
    ./scripts/cross-build.sh aarch64-unknown-linux-gnu
    ./scripts/cross-build.sh --unit-tests armv7-unknown-linux-gnueabihf
fi
