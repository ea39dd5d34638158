#!/usr/bin/env bash
# Compression benchmark: gzip of a SIZE_MIB (default 1024 MiB) layer of
# realistic data (the files of /usr, repeated under new names until the
# size is reached: binaries, libraries, text, some already compressed) by
#   - kiln before the parallel compressor (a binary built from BASE,
#     default `main`, into a temporary folder; or KILN_BEFORE=path),
#   - kiln now (this checkout; or KILN=path),
# each for `kiln save` (docker archive, gzip layers) and for a push to a
# local docker-registry on a free loopback port (gzip, docker's default),
# and `pigz -6` and `gzip -6` on the same tar for reference. Prints MiB/s
# of uncompressed input (higher is better) and the CPU seconds each took
# (on a busy machine wall time shows little of what parallelism gains;
# CPU time shows what it costs) and the compressed size (the save archive
# whole, the pushed layer blob, the .gz). One run; compare within one run
# only. BASE=c73f3c8^ is the code before the parallel compressor.
#
# Usage: bench/compress.sh
#        KILN=... KILN_BEFORE=... SIZE_MIB=256 bench/compress.sh
# Needs docker-registry, pigz, gzip, python3 (see .ci/setup).
set -euo pipefail

SIZE_MIB=${SIZE_MIB:-1024}
BASE=${BASE:-main}
here=$(cd "$(dirname "$0")/.." && pwd)
for tool in docker-registry pigz gzip python3 git; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run .ci/setup" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/kiln-bench-compress.XXXXXX)
reg_pid=
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${KILN:-}" ]; then
  (cd "$here" && cargo build --release -q -p kiln)
  KILN="${CARGO_TARGET_DIR:-$here/target}/release/kiln"
fi
if [ -z "${KILN_BEFORE:-}" ]; then
  # The code as it was, built apart (not a switch in the new binary).
  echo "building kiln at $BASE into $work/before ..." >&2
  mkdir -p "$work/before-src"
  git -C "$here" archive "$BASE" | tar -x -C "$work/before-src"
  (cd "$work/before-src" && CARGO_TARGET_DIR="$work/before-target" cargo build --release -q -p kiln)
  KILN_BEFORE="$work/before-target/release/kiln"
fi

# 1. An OCI layout with one uncompressed layer of SIZE_MIB from /usr.
python3 - "$work/layout" "$SIZE_MIB" <<'EOF'
import hashlib, io, json, os, sys, tarfile
out, size = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
blobs = os.path.join(out, "blobs", "sha256"); os.makedirs(blobs)
files = []
for top in ("/usr/bin", "/usr/lib", "/usr/share", "/usr/libexec", "/usr/sbin"):
    for d, _, names in os.walk(top):
        for n in sorted(names):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                try:
                    if os.path.getsize(p) <= 64 << 20 and os.access(p, os.R_OK):
                        files.append(p)
                except OSError:
                    pass
files.sort()
tmp = os.path.join(out, "layer.tar")
written, rnd = 0, 0
with open(tmp, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as t:
    while written < size:
        for p in files:
            if written >= size:
                break
            try:
                data = open(p, "rb").read()
            except OSError:
                continue
            data = data[: size - written]
            info = tarfile.TarInfo(f"r{rnd}{p}"); info.size = len(data); info.mtime = 0; info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
            written += len(data)
        rnd += 1
h = hashlib.sha256()
with open(tmp, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
d = h.hexdigest(); n = os.path.getsize(tmp)
os.rename(tmp, os.path.join(blobs, d))
def put(data):
    x = hashlib.sha256(data).hexdigest()
    open(os.path.join(blobs, x), "wb").write(data)
    return "sha256:" + x, len(data)
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d]}}).encode()
cd, cn = put(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                              "digest": "sha256:" + d, "size": n}]}).encode()
md, mn = put(man)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "big"}}]},
          open(os.path.join(out, "index.json"), "w"))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
open(os.path.join(out, "layer-path"), "w").write(os.path.join(blobs, d))
EOF
tarfile=$(cat "$work/layout/layer-path")
mib=$(python3 -c "import os; print(os.path.getsize('$tarfile') / 1048576)")

start_registry() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
EOF
  docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
  reg_pid=$!
  for _ in $(seq 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null && break
    sleep 0.1
  done
  reg=127.0.0.1:$port
}
start_registry

declare -A secs cpu size
timeit() { # timeit NAME cmd...: wall seconds and CPU seconds (user+sys)
  local name=$1; shift
  local r
  r=$(python3 -c '
import resource, subprocess, sys, time
t = time.monotonic()
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
e = time.monotonic() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{e:.3f} {u.ru_utime + u.ru_stime:.3f} {p.returncode}")' "$@")
  set -- $r
  [ "$3" = 0 ] || { echo "failed: $name" >&2; exit 1; }
  secs[$name]=$1; cpu[$name]=$2
  echo "  $name: ${1}s wall, ${2}s CPU" >&2
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, ${mib} MiB tar" >&2
for who in before after; do
  bin=$KILN; [ "$who" = before ] && bin=$KILN_BEFORE
  root="$work/root-$who"
  KILN_ROOT="$root" "$bin" load -i "$work/layout" --tag big:1 >/dev/null
  # The store remembers each layer's compressed form (compressed/): drop
  # the memo so every run compresses anew.
  rm -rf "$root/compressed"
  timeit "$who-save" env KILN_ROOT="$root" "$bin" save --compression gzip -o "$work/save-$who.tar" big:1
  size[$who-save]=$(stat -c %s "$work/save-$who.tar")
  rm -rf "$root/compressed" "$work/save-$who.tar"
  timeit "$who-push" env KILN_ROOT="$root" "$bin" push -q big:1 "$reg/$who/big:1"
  # The pushed layer's size, as its manifest in the registry gives it.
  size[$who-push]=$(python3 -c '
import json, sys, urllib.request
r = urllib.request.Request(sys.argv[1], headers={"Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
print(sum(l["size"] for l in json.load(urllib.request.urlopen(r))["layers"]))' "http://$reg/v2/$who/big/manifests/1")
  rm -rf "$root"
done
timeit pigz sh -c "pigz -6 -c '$tarfile' >'$work/out.gz'"
size[pigz]=$(stat -c %s "$work/out.gz")
timeit gzip sh -c "gzip -6 -c '$tarfile' >'$work/out.gz'"
size[gzip]=$(stat -c %s "$work/out.gz")
rm -f "$work/out.gz"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

args=()
for k in before-save after-save before-push after-push pigz gzip; do args+=("${secs[$k]}" "${cpu[$k]}" "${size[$k]:-0}"); done
python3 - "$mib" "$(nproc)" "${args[@]}" <<'EOF'
import sys
mib, cores = float(sys.argv[1]), sys.argv[2]
v = list(map(float, sys.argv[3:]))
names = ["kiln save before", "kiln save after", "kiln push before", "kiln push after", "pigz -6", "gzip -6"]
print(f"gzip benchmark: {mib:.0f} MiB layer from /usr, {cores} cores")
print(f"  {'':18s} {'wall MiB/s':>10s} {'CPU s':>8s} {'MiB per CPU s':>14s} {'out MiB':>8s} {'ratio':>6s}")
for i, n in enumerate(names):
    wall, cpu, out = v[3 * i], v[3 * i + 1], v[3 * i + 2] / 1048576
    print(f"  {n:18s} {mib / wall:10.1f} {cpu:8.1f} {mib / max(cpu, 1e-9):14.1f} {out:8.1f} {out / mib:6.3f}")
EOF
