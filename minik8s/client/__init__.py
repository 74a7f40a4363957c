"""Talking to the apiserver: config, REST clients, informers, work queues.

::

    config.load_config()  → ClientConfig(server, namespace)
    rest.ApiClient / rest.AsyncApiClient   Kubernetes REST calls; errors are minik8s.errors
    informer.Informer      list-then-watch cache of one resource + handlers (asyncio)
    workqueue.WorkQueue    keyed queue with per-key back-off for level-triggered controllers
"""

from minik8s.client.config import ClientConfig, ConfigError, load_config
from minik8s.client.informer import Indexer, Informer, object_key
from minik8s.client.rest import ApiClient, AsyncApiClient
from minik8s.client.workqueue import WorkQueue, run_worker

__all__ = ["ApiClient", "AsyncApiClient", "ClientConfig", "ConfigError", "Indexer", "Informer", "WorkQueue",
           "load_config", "object_key", "run_worker"]
