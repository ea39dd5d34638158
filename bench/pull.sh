#!/bin/sh
# Pull + unpack of a base image: `kiln pull` (which unpacks the layers of
# the pulled platform as they download) beside dockerd's `docker pull` of
# the same image from the same local registry, interleaved (the order
# alternates each rep), a fresh store for kiln and `docker rmi` + `docker
# builder prune` for dockerd before every run. Prints each run, medians
# and the kiln/docker ratio; "+sync" adds the `sync` right after (what was
# written but not yet on disk: kiln fsyncs its blobs, dockerd does not).
# Before every run the previous run's files are removed, then `sync` and a
# pause of --settle seconds (default 61): ext4 without a journal (this
# machine's) skips inodes freed in the last 60 s when it allocates new
# ones, at a cost per file that would otherwise land on whichever engine
# runs right after the other's cleanup.
#
#   bench/pull.sh [--reps N] [--settle S] [IMAGE ...]
#
# Default images: 127.0.0.1:5000/speed2/debian:big (a 625 MB debootstrap
# base in 3 layers, see bench/results/speed.md) and
# 127.0.0.1:5000/speed3/many:24 (24 layers of small files and a few MB
# each), which this script builds with kiln and pushes when missing.
# Needs the registry on 127.0.0.1:5000 and ../shared/bench/modern/setup.sh
# (docker 28.5 on unix:///run/docker-modern.sock; else DOCKER_HOST).
# KILN_BIN picks the binary (default: a fresh release build).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
reps=3 settle=61
while [ $# -gt 0 ]; do
    case $1 in
        --reps) reps=$2; shift 2 ;;
        --settle) settle=$2; shift 2 ;;
        -*) echo "usage: $0 [--reps N] [--settle S] [IMAGE ...]" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ -z "${KILN_BIN:-}" ]; then
    (cd "$here" && cargo build --release -q -p kiln)
    KILN_BIN=${CARGO_TARGET_DIR:-$here/target}/release/kiln
fi
curl -sf http://127.0.0.1:5000/v2/ >/dev/null || { echo "registry on 127.0.0.1:5000 is down" >&2; exit 1; }
if [ -z "${DOCKER_HOST:-}" ] && [ -S /run/docker-modern.sock ]; then
    DOCKER_HOST=unix:///run/docker-modern.sock
fi
export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%FT%TZ)  DOCKER_HOST=$DOCKER_HOST"
KILN_BIN=$KILN_BIN python3 - "$reps" "$settle" "$@" <<'PY'
import os, shutil, statistics, subprocess, sys, tempfile, time

reps, settle, images = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
KILN = os.environ["KILN_BIN"]
DOCKER = ["/usr/bin/docker"]
MANY = "127.0.0.1:5000/speed3/many:24"
images = images or ["127.0.0.1:5000/speed2/debian:big", MANY]
WORK = tempfile.mkdtemp(prefix="kiln-pull-bench.", dir="/tmp")

def sh(cmd, env=None, check=True):
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}")
    return r

def timed(cmd, env=None):
    t = time.monotonic()
    sh(cmd, env=env)
    done = time.monotonic() - t
    subprocess.run(["sync"])
    return done, time.monotonic() - t

def kenv(root):
    return dict(os.environ, KILN_ROOT=root)

def make_many():
    """24 layers: each 150 small files and a 2 MB compressible file."""
    root = f"{WORK}/make-root"
    ctx = f"{WORK}/make-ctx"
    os.makedirs(ctx)
    steps = "".join(
        f"RUN mkdir /l{i} && cd /l{i} && for f in $(seq 150); do echo layer {i} file $f > f$f; done"
        f" && seq {i} 1000000 | head -c 2000000 > big\n" for i in range(24))
    with open(f"{ctx}/Dockerfile", "w") as fh:
        fh.write("FROM 127.0.0.1:5000/library/busybox:1.35\n" + steps)
    sh([KILN, "build", "-q", "--network", "none", "-t", MANY, ctx], env=kenv(root))
    sh([KILN, "push", "-q", MANY], env=kenv(root))
    shutil.rmtree(root, ignore_errors=True)

def present(image):
    host, rest = image.split("/", 1)
    repo, tag = rest.rsplit(":", 1)
    accept = ("Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
              "application/vnd.docker.distribution.manifest.v2+json")
    return sh(["curl", "-sf", "-o", "/dev/null", "-H", accept, f"http://{host}/v2/{repo}/manifests/{tag}"],
              check=False).returncode == 0

def docker_reset(image):
    sh(DOCKER + ["image", "rm", "-f", image], check=False)
    sh(DOCKER + ["builder", "prune", "-af"], check=False)
    sh(DOCKER + ["image", "prune", "-f"], check=False)

def settle_down():
    subprocess.run(["sync"])
    time.sleep(settle)

def run_kiln(image):
    root = f"{WORK}/root"
    shutil.rmtree(root, ignore_errors=True)
    docker_reset(image)
    settle_down()
    r = timed([KILN, "pull", "-q", image], env=kenv(root))
    shutil.rmtree(root, ignore_errors=True)
    return r

def run_docker(image):
    docker_reset(image)
    settle_down()
    r = timed(DOCKER + ["pull", "-q", image])
    docker_reset(image)
    return r

try:
    if MANY in images and not present(MANY):
        print(f"making {MANY}", flush=True)
        make_many()
    for image in images:
        res = {"kiln": [], "docker": []}
        for rep in range(reps):
            order = ["kiln", "docker"] if rep % 2 == 0 else ["docker", "kiln"]
            for who in order:
                t, ts = (run_kiln if who == "kiln" else run_docker)(image)
                res[who].append((t, ts))
                print(f"{image} rep {rep + 1} {who:6} {t:7.2f} s  (+sync {ts:7.2f} s)  load {open('/proc/loadavg').read().split()[0]}", flush=True)
        k = statistics.median(t for t, _ in res["kiln"])
        d = statistics.median(t for t, _ in res["docker"])
        ks = statistics.median(t for _, t in res["kiln"])
        ds = statistics.median(t for _, t in res["docker"])
        print(f"== {image}: kiln {k:.2f} s, docker {d:.2f} s, ratio {k / d:.2f}"
              f"  (+sync: {ks:.2f} / {ds:.2f} = {ks / ds:.2f})", flush=True)
finally:
    shutil.rmtree(WORK, ignore_errors=True)
PY
