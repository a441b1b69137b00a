#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine and starts the gateway with its
# embedded defaults (CoAP on UDP 5685, state in ./data, models from ./models).
# Extra arguments go to `lwm2m-gw serve`, e.g. --config gw.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run --release --bin lwm2m-gw -- serve "$@"
