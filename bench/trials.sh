#!/usr/bin/env bash
# Crash and concurrency trials: does the store survive kiln being killed at
# any moment, and several kiln processes at once?
#
# 1. KILLS times (default 100): start one of build / pull / push / load /
#    prune / prune --all on a shared store, SIGKILL it after a random delay
#    (0-400 ms), then check the store: a build, a pull, a push and `kiln
#    images` must all work, and no mount may be left under the store. A
#    trial survives when every check passes.
# 2. ROUNDS times (default 3): 8 builds at once while `prune` and `prune
#    --all` loop beside them; a round survives when every build succeeds
#    and the images run.
# Prints survived/total for each.
#
# Usage: bench/trials.sh              (builds kiln in release mode)
#        KILN=/path/to/kiln KILLS=200 ROUNDS=5 bench/trials.sh
# Needs docker-registry and python3 (see .ci/setup), root.
set -uo pipefail

KILLS=${KILLS:-100}
ROUNDS=${ROUNDS:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
fixture="$here/../shared/fixtures/busybox-1.35-oci.tar"

if [ -z "${KILN:-}" ]; then
  (cd "$here" && cargo build --release -q -p kiln) || exit 1
  KILN="${CARGO_TARGET_DIR:-$here/target}/release/kiln"
fi
for tool in docker-registry python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run .ci/setup" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/kiln-trials.XXXXXX)
reg_pid=
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

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

export KILN_ROOT="$work/store"
"$KILN" load -q -i "$fixture" >/dev/null || exit 1
"$KILN" push -q busybox:1.35 "$reg/bb:1" >/dev/null || { echo "cannot push to $reg" >&2; exit 1; }

# A context whose build takes a moment: several layers, a RUN that writes.
mkdir -p "$work/ctx"
head -c 8000000 /dev/urandom >"$work/ctx/blob"
for i in $(seq 200); do echo "$i" >"$work/ctx/f$i"; done
cat >"$work/ctx/Dockerfile" <<'EOF'
FROM busybox:1.35
COPY . /src
RUN cat /src/blob /src/blob > /twice && sleep 0.1
ARG N=0
RUN echo $N > /n
EOF
"$KILN" save -o "$work/img.tar" busybox:1.35

mounts_left() { grep -c " $work/store" /proc/self/mountinfo || true; }

check() { # the store still works for everything
  local n=$1
  "$KILN" build -q --build-arg "N=check$n" -t "chk:$n" "$work/ctx" >/dev/null 2>"$work/err" || return 1
  "$KILN" images >/dev/null 2>>"$work/err" || return 1
  "$KILN" pull -q "$reg/bb:1" >/dev/null 2>>"$work/err" || return 1
  "$KILN" push -q "chk:$n" "$reg/chk:$n" >/dev/null 2>>"$work/err" || return 1
  "$KILN" rmi "chk:$n" >/dev/null 2>>"$work/err" || return 1
  [ "$(mounts_left)" = 0 ] || { echo "mounts left" >>"$work/err"; return 1; }
}

ops=(build pull push load prune prune-all)
survived=0
for n in $(seq "$KILLS"); do
  op=${ops[$((RANDOM % ${#ops[@]}))]}
  delay=$(python3 -c "import random; print(random.uniform(0, 0.4))")
  case $op in
    build) "$KILN" build -q --build-arg "N=$n" -t "t:$n" "$work/ctx" >/dev/null 2>&1 & ;;
    pull) "$KILN" rmi -f "$reg/bb:1" >/dev/null 2>&1; "$KILN" pull -q "$reg/bb:1" >/dev/null 2>&1 & ;;
    push) "$KILN" push -q busybox:1.35 "$reg/p:$n" >/dev/null 2>&1 & ;;
    load) "$KILN" load -q -i "$work/img.tar" >/dev/null 2>&1 & ;;
    prune) "$KILN" prune >/dev/null 2>&1 & ;;
    prune-all) "$KILN" prune --all >/dev/null 2>&1 & ;;
  esac
  pid=$!
  sleep "$delay"
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if check "$n"; then
    survived=$((survived + 1))
  else
    echo "trial $n ($op after ${delay}s) broke the store:" >&2
    tail -5 "$work/err" >&2
  fi
done
echo "SIGKILL trials: $survived/$KILLS survived"

rounds_ok=0
builds_ok=0
for r in $(seq "$ROUNDS"); do
  pids=()
  for i in $(seq 8); do
    "$KILN" build -q --build-arg "N=r$r-$i" -t "c$i" "$work/ctx" >/dev/null 2>"$work/b$i.err" &
    pids+=($!)
  done
  ok=0
  running=1
  while [ "$running" = 1 ]; do
    "$KILN" prune >/dev/null 2>&1
    "$KILN" prune --all >/dev/null 2>&1
    running=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
  done
  for i in $(seq 8); do
    if wait "${pids[$((i - 1))]}" && [ "$("$KILN" run --rm "c$i" cat /n 2>/dev/null)" = "r$r-$i" ]; then
      ok=$((ok + 1))
    else
      tail -3 "$work/b$i.err" >&2
    fi
  done
  builds_ok=$((builds_ok + ok))
  [ "$ok" = 8 ] && rounds_ok=$((rounds_ok + 1))
done
echo "concurrent builds beside prune: $builds_ok/$((ROUNDS * 8)) builds, $rounds_ok/$ROUNDS rounds survived"
