#!/bin/sh
# A CI-shaped benchmark: fresh "runners" (an empty store each, the base
# image present) share one remote cache, as GitHub/GitLab runners or build
# pods do. Per workload and cache backend, three runners in turn:
#
#   cold   runner 1 builds with nothing cached and exports the cache
#   warm   runner 2 (fresh) imports it, nothing changed, exports again
#   edit   one context file edited; runner 3 (fresh) imports and exports
#
# Backends: kiln through the registry (type=registry) and through an S3
# server (s3s-fs on 127.0.0.1, type=s3), each with mode=min (the final
# image's layers only, what an inline cache holds: the fair comparison
# with BuildKit's inline cache) and mode=max (every stage's layers), and
# BuildKit beside them where it can: today's dockerd (28.5, classic image
# store, docker driver) only exports inline caches, so BuildKit builds
# with BUILDKIT_INLINE_CACHE=1 and pushes the image (its export), and
# imports with --cache-from. BuildKit's own registry cache (mode=max)
# needs the containerd image store or a docker-container builder; with
# --buildkit-max it is tried through `docker buildx build --cache-to
# type=registry,mode=max` and skipped with a note when the daemon refuses.
# Each time is one runner's build including its cache import and export.
# Prints medians and the ratios: kiln mode=min / BuildKit inline, kiln
# mode=max / BuildKit mode=max (else / inline).
#
#   bench/ci.sh [--reps N] [--workloads edit,multistage] [--modes min,max]
#               [--backends registry,s3] [--buildkit-max]
#
# Needs ../shared/bench/setup.sh (registry on 127.0.0.1:5000 with
# busybox:1.35), ../shared/bench/modern/setup.sh (docker 28.5 on
# unix:///run/docker-modern.sock; else DOCKER_HOST picks another dockerd)
# and s3s-fs (.ci/setup). KILN_BIN picks the binary (default: a fresh
# release build).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${KILN_SHARED:-$here/../shared}
reps=3 workloads=edit,multistage modes=min,max backends=registry,s3 bkmax=0
while [ $# -gt 0 ]; do
    case $1 in
        --reps) reps=$2; shift 2 ;;
        --workloads) workloads=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --backends) backends=$2; shift 2 ;;
        --buildkit-max) bkmax=1; shift ;;
        *) echo "usage: $0 [--reps N] [--workloads a,b] [--modes min,max] [--backends registry,s3] [--buildkit-max]" >&2; exit 2 ;;
    esac
done
if [ -z "${KILN_BIN:-}" ]; then
    (cd "$here" && cargo build --release -q -p kiln)
    KILN_BIN=${CARGO_TARGET_DIR:-$here/target}/release/kiln
fi
S3S_FS=$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")
[ -x "$S3S_FS" ] || { echo "s3s-fs is missing: run .ci/setup" >&2; exit 1; }
curl -sf http://127.0.0.1:5000/v2/ >/dev/null || { echo "registry on 127.0.0.1:5000 is down: run $shared/bench/setup.sh" >&2; exit 1; }
if [ -z "${DOCKER_HOST:-}" ] && [ -S /run/docker-modern.sock ]; then
    DOCKER_HOST=unix:///run/docker-modern.sock
fi
export DOCKER_HOST=${DOCKER_HOST:-unix:///run/docker-anchor.sock}
out=$(mktemp /tmp/kiln-ci-bench.XXXXXX.json)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%FT%TZ)  DOCKER_HOST=$DOCKER_HOST"
KILN_BIN=$KILN_BIN S3S_FS=$S3S_FS SHARED=$shared python3 - "$reps" "$workloads" "$out" "$modes" "$backends" "$bkmax" <<'PY'
import json, os, random, shutil, socket, statistics, subprocess, sys, tempfile, time

