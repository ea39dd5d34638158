#!/bin/sh
# Times kiln with each snapshotter (`overlay`, `fuse`, `copy`) on the shared
# workloads (../shared/bench, the six of bench/compare.sh) and prints the
# medians and each one's ratio to overlay. The machine is shared: compare
# snapshotters only within one run.
#
#   bench/snapshotters.sh [--reps N] [--workloads a,b]
#
# Needs ../shared/bench/setup.sh to have been run once (the registry on
# 127.0.0.1:5000). KILN_BIN picks the binary (default: a fresh release build).
# The snapshotter is pinned through $KILN_ROOT/config.json by a wrapper, as
# run.py gives kiln its own KILN_ROOT and no extra flags.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${KILN_SHARED:-$here/../shared}
reps=3 workloads=multistage,parallel,manyruns,edit,manyfiles,bigctx
while [ $# -gt 0 ]; do
    case $1 in
        --reps) reps=$2; shift 2 ;;
        --workloads) workloads=$2; shift 2 ;;
        *) echo "usage: $0 [--reps N] [--workloads a,b]" >&2; exit 2 ;;
    esac
done
if [ -z "${KILN_BIN:-}" ]; then
    (cd "$here" && cargo build --release -q -p kiln)
    KILN_BIN=${CARGO_TARGET_DIR:-$here/target}/release/kiln
fi
curl -sf http://127.0.0.1:5000/v2/ >/dev/null || { echo "registry on 127.0.0.1:5000 is down: run $shared/bench/setup.sh" >&2; exit 1; }
work=$(mktemp -d /tmp/kiln-snap-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%FT%TZ)"
cd "$here"
for s in overlay fuse copy; do
    cat >"$work/kiln-$s" <<SH
#!/bin/sh
mkdir -p "\$KILN_ROOT" && printf '{"snapshotter":"$s"}' >"\$KILN_ROOT/config.json"
exec "$KILN_BIN" "\$@"
SH
    chmod +x "$work/kiln-$s"
    PROJECT_BIN=$work/kiln-$s python3 "$shared/bench/run.py" --engines project \
        --workloads "$workloads" --remote '' --reps "$reps" --json "$work/$s.json"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work" <<'PY'
import json, sys
d = sys.argv[1]
r = {s: json.load(open(f"{d}/{s}.json")) for s in ("overlay", "fuse", "copy")}
print(f"\n{'workload':12s} {'phase':6s} {'overlay':>8s} {'fuse':>8s} {'copy':>8s} {'fuse/ov':>8s} {'copy/ov':>8s}")
for wl in r["overlay"]:
    o = r["overlay"][wl].get("project", {})
    f = r["fuse"].get(wl, {}).get("project", {})
    c = r["copy"].get(wl, {}).get("project", {})
    for phase in ("cold", "noop", "edit"):
        if phase in o and phase in f and phase in c:
            print(f"{wl:12s} {phase:6s} {o[phase]:8.3f} {f[phase]:8.3f} {c[phase]:8.3f}"
                  f" {f[phase] / o[phase]:8.2f} {c[phase] / o[phase]:8.2f}")
PY
