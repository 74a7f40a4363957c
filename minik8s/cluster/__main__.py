"""``python -m minik8s.cluster up|down|status|purge [--home DIR]`` (``make up/down/status/clean``)."""

from __future__ import annotations

import argparse
import os
import sys

from minik8s.cluster.cluster import Cluster, ClusterError, describe
from minik8s.cluster.layout import Layout, LayoutError, resolve_home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minik8s.cluster", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status", "purge"))
    parser.add_argument("--home", help="the cluster's folder (default $MINIK8S_HOME, else ~/.minik8s)")
    args = parser.parse_args(argv)
    layout = Layout(resolve_home(args.home))
    env = dict(os.environ)
    env["MINIK8S_HOME"] = str(layout.home)
    cluster = Cluster(layout, environ=env)
    try:
        if args.command == "up":
            cluster.up()
        elif args.command == "down":
            if not layout.home.is_dir():
                print(f"no cluster in {layout.home}")
                return 0
            return 1 if cluster.down() else 0
        elif args.command == "purge":
            cluster.purge()
        else:
            procs = cluster.status()
            print(describe(procs, layout))
            if procs is None or any(p["statename"] != "RUNNING" for p in procs):
                return 3
    except (ClusterError, LayoutError) as exc:
        print(f"minik8s: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
