"""Assembles a `Runner` from the settings: every collaborator it drives, built here and
handed to it, so the Runner itself builds nothing and each part can be tested on its own.

`build_runner` is what `ksr run` and the test harness call; the choices between parts (the
Kubernetes or the local executor, the Lease or the Redis lock) are made here and nowhere
else.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import redis
from kubernetes import client as k8s

from election.clock import SYSTEM_CLOCK, Clock
from election.elector import Elector
from election.lease_lock import LeaseLock
from election.lock import Lock
from election.redis_lock import RedisLock
from runner.callbacks.enqueue import CallbackQueue
from runner.jobs.executors import Executor, KubernetesExecutor, LocalExecutor
from runner.jobs.kube import KubeApi
from runner.jobs.throttle import KubeThrottle
from runner.jobs.tracker import Tracker
from runner.jobs.watcher import KubeWatcher
from runner.metrics import MetricsObserver
from runner.pipeline.cancels import Cancels
from runner.pipeline.delay import DelayGate
from runner.pipeline.dispatcher import Dispatcher
from runner.pipeline.loop import Runner, Tenure
from runner.pipeline.presence import PresenceObserver
from runner.pipeline.scheduler import Scheduler
from runner.schedules.config import load_schedules
from runner.schedules.ticker import Ticker
from runner.settings import Settings
from runner.signals import GroupRecreated, Observer, Signals
from runner.store.connection import connect
from runner.store.pause import PauseStore, pause_namespace
from runner.store.redis_time import RedisTime
from runner.store.schedule import ScheduledStore
from runner.store.state import StateStore
from runner.store.stream_inspection import StreamInspection
from runner.store.stream_reader import StreamReader
from runner.store.waiting import WaitingCreates, waiting_index

__all__ = ["build_runner", "redis_client"]


def redis_client(settings: Settings) -> redis.Redis:
    """The runner's client: retries with backoff, and a socket timeout past a blocking read."""
    # A blocking XREADGROUP holds the socket for block_ms: the timeout must outlast it.
    timeout = settings.streams.block_ms / 1000.0 + 5.0
    return connect(settings.redis, socket_timeout=timeout, connect_timeout=5.0, retries=3, health_check_interval=30)


