"""gunicorn settings of a function instance (read by ``python3 -m imagedata``; valid for gunicorn 20.1+).

Sync workers: one call at a time per worker, in the worker's main thread, which is what lets a call's
timeout be a SIGALRM (see ``imagedata.app``). The app (Flask and the user's ``main.py``) is imported once
in the master before it forks the workers (``preload_app``): a cold start pays for one import instead of
one per worker competing for the CPU, and the workers share those pages.
"""

import math

from imagedata import Settings

_settings = Settings.from_env()

bind = [f"0.0.0.0:{_settings.port}"]
workers = _settings.workers
worker_class = "sync"
preload_app = True
# gunicorn kills a worker that is silent for `timeout` seconds; the call's own SIGALRM must act first,
# so the worker answers 504 and lives on.
timeout = math.ceil(_settings.timeout) + 30
# Pods get terminationGracePeriodSeconds 5: finish the calls in flight within that.
graceful_timeout = 4
proc_name = "imagedata"
errorlog = "-"
loglevel = "info"
accesslog = None