reps, workloads, out = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
modes, kbackends, bkmax = sys.argv[4].split(","), sys.argv[5].split(","), sys.argv[6] == "1"
SHARED = os.environ["SHARED"]
KILN = os.environ["KILN_BIN"]
REG_BASE = "127.0.0.1:5000/library/busybox:1.35"
WORK = "/tmp/kiln-ci-bench"
DOCKER = ["/usr/bin/docker"]
DENV = dict(os.environ, DOCKER_BUILDKIT="1")
AK, SK, BUCKET = "bench-access", "bench-secret-key-0123456789", "ci-cache"

def sh(cmd, env=None, check=True):
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}")
    return r

def gen_context(name, ctx):
    if name == "edit":
        for d in range(50):
            os.makedirs(f"{ctx}/dir{d}", exist_ok=True)
            for f in range(100):
                with open(f"{ctx}/dir{d}/file{f}.txt", "w") as fh:
                    fh.write(("%d-%d " % (d, f)) * 600)

def edit_one(ctx, name):
    # the edit workload's convention; elsewhere a new file in the context
    p = f"{ctx}/dir0/file0.txt" if name == "edit" else f"{ctx}/edited.txt"
    with open(p, "a") as fh:
        fh.write(f"edit {time.time()}\n")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

s3dir = tempfile.mkdtemp(prefix="kiln-ci-s3.")
os.makedirs(f"{s3dir}/{BUCKET}")
port = free_port()
s3 = subprocess.Popen([os.environ["S3S_FS"], "--host", "127.0.0.1", "--port", str(port),
                       "--access-key", AK, "--secret-key", SK, s3dir],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close(); break
    except OSError:
        time.sleep(0.1)

class Kiln:
    base = REG_BASE
    def __init__(self, backend, mode):
        self.backend, self.mode = backend, mode
    def fresh(self):
        self.root = tempfile.mkdtemp(prefix="kiln-ci-runner.", dir="/var/tmp")
        self.env = dict(os.environ, KILN_ROOT=self.root)
        sh([KILN, "pull", "--progress", "quiet", REG_BASE], env=self.env, check=False)
        if sh([KILN, "images"], env=self.env).stdout.count("busybox") == 0:
            sh([KILN, "pull", REG_BASE], env=self.env)
    def spec(self, ref):
        if self.backend == "registry":
            return f"type=registry,ref=127.0.0.1:5000/kbench-ci/{ref}", f"type=registry,ref=127.0.0.1:5000/kbench-ci/{ref}"
        s = (f"type=s3,bucket={BUCKET},region=us-east-1,endpoint_url=http://127.0.0.1:{port},"
             f"use_path_style=true,access_key_id={AK},secret_access_key={SK},name={ref.replace(':', '-')}")
        return s, s
    def run(self, ctx, ref, first):
        to, frm = self.spec(ref)
        args = [KILN, "build", "--progress", "quiet", "-t", "kbench:latest",
                "--cache-to", to + ",mode=" + self.mode]
        if not first:
            args += ["--cache-from", frm]
        sh(args + [ctx], env=self.env)
    def done(self):
        shutil.rmtree(self.root, ignore_errors=True)

class BuildKit:
    """BuildKit's inline cache: the only export dockerd's docker driver has."""
    base = "busybox:1.35"
    def fresh(self):
        sh(DOCKER + ["builder", "prune", "-af"], env=DENV)
        for img in sh(DOCKER + ["images", "--format", "{{.Repository}}:{{.Tag}}"], env=DENV).stdout.split():
            if "kbench" in img:
                sh(DOCKER + ["image", "rm", "-f", img], env=DENV, check=False)
    def run(self, ctx, ref, first):
        image = f"127.0.0.1:5000/kbench-ci/{ref}"
        args = DOCKER + ["build", "--network", "host", "-q", "--build-arg", "BUILDKIT_INLINE_CACHE=1",
                         "-t", image]
        if not first:
            args += ["--cache-from", image]
        sh(args + [ctx], env=DENV)
        sh(DOCKER + ["push", "-q", image], env=DENV)
    def done(self):
        pass

class BuildKitMax(BuildKit):
    """BuildKit's registry cache, mode=max (needs a daemon that can export it)."""
    def run(self, ctx, ref, first):
        image = f"127.0.0.1:5000/kbench-ci/{ref}"
        cache = f"type=registry,ref=127.0.0.1:5000/kbench-ci/cache-{ref}"
        args = DOCKER + ["buildx", "build", "--network", "host", "-q", "-t", image,
                         "--cache-to", cache + ",mode=max", "--push"]
        if not first:
            args += ["--cache-from", cache]
        sh(args + [ctx], env=DENV)

def buildkit_max_works():
    d = tempfile.mkdtemp(prefix="kiln-ci-probe.")
    with open(f"{d}/Dockerfile", "w") as fh:
        fh.write("FROM busybox:1.35\nRUN true\n")
    r = sh(DOCKER + ["buildx", "build", "-q", "--cache-to",
                     "type=registry,ref=127.0.0.1:5000/kbench-ci/probe,mode=max", d], env=DENV, check=False)
    shutil.rmtree(d, ignore_errors=True)
    if r.returncode:
        print("BuildKit registry cache (mode=max) unavailable here: " + r.stdout.strip().splitlines()[-1], flush=True)
    return r.returncode == 0

BACKENDS = {}
for b in kbackends:
    for m in modes:
        BACKENDS[f"kiln-{b}-{m}"] = (lambda b=b, m=m: Kiln(b, m))
BACKENDS["buildkit-inline"] = BuildKit
if bkmax and buildkit_max_works():
    BACKENDS["buildkit-max"] = BuildKitMax
results = {}
try:
    for wl in workloads:
        src = f"{WORK}/src/{wl}"
        if not os.path.isdir(src):
            os.makedirs(src); gen_context(wl, src)
        for name, make in BACKENDS.items():
            eng = make()
            times = {"cold": [], "warm": [], "edit": []}
            for rep in range(reps):
                ctx = f"{WORK}/ctx/{name}-{wl}"
                shutil.rmtree(ctx, ignore_errors=True)
                shutil.copytree(src, ctx)
                with open(f"{SHARED}/bench/workloads/{wl}/Dockerfile") as fh:
                    df = fh.read().replace("BASE", eng.base)
                with open(f"{ctx}/Dockerfile", "w") as fh:
                    fh.write(df)
                ref = f"{name}-{wl}:r{rep}-{int(time.time())}"
                for phase in ("cold", "warm", "edit"):
                    if phase == "edit":
                        edit_one(ctx, wl)
                    eng.fresh()
                    t0 = time.perf_counter()
                    eng.run(ctx, ref, phase == "cold")
                    times[phase].append(time.perf_counter() - t0)
                    eng.done()
            row = {p: round(statistics.median(v), 3) for p, v in times.items()}
            results.setdefault(wl, {})[name] = row
            print(f"{wl:11s} {name:16s} " + "  ".join(f"{p}={v:.3f}s" for p, v in row.items()), flush=True)
finally:
    s3.terminate(); s3.wait()
    shutil.rmtree(s3dir, ignore_errors=True)
json.dump(results, open(out, "w"), indent=1)
# Ratios: mode=min against the inline cache (both only the final image's
# layers), mode=max against BuildKit's mode=max when it ran, else inline.
kcols = [n for n in BACKENDS if n.startswith("kiln-")]
def against(n):
    return "buildkit-max" if n.endswith("-max") and "buildkit-max" in BACKENDS else "buildkit-inline"
print(f"\n{'workload':11s} {'phase':5s} " + " ".join(f"{n:>18s}" for n in BACKENDS)
      + " " + " ".join(f"{n.replace('kiln-', '') + '/' + against(n).replace('buildkit-', 'bk-'):>22s}" for n in kcols))
for wl, r in results.items():
    for p in ("cold", "warm", "edit"):
        print(f"{wl:11s} {p:5s} " + " ".join(f"{r[n][p]:18.3f}" for n in BACKENDS)
              + " " + " ".join(f"{r[n][p] / r[against(n)][p]:22.2f}" for n in kcols))
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "json: $out"