def build_runner(
    settings: Settings,
    *,
    observers: Sequence[Observer] = (),
    api_client: k8s.ApiClient | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Runner:
    """The runner of `settings`. `observers` subscribe to its signals beside the metrics
    (`ksr run` adds the status board's); `api_client` is the apiserver's, from the
    kubeconfig (or the pod's service account) when not given and one is needed."""
    s = settings
    signals = Signals([MetricsObserver(max_label_values=s.server.metrics_max_label_values), *observers], clock=clock)
    client = redis_client(s)
    signals.subscribe(
        PresenceObserver(client, identity=s.identity.pod_name, key_prefix=s.state.key_prefix, clock=clock)
    )
    reader = StreamReader(
        client,
        streams=list(s.streams.streams),
        group=s.streams.group,
        consumer=s.identity.pod_name,
        count=s.streams.read_count,
        block_ms=s.streams.block_ms,
        paused=PauseStore(client, namespace=pause_namespace(s.state.active_key)).paused_names,
    )
    reader.on_group_recreated.append(lambda stream: signals.emit(GroupRecreated(stream)))
    state = StateStore.from_settings(client, s)
    callbacks = CallbackQueue(client, s)
    waiting = WaitingCreates(
        client,
        index=waiting_index(s.state.active_key),
        group=s.streams.group,
        term_key=state.term_key,
        clock=clock,
    )
    tenure = Tenure()
    capacity = threading.Event()  # set when a Job ends: backpressure may lift
    tracker = Tracker(
        state=state,
        callbacks=callbacks,
        settings=s,
        term=lambda: tenure.term,
        on_finished=capacity.set,
        signals=signals,
    )

    api: KubeApi | None = None
    if s.kube.executor == "kubernetes" or s.lock == "lease":
        if api_client is None:
            from election.lease_lock import api_client_from_kubeconfig

            api_client = api_client_from_kubeconfig()
        throttle = KubeThrottle(qps=s.kube.qps, burst=s.kube.burst, signals=signals)
        api = KubeApi(api_client, timeout=s.kube.client_timeout, signals=signals, throttle=throttle)
    watcher: KubeWatcher | None = None
    local: LocalExecutor | None = None
    executor: Executor
    if s.kube.executor == "kubernetes":
        assert api is not None
        kube = api
        executor = KubernetesExecutor(kube, s)
        watcher = KubeWatcher(api=kube, tracker=tracker, state=state, settings=s, clock=clock)

        def delete_job(namespace: str, name: str) -> None:
            kube.delete_job(namespace, name)

    else:
        local = executor = LocalExecutor(tracker=lambda: tracker)
        processes = local

        def delete_job(namespace: str, name: str) -> None:
            processes.kill(name)

    elector = Elector(lock(s, api_client), identity=s.identity.pod_name, config=s.election, clock=clock)
    redis_time = RedisTime(client)  # what due times and cron ticks are judged by
    scheduler = _scheduler(s, client, state, tracker, signals, delete_job, redis_time)
    dispatcher = Dispatcher(
        redis_client=client,
        reader=reader,
        state=state,
        executor=executor,
        tracker=tracker,
        settings=s,
        holds_term=elector.holds_term,
        signals=signals,
        delays=DelayGate(
            scheduler.store, max_ahead=s.schedule.max_ahead, on_held=scheduler.wake, wall_clock=redis_time
        ),
        waiting=waiting,
    )
    return Runner(
        settings=s,
        clock=clock,
        signals=signals,
        redis_client=client,
        reader=reader,
        inspection=StreamInspection(client, streams=s.streams.streams, group=s.streams.group),
        state=state,
        callbacks=callbacks,
        waiting=waiting,
        tracker=tracker,
        tenure=tenure,
        capacity=capacity,
        executor=executor,
        watcher=watcher,
        local=local,
        elector=elector,
        scheduler=scheduler,
        dispatcher=dispatcher,
    )


def _scheduler(
    s: Settings,
    client: redis.Redis,
    state: StateStore,
    tracker: Tracker,
    signals: Signals,
    delete_job: Callable[[str, str], None],
    redis_time: RedisTime,
) -> Scheduler:
    """Delayed messages, recurring schedules (KSR_SCHEDULES, refused here when invalid), cancels."""
    streams = s.streams.streams
    schedules = load_schedules(s.schedule.schedules_file, streams=streams, default_stream=s.streams.default_stream)
    store = ScheduledStore(client, streams=streams, record_prefix=s.state.key_prefix)
    pauses = PauseStore(client, namespace=pause_namespace(s.state.active_key))
    beat = (
        Ticker(client, schedules, signals=signals, poll=s.schedule.poll, suspended=pauses.suspended_names)
        if schedules
        else None
    )
    cancels = Cancels(redis_client=client, state=state, tracker=tracker, delete_job=delete_job)
    return Scheduler(
        store=store, beat=beat, cancels=cancels, poll=s.schedule.poll, signals=signals, wall_clock=redis_time
    )


def lock(s: Settings, api_client: k8s.ApiClient | None) -> Lock:
    """The elector's lock: the Lease (KSR_LOCK=lease) or a Redis key."""
    if s.lock == "lease":
        assert api_client is not None
        return LeaseLock(
            api_client,
            namespace=s.identity.pod_namespace,
            name=s.election.lock_name,
            request_timeout=min(s.kube.client_timeout, s.election.renew_deadline / 2),
        )
    # Its own client: request_timeout bounds every call, so no retries inside redis-py.
    timeout = min(5.0, s.election.renew_deadline / 2)
    return RedisLock(
        connect(s.redis, socket_timeout=timeout, connect_timeout=timeout, retries=0),
        name=s.election.lock_name,
        min_replicas=s.redis.min_replicas,
        wait_timeout=s.redis.wait_timeout,
    )
