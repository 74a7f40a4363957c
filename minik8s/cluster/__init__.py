"""One minik8s cluster on this machine: its layout and identity, config files, and up/down/status.

    from minik8s.cluster import Cluster, Layout
    Cluster(Layout("/tmp/mk8s-a")).up()

``python -m minik8s.cluster up|down|status|purge [--home DIR]`` is what ``make up/down/status/clean``
run. The contract (paths, identity keys, flags) is docs/node.md.
"""

from minik8s.cluster.cluster import Cluster, ClusterError, describe
from minik8s.cluster.layout import Identity, Layout, LayoutError, load_identity, resolve_home

__all__ = ["Cluster", "ClusterError", "Identity", "Layout", "LayoutError", "describe", "load_identity",
           "resolve_home"]
