#!/bin/sh
# Times kiln rootless against kiln as root on the shared workloads
# (../shared/bench, the six of bench/compare.sh) and prints the medians and
# the rootless/root ratio (goal: at most 1.2x).
#
#   bench/rootless.sh [--reps N] [--workloads a,b]
#
# Must start as root: it creates a temporary user with a subordinate id
# range of its own (removed at the end, with the range and the namespace
# holder kiln started), and runs kiln as that user through setpriv.
# Needs ../shared/bench/setup.sh to have been run once (the registry on
# 127.0.0.1:5000). KILN_BIN picks the binary (default: a fresh release build).
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
[ "$(id -u)" = 0 ] || { echo "run as root: it creates a temporary user" >&2; exit 1; }
if [ -z "${KILN_BIN:-}" ]; then
    (cd "$here" && cargo build --release -q -p kiln)
    KILN_BIN=${CARGO_TARGET_DIR:-$here/target}/release/kiln
fi
curl -sf http://127.0.0.1:5000/v2/ >/dev/null || { echo "registry on 127.0.0.1:5000 is down: run $shared/bench/setup.sh" >&2; exit 1; }

user=kilnbench$$
work=$(mktemp -d /tmp/kiln-rootless-bench.XXXXXX)
cleanup() {
    if [ -f "$work/home/root/userns.pid" ]; then
        pid=$(cat "$work/home/root/userns.pid")
        grep -q __userns-pause "/proc/$pid/cmdline" 2>/dev/null && kill -KILL "$pid" || true
    fi
    for f in /etc/subuid /etc/subgid; do
        [ -f "$f" ] && sed -i "/^$user:/d" "$f"
    done
    userdel -f "$user" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
useradd -M -U -s /usr/sbin/nologin -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$user"
# A range past every one already given out.
start=$(cat /etc/subuid /etc/subgid 2>/dev/null | awk -F: 'BEGIN{e=268435456} {if ($2+$3>e) e=$2+$3} END{print e}')
echo "$user:$start:65536" >>/etc/subuid
echo "$user:$start:65536" >>/etc/subgid
mkdir -p "$work/home"
chown "$user:$user" "$work/home"
chmod 755 "$work"
# run.py runs $PROJECT_BIN with KILN_ROOT set to root's store: the wrapper
# gives the user its own.
cat >"$work/kiln-rootless" <<SH
#!/bin/sh
exec setpriv --reuid $user --regid $user --init-groups -- env HOME=$work/home KILN_ROOT=$work/home/root "$KILN_BIN" "\$@"
SH
chmod 755 "$work/kiln-rootless"

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%FT%TZ)"
cd "$here"
PROJECT_BIN=$KILN_BIN python3 "$shared/bench/run.py" --engines project \
    --workloads "$workloads" --remote '' --reps "$reps" --json "$work/root.json"
PROJECT_BIN=$work/kiln-rootless python3 "$shared/bench/run.py" --engines project \
    --workloads "$workloads" --remote '' --reps "$reps" --json "$work/rootless.json"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work/root.json" "$work/rootless.json" <<'PY'
import json, sys
root, rl = (json.load(open(p)) for p in sys.argv[1:3])
print(f"\n{'workload':12s} {'phase':6s} {'root':>8s} {'rootless':>9s} {'ratio':>6s}")
for wl, engines in root.items():
    a, b = engines.get("project", {}), rl.get(wl, {}).get("project", {})
    for phase in ("cold", "noop", "edit"):
        if phase in a and phase in b:
            print(f"{wl:12s} {phase:6s} {a[phase]:8.3f} {b[phase]:9.3f} {b[phase] / a[phase]:6.2f}")
PY
