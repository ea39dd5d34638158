#!/bin/sh
# Regenerates the golden outputs of every case from a real `docker compose`
# v2 (the oracle) in a Debian sid chroot: CHROOT=/srv/sid by default, with
# `apt-get install docker-compose` done. Each case folder holds the compose
# files, optionally `args` (global flags) and `env` (KEY=VALUE lines for the
# process environment). Outputs: expected.yaml / expected.json (stdout) or
# expected.err (stderr of a failing run); the case's absolute path is
# written as @DIR@ so the goldens do not depend on where the tree lives.
set -eu
CHROOT=${CHROOT:-/srv/sid}
here=$(cd "$(dirname "$0")" && pwd)
work=/tmp/kiln-compose-goldens
rm -rf "$CHROOT$work"
mkdir -p "$CHROOT$work"
for case in "$here"/*/; do
  name=$(basename "$case")
  cp -a "$case" "$CHROOT$work/$name"
  rm -f "$CHROOT$work/$name"/expected.*
  args=""
  [ -f "$case/args" ] && args=$(cat "$case/args")
  envs=""
  [ -f "$case/env" ] && envs=$(grep -v '^#' "$case/env" | tr '\n' ' ')
  for fmt in yaml json; do
    if chroot "$CHROOT" env -i PATH=/usr/bin:/bin HOME=/root $envs sh -c \
        "cd $work/$name && docker compose $args config --format $fmt" \
        > /tmp/kiln-golden.out 2> /tmp/kiln-golden.err; then
      sed "s#$work/$name#@DIR@#g" /tmp/kiln-golden.out > "$case/expected.$fmt"
    else
      sed "s#$work/$name#@DIR@#g" /tmp/kiln-golden.err > "$case/expected.err"
      break
    fi
  done
done
rm -rf "$CHROOT$work"
