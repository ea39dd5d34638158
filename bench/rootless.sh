#!/bin/sh
# Times kiln rootless against kiln as root on the shared workloads
# (../shared/bench, the six of bench/compare.sh), both with kernel overlay,
# interleaved, and prints the medians and the rootless/root ratio (goal: at
# most 1.2x). The work is bench/snapshotters.sh's with two configurations;
# see there for what it needs (root, the registry on 127.0.0.1:5000) and
# what it creates (a temporary user with a subordinate range).
#
#   bench/rootless.sh [--reps N] [--workloads a,b]
set -eu
exec "$(dirname "$0")/snapshotters.sh" --configs overlay,rootless-overlay "$@"
