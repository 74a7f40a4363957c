"""The apiserver's configuration: one frozen object built from flags and ``MINIK8S_*`` env vars."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    etcd_endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    bind_address: str = "127.0.0.1"
    port: int = 6443
    # How often old etcd revisions are compacted (Kubernetes: 5 minutes); 0 turns it off.
    compaction_interval: float = 300.0
    # Events expire through an etcd lease (Kubernetes' --event-ttl default: 1 hour).
    event_ttl: int = 3600
    service_cluster_ip_range: str = "10.96.0.0/16"
    service_node_port_range: str = "30000-32767"
    max_request_bytes: int = 3 * 1024 * 1024
    # How many past events each watch cache keeps in memory for resuming watches.
    watch_cache_window: int = 10000
    # Watch bookmarks are sent this often to clients that asked for them (Kubernetes: ~1 minute).
    bookmark_interval: float = 60.0
    # How often the namespace reaper looks for terminating namespaces to empty.
    namespace_sync_interval: float = 5.0
    # The serverless gateway that receives function code uploads (functions/NAME/code); "" = none.
    serverless_url: str = ""
    # An upload may wait this long for the gateway (it checks and stores the code; a build may pip install).
    serverless_timeout: float = 120.0
    # The body limit of a code upload: twice the gateway's default --max-code-bytes (8 MiB), so the
    # gateway, not the apiserver, gives the precise "too large" answer for sizes near its limit.
    max_code_upload_bytes: int = 16 * 1024 * 1024
    log_level: str = "info"
