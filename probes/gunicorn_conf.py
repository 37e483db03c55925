"""gunicorn settings for the probes app (`gunicorn -c python:probes.gunicorn_conf 'probes.app:create_app()'`).

Started by the supervisor of `ksr run`, which has already prepared PROMETHEUS_MULTIPROC_DIR
and the status board. Workers only serve the probes: no election, no pipeline, ever.

Environment: HTTP_SERVER_PORT, KSR_HTTP_HOST, KSR_HTTP_WORKERS, KSR_HTTP_THREADS,
KSR_LOG_FORMAT, KSR_LOG_LEVEL, read through their declarations (runner/settings/variables.py):
the same defaults and the same errors as `ksr config` (only these, not the whole settings).
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import multiprocess

from runner.logs import dict_config
from runner.process.lifeline import die_with_parent
from runner.settings.variables import HTTP_HOST, HTTP_PORT, HTTP_THREADS, HTTP_WORKERS, LOG_FORMAT, LOG_LEVEL

bind = f"{HTTP_HOST.read()}:{HTTP_PORT.read()}"
workers = HTTP_WORKERS.read()
# Threads so a slow readiness check (Redis or the API server timing out) never blocks /healthz.
worker_class = "gthread"
threads = HTTP_THREADS.read()
timeout = 30
graceful_timeout = 5  # inside the supervisor's wait for its children
keepalive = 5
# The app is built in each worker (after fork): no Redis connection is shared across processes.
preload_app = False
# A new master can bind while workers orphaned by a killed master still hold the port.
reuse_port = True
proc_name = "ksr-probes"
# gunicorn 27's control socket defaults to one path per user ($HOME/.gunicorn): several
# servers on a host would fight over it, and nothing here uses it.
control_socket_disable = True
accesslog = None  # probes every few seconds would drown the runner's log lines
logconfig_dict = dict_config(LOG_FORMAT.read(), LOG_LEVEL.read())


class ListeningAddress(logging.Filter):
    """Puts the address into gunicorn's "Listening at: %s (%s)" line. With reuse_port each
    worker binds its own socket and the master binds none, so gunicorn prints the master's
    empty listener list ("Listening at:  (pid)")."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Listening at: %s (%s)" and isinstance(record.args, tuple) and record.args[:1] == ("",):
            record.args = (self.address, *record.args[1:])
        return True


logconfig_dict["filters"]["listening"] = {"()": ListeningAddress, "address": f"http://{bind}"}
logconfig_dict["loggers"]["gunicorn.error"]["filters"] = ["listening"]


def on_starting(server: Any) -> None:
    # The master, and the workers it forks, end with the supervisor even if it is SIGKILLed.
    die_with_parent()


def child_exit(server: Any, worker: Any) -> None:
    # Drop the dead worker's live gauges; its counters stay, as counters must.
    multiprocess.mark_process_dead(worker.pid)
