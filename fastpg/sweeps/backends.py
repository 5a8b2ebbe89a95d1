"""Where a sweep's batches run: plain :class:`concurrent.futures.Executor` objects.

Nothing here knows about sweeps, runs or files: :func:`open_backend` yields an executor, how many
tasks it can run at once and how many Numba threads each task should use, and the caller submits
whatever it likes (docs/design.md, "Sweeps and backends").

* ``local``: :class:`InlineExecutor` runs each task in this process when it is submitted (the
  kernels are parallel over the runs of a batch already, with ``NUMBA_NUM_THREADS`` threads).
* ``dask`` (optional extra ``dask``): ``Client.get_executor()`` of a running scheduler
  (``scheduler="tcp://..."``) or of a local cluster of ``n_workers`` processes. Dask does not limit
  Numba's threads, so each local worker process gets ``NUMBA_NUM_THREADS = cores / processes``
  before it imports Numba. A ``warm_up`` callable compiles the kernels here, once, before anything
  is dispatched, so that workers load them from Numba's on-disk cache instead of all compiling at
  once (many processes building the cache together can crash).
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import Executor, Future

from ..config import ConfigError

BACKENDS = ("local", "dask")


class InlineExecutor(Executor):
    """Runs each submitted call at once, in this process; its future is done when ``submit`` returns.

    ``KeyboardInterrupt`` and other ``BaseException`` are not captured: Ctrl-C stops the caller.
    """

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - delivered through the future, as any executor does
            future.set_exception(exc)
        return future


def _dask():
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("backend", "dask needs dask.distributed: pip install 'fastpg[dask]'; "
                                       "allowed without it: local") from None
    return Client, LocalCluster


CONNECT_TIMEOUT = 10.0  # seconds to wait for a scheduler to answer
WAIT_REPORT = 10.0  # seconds between "waiting for workers" messages


def connect(Client, scheduler: str, notify=None):
    """A client of the scheduler at ``scheduler`` with at least one worker.

    Refuses in one line (``--scheduler``) when nothing answers within ``CONNECT_TIMEOUT``; while
    the scheduler has no workers, says so through ``notify`` every ``WAIT_REPORT`` seconds and keeps
    waiting (Ctrl-C stops it).
    """
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ConfigError("scheduler", f"no Dask scheduler answers at {scheduler} within {CONNECT_TIMEOUT:g} s "
                                         f"({exc.__class__.__name__}); allowed: the address of a running scheduler, "
                                         "such as tcp://127.0.0.1:8786") from None
    while True:
        workers = len(client.scheduler_info().get("workers", {}))
        if workers:
            return client, workers
        if notify is not None:
            notify(f"waiting for workers ({workers} connected) at {scheduler}")
        try:
            client.wait_for_workers(1, timeout=WAIT_REPORT)
        except (TimeoutError, OSError):
            pass


WATCH_SECONDS = 1.0  # how often the watcher looks at the cluster's workers


def _watch_workers(client, notify):
    """Say through ``notify`` when a worker leaves the cluster (Dask reruns its tasks on the others
    without a word, so a sweep's log would otherwise not show it). Returns ``stop()``, which looks a
    last time (a rerun task can finish within a poll of the loss) and ends the watcher."""
    stop = threading.Event()
    if notify is None:
        return stop.set

    def addresses():
        try:
            return set(client.scheduler_info().get("workers", {}))
        except Exception:  # noqa: BLE001 - a client closing under us: nothing to report
            return None

    known = addresses() or set()

    def look():
        nonlocal known
        now = addresses()
        if now is None:
            return
        for gone in sorted(known - now):
            notify(f"a Dask worker left the cluster ({gone}); Dask reruns its tasks on the others "
                   f"({len(now)} connected)")
        known = now

    def watch():
        while not stop.wait(WATCH_SECONDS):
            look()

    thread = threading.Thread(target=watch, name="fastpg-worker-watch", daemon=True)
    thread.start()

    def finish():
        stop.set()
        thread.join(timeout=5 * WATCH_SECONDS)
        look()

    return finish


@contextlib.contextmanager
def open_backend(backend: str = "local", *, scheduler: str | None = None, n_workers: int | None = None,
                 warm_up=None, notify=None):
    """Yield ``(executor, slots, threads)``: an executor, how many tasks it runs at once, and the
    Numba thread count a task should set (``None``: leave the worker's own setting).

    With a ``scheduler`` address, the connection is made (and workers waited for) before anything
    is yielded, so a caller creates nothing when no cluster answers.
    """
    if backend == "local":
        yield InlineExecutor(), 1, None
        return
    if backend != "dask":
        raise ConfigError("backend", f"got {backend!r}; allowed: {', '.join(BACKENDS)}")
    Client, LocalCluster = _dask()
    cluster = None
    if scheduler:
        client, slots = connect(Client, scheduler, notify)
        threads = None  # the cluster's own configuration decides (README: SLURM)
        if warm_up is not None:
            warm_up()
    else:
        cores = os.cpu_count() or 1
        slots = n_workers or cores
        threads = max(1, cores // slots)
        if warm_up is not None:
            warm_up()
        cluster = LocalCluster(n_workers=slots, threads_per_worker=1, processes=True, dashboard_address=None,
                               env={"NUMBA_NUM_THREADS": str(threads)})
        client = Client(cluster)
    stop_watching = _watch_workers(client, notify)
    try:
        yield client.get_executor(pure=False), slots, threads
    finally:
        with contextlib.suppress(Exception):  # a last look at the workers; the sweep's own outcome wins
            stop_watching()
        client.close()
        if cluster is not None:
            cluster.close()
