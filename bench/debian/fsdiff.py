#!/usr/bin/env python3
"""Compares two images' file systems as ../shared/oracle/imagefs.py describes
them, and sorts the differences by kind, so what is expected (logs, caches,
timestamps inside files) is told apart from what is an engine's bug (owners,
modes, missing files, whiteouts not applied).

  fsdiff.py A.json B.json [--names kiln,buildkit] [--show N]
"""
import argparse, json, sys
from collections import Counter, defaultdict

FIELDS = ["type", "mode", "uid", "gid", "size", "content"]


def area(path):
    parts = path.strip("/").split("/")
    return "/" + "/".join(parts[:3 if parts[0] == "var" else 2])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--names", default="a,b")
    ap.add_argument("--show", type=int, default=8)
    a = ap.parse_args()
    na, nb = a.names.split(",")
    A, B = (json.load(open(p)) for p in (a.a, a.b))
    fa, fb = A["fs"], B["fs"]
    print(f"{na}: {len(fa)} paths, {A['layers']} layers; {nb}: {len(fb)} paths, {B['layers']} layers")
    if A["config"] != B["config"]:
        for k in sorted(set(A["config"]) | set(B["config"])):
            if A["config"].get(k) != B["config"].get(k):
                print(f"config {k}: {na}={A['config'].get(k)!r} {nb}={B['config'].get(k)!r}")
    kinds = defaultdict(list)
    for p in sorted(set(fa) | set(fb)):
        x, y = fa.get(p), fb.get(p)
        if x == y:
            continue
        if x is None:
            kinds[f"only in {nb}"].append(p)
        elif y is None:
            kinds[f"only in {na}"].append(p)
        else:
            diff = [f for f, u, v in zip(FIELDS, x, y) if u != v]
            kinds["differs: " + ",".join(diff)].append(p)
    if not kinds:
        print("same files, modes, owners and contents")
    for kind, paths in sorted(kinds.items()):
        areas = Counter(area(p) for p in paths)
        print(f"\n{kind}: {len(paths)} paths; by area: "
              + ", ".join(f"{ar} {n}" for ar, n in areas.most_common(8)))
        for p in paths[:a.show]:
            print(f"  {p}  {na}={fa.get(p)}  {nb}={fb.get(p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
