#!/usr/bin/env bash
# Start time (launch to "listening on CoAP") and idle RSS (2 s after) of a
# gateway binary with a models directory, as medians of N runs.
#   scripts/start-cost.sh BINARY MODELS_DIR [N]
# The README's "Object models" figures came from this, with the binary of
# the commit before and after, each with its own models/.
set -euo pipefail
bin=$1 models=$2 n=${3:-9}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '[coap]\nbind = "127.0.0.1"\n[models]\ndir = "%s"\n' "$models" > "$tmp/gw.toml"
starts=() rss=()
for _ in $(seq "$n"); do
    rm -rf "$tmp/data"
    t0=$(date +%s%N)
    "$bin" serve --config "$tmp/gw.toml" --data-dir "$tmp/data" --coap-port 0 --dtls-port 0 \
        --bootstrap-port 0 --bootstrap-dtls-port 0 2> "$tmp/log" &
    pid=$!
    until grep -q "listening on CoAP" "$tmp/log"; do sleep 0.002; done
    t1=$(date +%s%N)
    sleep 2
    starts+=($(( (t1 - t0) / 1000000 )))
    rss+=($(awk '/VmRSS/ {print $2}' "/proc/$pid/status"))
    kill "$pid"; wait "$pid" || true
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "start_ms median $(median "${starts[@]}") (${starts[*]})"
echo "idle_rss_kib median $(median "${rss[@]}") (${rss[*]})"
echo "models $(grep -o '[0-9]* object models' "$tmp/log")"
