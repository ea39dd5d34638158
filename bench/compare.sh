#!/bin/sh
# Times `kiln build` side by side with BuildKit (dockerd's) and buildah on the
# shared workloads (../shared/bench) and prints the medians plus kiln/BuildKit
# ratios. The machine is shared: compare engines only within one run.
#
#   bench/compare.sh [--reps N] [--workloads a,b] [--engines buildkit,buildah,project]
#
# The realistic Debian workloads (apt, pip, npm: bench/debian.sh, which
# needs the internet mirrors) run when --workloads names them, against
# BuildKit only.
#
# Needs ../shared/bench/setup.sh to have been run once (dockerd on
# /run/docker-anchor.sock, buildah, a registry on 127.0.0.1:5000).
# KILN_BIN picks the binary (default: a fresh release build).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${KILN_SHARED:-$here/../shared}
reps=3 workloads=multistage,parallel,manyruns,edit,manyfiles,bigctx
engines=buildkit,buildah,project
while [ $# -gt 0 ]; do
    case $1 in
        --reps) reps=$2; shift 2 ;;
        --workloads) workloads=$2; shift 2 ;;
        --engines) engines=$2; shift 2 ;;
        *) echo "usage: $0 [--reps N] [--workloads a,b] [--engines e1,e2]" >&2; exit 2 ;;
    esac
done
if [ -z "${KILN_BIN:-}" ]; then
    (cd "$here" && cargo build --release -q -p kiln)
    KILN_BIN=${CARGO_TARGET_DIR:-$here/target}/release/kiln
fi
# apt, pip and npm are bench/debian.sh's; the others are ../shared/bench's
debian=$(echo "$workloads" | tr , '\n' | grep -xE 'apt|pip|npm' | paste -sd, -) || true
workloads=$(echo "$workloads" | tr , '\n' | grep -vxE 'apt|pip|npm' | paste -sd, -) || true
if [ -n "$debian" ]; then
    KILN_BIN=$KILN_BIN "$here/bench/debian.sh" --reps "$reps" --workloads "$debian"
    [ -n "$workloads" ] || exit 0
fi
curl -sf http://127.0.0.1:5000/v2/ >/dev/null || { echo "registry on 127.0.0.1:5000 is down: run $shared/bench/setup.sh" >&2; exit 1; }
out=$(mktemp /tmp/kiln-bench.XXXXXX.json)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%FT%TZ)"
cd "$here"
PROJECT_BIN=$KILN_BIN python3 "$shared/bench/run.py" --engines "$engines" \
    --workloads "$workloads" --remote '' --reps "$reps" --json "$out"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"\n{'workload':12s} {'phase':6s} {'kiln':>8s} {'buildkit':>9s} {'ratio':>6s}")
for wl, engines in r.items():
    k, b = engines.get("project", {}), engines.get("buildkit", {})
    for phase in ("cold", "noop", "edit"):
        if phase in k and phase in b:
            print(f"{wl:12s} {phase:6s} {k[phase]:8.3f} {b[phase]:9.3f} {k[phase] / b[phase]:6.2f}")
PY
echo "json: $out"
