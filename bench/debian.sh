#!/bin/sh
# Realistic Debian builds, kiln beside BuildKit (docker 28.5's): a base
# image made from Debian packages with debootstrap (bench/debian/make-base.sh,
# cached under /var/tmp), then `apt-get install`, `pip install` and `npm ci`
# workloads (bench/debian/workloads), each cold, no-op and after a one-file
# edit, repetitions interleaved. Needs the internet mirrors (deb.debian.org,
# pypi.org, registry.npmjs.org), the registry on 127.0.0.1:5000 and
# ../shared/bench/modern/setup.sh's dockerd (DOCKER_HOST picks another).
#
#   bench/debian.sh [--reps N] [--workloads apt,pip,npm] [--engines kiln,buildkit]
#
# KILN_BIN picks the binary (default: a fresh release build).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
reps=3 workloads=apt,pip,npm engines=kiln,buildkit
while [ $# -gt 0 ]; do
    case $1 in
        --reps) reps=$2; shift 2 ;;
        --workloads) workloads=$2; shift 2 ;;
        --engines) engines=$2; shift 2 ;;
        *) echo "usage: $0 [--reps N] [--workloads apt,pip,npm] [--engines kiln,buildkit]" >&2; exit 2 ;;
    esac
done
if [ -z "${KILN_BIN:-}" ]; then
    (cd "$here" && cargo build --release -q -p kiln)
    KILN_BIN=${CARGO_TARGET_DIR:-$here/target}/release/kiln
fi
export KILN_BIN
curl -sf http://127.0.0.1:5000/v2/ >/dev/null || { echo "registry on 127.0.0.1:5000 is down: run ../shared/bench/setup.sh" >&2; exit 1; }
if [ -z "${DOCKER_HOST:-}" ] && [ -S /run/docker-modern.sock ]; then
    DOCKER_HOST=unix:///run/docker-modern.sock
fi
export DOCKER_HOST=${DOCKER_HOST:-unix:///run/docker-anchor.sock}
base=$("$here/bench/debian/make-base.sh")
out=$(mktemp /tmp/kiln-debian-bench.XXXXXX.json)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%FT%TZ)  base $base  DOCKER_HOST=$DOCKER_HOST"
python3 "$here/bench/debian/bench.py" --base "$base" --kiln "$KILN_BIN" --engines "$engines" \
    --workloads "$workloads" --reps "$reps" --json "$out" ${DEBIAN_BENCH_FLAGS:-}
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "json: $out"
