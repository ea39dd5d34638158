#!/usr/bin/env python3
"""kiln beside BuildKit on realistic Debian builds (bench/debian.sh runs this).

Workloads (bench/debian/workloads/*, FROM the debootstrap base of
make-base.sh): `apt` (apt-get update + install of a few packages, then COPY
of a script folder), `pip` (python3-venv by apt, `pip install -r
requirements.txt` of flask and its dependencies, COPY app.py) and `npm`
(nodejs + npm by apt, `npm ci` of express, COPY index.js). Each is timed
cold (no build cache; the base image pulled), as a no-op rebuild, and after
one app source file was edited. Repetitions are interleaved (rep 1 of every
engine, then rep 2, ...) so both engines see the same load; every run line
carries the load average.

  bench.py --base REF --kiln BIN [--engines kiln,buildkit] [--workloads apt,pip,npm]
           [--reps 3] [--json FILE] [--keep-going]
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = "/tmp/kiln-debian-bench"
TAG = "kiln-debbench:latest"
EDIT = {"apt": "app/status.sh", "pip": "app.py", "npm": "index.js"}
# Names the RUN steps reach; BuildKit's --network host steps get them as
# --add-host, because the bench dockerd's own resolv.conf points nowhere.
HOSTS = ["deb.debian.org", "pypi.org", "files.pythonhosted.org", "registry.npmjs.org"]
# The host's CA bundle goes into each context as host-ca.crt (pip and npm
# steps bind it): a network whose proxy re-signs TLS works for the steps as
# it does for the host.
CA_BUNDLE = os.environ.get("BENCH_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")


def sh(cmd, env=None, check=True):
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}")
    return r


def load():
    with open("/proc/loadavg") as fh:
        return fh.read().split()[0]


class BuildKit:
    name = "buildkit"

    def __init__(self, base, _kiln):
        self.base = base
        self.env = dict(os.environ, DOCKER_BUILDKIT="1",
                        DOCKER_HOST=os.environ.get("DOCKER_HOST", "unix:///run/docker-modern.sock"))
        # /usr/bin/docker: the CLI with the buildx plugin (another docker may come first in PATH)
        self.docker = [os.environ.get("DOCKER_CLI", "/usr/bin/docker")]
        self.hosts = []
        for h in HOSTS:
            try:
                self.hosts += ["--add-host", f"{h}:{socket.gethostbyname(h)}"]
            except OSError:
                pass

    def prepare(self):
        sh(self.docker + ["pull", "-q", self.base], env=self.env)

    def reset(self):
        sh(self.docker + ["builder", "prune", "-af"], env=self.env)
        sh(self.docker + ["image", "rm", "-f", TAG], env=self.env, check=False)

    def build(self, ctx):
        return sh(self.docker + ["build", "--network", "host", *self.hosts, "-q", "-t", TAG, ctx],
                  env=self.env, check=False)

    def cleanup(self):
        self.reset()


class Kiln:
    name = "kiln"

    def __init__(self, base, kiln):
        self.base, self.bin = base, kiln
        self.root = f"{WORK}/kiln-root"
        self.env = dict(os.environ, KILN_ROOT=self.root)

    def prepare(self):
        sh([self.bin, "pull", "-q", self.base], env=self.env)

    def reset(self):
        # keeps the pulled base image, drops the build cache (and the base's
        # unpacked layers: the cold build unpacks them again)
        sh([self.bin, "prune", "--all"], env=self.env)
        sh([self.bin, "rmi", TAG], env=self.env, check=False)

    def build(self, ctx):
        # RUN steps on the host's network, as BuildKit's are here (the bench
        # dockerd has no bridge), unless KILN_BENCH_NETWORK names another
        # ("default": kiln's own namespace behind slirp4netns)
        net = os.environ.get("KILN_BENCH_NETWORK", "host")
        flags = [] if net == "default" else ["--network", net, "--allow", "network.host"]
        return sh([self.bin, "build", "--progress", "plain", *flags, "-t", TAG, ctx],
                  env=self.env, check=False)

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


ENGINES = {"kiln": Kiln, "buildkit": BuildKit}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--engines", default="kiln,buildkit")
    ap.add_argument("--workloads", default="apt,pip,npm")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--keep-going", action="store_true", help="go on after a failed build")
    ap.add_argument("--keep", action="store_true", help="leave the stores and contexts behind")
    a = ap.parse_args()
    engines = [ENGINES[e](a.base, os.path.abspath(a.kiln)) for e in a.engines.split(",")]
    workloads = a.workloads.split(",")
    os.makedirs(WORK, exist_ok=True)
    for e in engines:
        e.prepare()
    times, runs = {}, []
    for rep in range(a.reps):
        for wl in workloads:
            for e in engines:
                ctx = f"{WORK}/ctx/{e.name}-{wl}"
                shutil.rmtree(ctx, ignore_errors=True)
                shutil.copytree(f"{HERE}/workloads/{wl}", ctx)
                shutil.copyfile(CA_BUNDLE, f"{ctx}/host-ca.crt")
                with open(f"{ctx}/Dockerfile") as fh:
                    df = fh.read().replace("FROM BASE", f"FROM {a.base}")
                with open(f"{ctx}/Dockerfile", "w") as fh:
                    fh.write(df)
                e.reset()
                for phase in ("cold", "noop", "edit"):
                    if phase == "edit":
                        with open(f"{ctx}/{EDIT[wl]}", "a") as fh:
                            fh.write(f"\n# edited {time.time()}\n")
                    l0 = load()
                    t0 = time.perf_counter()
                    r = e.build(ctx)
                    dt = time.perf_counter() - t0
                    ok = r.returncode == 0
                    runs.append(dict(rep=rep, workload=wl, engine=e.name, phase=phase,
                                     seconds=round(dt, 3), ok=ok, load=l0))
                    print(f"rep {rep} {wl:4s} {e.name:8s} {phase:5s} {dt:8.3f}s "
                          f"{'ok' if ok else 'FAILED'}  load {l0}", flush=True)
                    # every build's output is kept (with KILN_TIMING=1 in the
                    # environment, kiln's lines say where a step's time went)
                    os.makedirs(f"{WORK}/logs", exist_ok=True)
                    log = f"{WORK}/logs/{e.name}-{wl}-{phase}-r{rep}.log"
                    with open(log, "w") as fh:
                        fh.write(r.stdout)
                    if not ok:
                        print(r.stdout[-3000:], file=sys.stderr)
                        print(f"log: {log}", file=sys.stderr)
                        if not a.keep_going:
                            sys.exit(1)
                        break
                    times.setdefault(wl, {}).setdefault(e.name, {}).setdefault(phase, []).append(dt)
    med = {wl: {en: {p: round(statistics.median(v), 3) for p, v in ph.items()}
                for en, ph in ens.items()} for wl, ens in times.items()}
    print(f"\nmedians of {a.reps}, seconds\n{'workload':8s} {'phase':5s} {'kiln':>8s} {'buildkit':>9s} {'ratio':>6s}")
    for wl, ens in med.items():
        k, b = ens.get("kiln", {}), ens.get("buildkit", {})
        for p in ("cold", "noop", "edit"):
            if p in k and p in b:
                print(f"{wl:8s} {p:5s} {k[p]:8.3f} {b[p]:9.3f} {k[p] / b[p]:6.2f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"medians": med, "runs": runs}, fh, indent=1)
    if not a.keep:
        for e in engines:
            e.cleanup()
        shutil.rmtree(f"{WORK}/ctx", ignore_errors=True)
        print(f"build logs: {WORK}/logs")


if __name__ == "__main__":
    main()
