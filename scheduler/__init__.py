"""The minik8s scheduler: binds pending pods to nodes (filter → score → bind). See README.md.

    snapshot   PodInfo / NodeInfo / Snapshot (immutable) and the SchedulerCache (assume / forget)
    filters    may the pod run on the node? (ready, selector, resources, host ports)
    scores     how good is each feasible node? (least requested, balanced, owner spread)
    schedule   schedule(pod, snapshot, policy=…) -> Decision(node | None, reasons)   (pure)
    binder     the writes: binding, PodScheduled condition, Events
    scheduler  the daemon loop: informers, work queue, assume-then-bind
    main       the console script ``minik8s-scheduler``
"""

from scheduler.schedule import Decision, schedule
from scheduler.snapshot import NodeInfo, PodInfo, SchedulerCache, Snapshot

__all__ = ["Decision", "NodeInfo", "PodInfo", "SchedulerCache", "Snapshot", "schedule"]
