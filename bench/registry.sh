#!/usr/bin/env bash
# Registry benchmark: push and pull an image of SIZE_MIB (default 1024 MiB)
# in LAYERS layers (default 4) to and from a local docker-registry on
# loopback, with kiln and with `skopeo copy` in the same run, ROUNDS times
# (default 2, alternating who goes first), and print the best times and
# the kiln/skopeo ratios (below 1.00 means kiln is faster).
#
# Usage: bench/registry.sh            (builds kiln in release mode)
#        KILN=/path/to/kiln bench/registry.sh
# Needs docker-registry, skopeo, python3 (see .ci/setup).
set -euo pipefail

SIZE_MIB=${SIZE_MIB:-1024}
LAYERS=${LAYERS:-4}
ROUNDS=${ROUNDS:-2}
here=$(cd "$(dirname "$0")/.." && pwd)

if [ -z "${KILN:-}" ]; then
  (cd "$here" && cargo build --release -q -p kiln)
  KILN="${CARGO_TARGET_DIR:-$here/target}/release/kiln"
fi
for tool in docker-registry skopeo python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run .ci/setup" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
reg_pid=
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. An OCI layout with incompressible layers (uncompressed tar media type:
#    the benchmark measures transport, hashing and storage, not gzip).
python3 - "$work/layout" "$SIZE_MIB" "$LAYERS" <<'EOF'
import hashlib, io, json, os, sys, tarfile
out, size_mib, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blobs = os.path.join(out, "blobs", "sha256"); os.makedirs(blobs)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(os.path.join(blobs, d), "wb").write(data)
    return "sha256:" + d, len(data)
per = size_mib * 1024 * 1024 // layers
descs, diff_ids = [], []
for i in range(layers):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo(f"data/layer{i}.bin"); info.size = per; info.mtime = 0
        t.addfile(info, io.BytesIO(os.urandom(per)))
    d, n = put(buf.getvalue())
    descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})
    diff_ids.append(d)
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cd, cn = put(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                  "layers": descs}).encode()
md, mn = put(man)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "big"}}]},
          open(os.path.join(out, "index.json"), "w"))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
EOF

# 2. A fresh registry on a free loopback port for each round, so neither
#    tool finds blobs (or, for skopeo, mount sources in its blob-info cache)
#    left by an earlier round.
start_registry() { # start_registry N -> sets $reg
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
    rootdirectory: $work/registry$1
  delete:
    enabled: true
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
stop_registry() {
  kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null || true; reg_pid=
  rm -rf "$work"/registry[0-9]*
}

export KILN_ROOT="$work/kiln-src"
"$KILN" load -i "$work/layout" --tag big:1 >/dev/null

now() { python3 -c 'import time; print(time.monotonic())'; }
timeit() { # timeit VAR cmd...
  local var=$1; shift
  local t0 t1
  t0=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; t1=$(now)
  local dt; dt=$(python3 -c "print(f'{$t1-$t0:.3f}')")
  local best=${!var:-}
  if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $dt < $best else 1)"; then
    printf -v "$var" '%s' "$dt"
  fi
  echo "  $var round: ${dt}s" >&2
}

kiln_push=; skopeo_push=; kiln_pull=; skopeo_pull=
for r in $(seq "$ROUNDS"); do
  start_registry "$r"
  # --compression uncompressed: skopeo copies the layers as they are, so
  # kiln must too (its default gzips plain layers, as docker does).
  kp() { KILN_ROOT="$work/kiln-src" "$KILN" push -q --compression uncompressed big:1 "$reg/kiln$r/big:1"; }
  sp() { skopeo copy -q --dest-tls-verify=false "oci:$work/layout:big" "docker://$reg/skopeo$r/big:1"; }
  kl() { rm -rf "$work/kiln-dst"; KILN_ROOT="$work/kiln-dst" "$KILN" pull -q "$reg/kiln$r/big:1"; }
  sl() { rm -rf "$work/skopeo-dst"; skopeo copy -q --src-tls-verify=false "docker://$reg/skopeo$r/big:1" "oci:$work/skopeo-dst:big"; }
  if [ $((r % 2)) -eq 1 ]; then
    timeit kiln_push kp; timeit skopeo_push sp; timeit kiln_pull kl; timeit skopeo_pull sl
  else
    timeit skopeo_push sp; timeit kiln_push kp; timeit skopeo_pull sl; timeit kiln_pull kl
  fi
  stop_registry
done

python3 - "$SIZE_MIB" "$LAYERS" "$kiln_push" "$skopeo_push" "$kiln_pull" "$skopeo_pull" <<'EOF'
import sys
mib, layers = int(sys.argv[1]), int(sys.argv[2])
kp, sp, kl, sl = map(float, sys.argv[3:])
print(f"registry benchmark: {mib} MiB in {layers} layers, loopback docker-registry (best of rounds)")
print(f"  push: kiln {kp:6.2f}s ({mib/kp:6.0f} MiB/s)   skopeo {sp:6.2f}s ({mib/sp:6.0f} MiB/s)   kiln/skopeo {kp/sp:.2f}")
print(f"  pull: kiln {kl:6.2f}s ({mib/kl:6.0f} MiB/s)   skopeo {sl:6.2f}s ({mib/sl:6.0f} MiB/s)   kiln/skopeo {kl/sl:.2f}")
EOF
