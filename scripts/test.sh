#!/usr/bin/env bash
# The whole test suite: installs the test peers, checks that the benchmarks
# still compile, runs every test, fuzzes every parser for 6 s, then the packaging checks (Yocto recipe, and
# cross builds for armv7/aarch64 run under qemu: several minutes; skip them
# with --no-cross), and ends with one summary line.
# CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
# Type-checked, not built: each bench binary is a release link with fat
# LTO, and CI (1 642 s of its 30-minute budget at stop 23) has no room for
# a dozen of them; `cargo bench` builds them when figures are wanted.
cargo check --locked --benches
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --show-output: the registry tests print what they parsed, or that they were skipped.
cargo test --locked --lib --bins --tests -- --show-output 2>&1 | tee "$log"
# The fuzz targets' short form: 6 s each (scripts/fuzz.sh for longer runs;
# 6 rather than 10 keeps the suite inside 30 minutes on CI's 2 cores now
# that it installs and drives Chromium for the web console);
# it says so and goes on where there is no nightly toolchain.
./scripts/fuzz.sh all 6
./scripts/check-packaging.sh "$@"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
