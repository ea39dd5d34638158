#!/bin/sh
# Times kiln on the shared workloads (../shared/bench, the six of
# bench/compare.sh) in five configurations and prints the medians and each
# one's ratio to root with kernel overlay (goals: rootless overlay at most
# 1.2x, FUSE at most 2x):
#
#   overlay           root, kernel overlayfs
#   fuse              root, kiln's overlay over FUSE
#   copy              root, full copies
#   rootless-overlay  a plain user (its user namespace), kernel overlay (userxattr)
#   rootless-fuse     a plain user, kiln's FUSE overlay
#
#   bench/snapshotters.sh [--reps N] [--workloads a,b] [--configs a,b]
#
# The machine is shared and noisy, so the runs are interleaved: each
# repetition runs every configuration once (run.py --reps 1), and the
# medians are taken over the repetitions. Compare within one run only.
#
# Must start as root: for the rootless configurations it creates a
# temporary user with a subordinate id range of its own (removed at the
# end, with the range and the namespace holder kiln started) and runs kiln
# as that user through setpriv. Each configuration has a store of its own,
# its snapshotter pinned in $KILN_ROOT/config.json (run.py passes no extra
# flags). Needs ../shared/bench/setup.sh to have been run once (the
# registry on 127.0.0.1:5000). KILN_BIN picks the binary (default: a fresh
# release build).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${KILN_SHARED:-$here/../shared}
reps=3 workloads=multistage,parallel,manyruns,edit,manyfiles,bigctx
configs=overlay,fuse,copy,rootless-overlay,rootless-fuse
while [ $# -gt 0 ]; do
    case $1 in
        --reps) reps=$2; shift 2 ;;
        --workloads) workloads=$2; shift 2 ;;
        --configs) configs=$2; shift 2 ;;
        *) echo "usage: $0 [--reps N] [--workloads a,b] [--configs a,b]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run as root: it creates a temporary user" >&2; exit 1; }
if [ -z "${KILN_BIN:-}" ]; then
    (cd "$here" && cargo build --release -q -p kiln)
    KILN_BIN=${CARGO_TARGET_DIR:-$here/target}/release/kiln
fi
curl -sf http://127.0.0.1:5000/v2/ >/dev/null || { echo "registry on 127.0.0.1:5000 is down: run $shared/bench/setup.sh" >&2; exit 1; }
case ",$configs," in *,overlay,*) ;; *) configs=overlay,$configs ;; esac

user=kilnbench$$
work=$(mktemp -d /tmp/kiln-snap-bench.XXXXXX)
chmod 755 "$work"
made_user=
cleanup() {
    for pidfile in "$work"/home-*/root/userns.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        grep -q __userns-pause "/proc/$pid/cmdline" 2>/dev/null && kill -KILL "$pid" || true
    done
    if [ -n "$made_user" ]; then
        for f in /etc/subuid /etc/subgid; do
            [ -f "$f" ] && sed -i "/^$user:/d" "$f"
        done
        userdel -f "$user" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
case $configs in *rootless*)
    useradd -M -U -s /usr/sbin/nologin -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$user"
    made_user=1
    # A range past every one already given out.
    start=$(cat /etc/subuid /etc/subgid 2>/dev/null | awk -F: 'BEGIN{e=268435456} {if ($2+$3>e) e=$2+$3} END{print e}')
    echo "$user:$start:65536" >>/etc/subuid
    echo "$user:$start:65536" >>/etc/subgid
    ;;
esac
for c in $(echo "$configs" | tr , ' '); do
    snap=${c#rootless-}
    if [ "$snap" = "$c" ]; then
        # run.py gives every kiln the same $KILN_ROOT: the wrapper gives
        # each configuration its own, with its snapshotter.
        cat >"$work/kiln-$c" <<SH
#!/bin/sh
export KILN_ROOT=$work/root-$c
mkdir -p "\$KILN_ROOT" && printf '{"snapshotter":"$snap"}' >"\$KILN_ROOT/config.json"
exec "$KILN_BIN" "\$@"
SH
    else
        home=$work/home-$c
        mkdir -p "$home/root"
        printf '{"snapshotter":"%s"}' "$snap" >"$home/root/config.json"
        chown -R "$user:$user" "$home"
        cat >"$work/kiln-$c" <<SH
#!/bin/sh
exec setpriv --reuid $user --regid $user --init-groups -- env HOME=$home KILN_ROOT=$home/root "$KILN_BIN" "\$@"
SH
    fi
    chmod 755 "$work/kiln-$c"
done
if [ "$(stat -c %a /dev/fuse 2>/dev/null)" != 666 ]; then
    echo "note: /dev/fuse is $(stat -c %a /dev/fuse 2>/dev/null || echo missing): rootless-fuse will fail (.ci/setup makes it 0666)" >&2
fi

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%FT%TZ)  $(nproc) cores"
cd "$here"
rep=1
while [ "$rep" -le "$reps" ]; do
    for c in $(echo "$configs" | tr , ' '); do
        echo "== rep $rep: $c (load $(cut -d' ' -f1 /proc/loadavg))"
        # run.py's folders (/tmp/kbench) are shared with anyone else
        # benchmarking here: a clash loses one run, not the whole table.
        PROJECT_BIN=$work/kiln-$c python3 "$shared/bench/run.py" --engines project \
            --workloads "$workloads" --remote '' --reps 1 --json "$work/$c.$rep.json" \
            || echo "warning: rep $rep of $c failed; left out of the medians" >&2
    done
    rep=$((rep + 1))
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%FT%TZ)"
python3 - "$work" "$configs" "$reps" <<'PY'
import json, statistics, sys
d, configs, reps = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
import os
runs = {c: [json.load(open(f"{d}/{c}.{r}.json")) for r in range(1, reps + 1)
            if os.path.exists(f"{d}/{c}.{r}.json")] for c in configs}
if not runs["overlay"]:
    sys.exit("no run of overlay finished")
def med(c, wl, phase):
    v = [r[wl]["project"][phase] for r in runs[c] if phase in r.get(wl, {}).get("project", {})]
    return statistics.median(v) if v else None
others = [c for c in configs if c != "overlay"]
print(f"\nmedians of {reps} interleaved runs, seconds; ratio = config / root overlay")
print(f"{'workload':11s} {'phase':5s} {'overlay':>8s}" + "".join(f" {c:>17s}" for c in others))
ratios = {c: [] for c in others}
for wl in runs["overlay"][0]:
    for phase in ("cold", "noop", "edit"):
        base = med("overlay", wl, phase)
        if base is None:
            continue
        row = f"{wl:11s} {phase:5s} {base:8.3f}"
        for c in others:
            v = med(c, wl, phase)
            if v is None:
                row += f" {'-':>17s}"
            else:
                ratios[c].append(v / base)
                row += f" {v:8.3f} ({v / base:5.2f}x)"
        print(row)
print("\ngeometric mean of the ratios (cold, noop and edit phases):")
for c, rs in ratios.items():
    if rs:
        g = 1.0
        for r in rs:
            g *= r
        print(f"  {c:17s} {g ** (1 / len(rs)):5.2f}x  (worst {max(rs):.2f}x)")
PY
