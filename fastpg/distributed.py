"""The ``dask`` sweep backend (optional extra ``dask``): batches of runs as Dask tasks.

Workers write their runs' files directly (the sweep folder must be on a file system the workers
share, as on a cluster's home or scratch space). Each worker process gets
``NUMBA_NUM_THREADS = cores / processes`` (SPEC §13: Dask does not limit it) and each task sets
Numba's thread count explicitly. The kernels are compiled once, in this process, before anything
is dispatched, so that workers load them from Numba's on-disk cache instead of all compiling at
once.
"""

from __future__ import annotations

import os

from .config import ConfigError


def _dask():
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError("--backend", "dask needs dask.distributed: pip install 'fastpg[dask]'; allowed without it: local") from None
    return Client, LocalCluster, as_completed


def warm_up(config) -> None:
    """Compile (or load from cache) every kernel a sweep uses, with a tiny run of its shape."""
    from .api import run

    small = dict(config.to_dict(), steps=2, n_test=min(config.n_test, 4), n_pre=min(config.n_pre, 2),
                 eval_every=1, eval_log=0, n_train=0)
    try:
        run(small)
    except Exception:  # noqa: BLE001 - warming up is best effort; the real run reports errors
        pass


def execute_dask(sweep, index, pending, *, scheduler=None, n_workers=None, argv=None, progress=None, done=0):
    """Run ``pending`` runs of ``sweep`` on a Dask cluster, updating ``index`` as batches finish."""
    from .sweep import run_sweep_batch

    Client, LocalCluster, as_completed = _dask()
    warm_up(pending[0].config)
    cores = os.cpu_count() or 1
    cluster = None
    if scheduler:
        client = Client(scheduler)
        workers = client.scheduler_info().get("workers", {})
        n_parts = max(1, len(workers))
        threads = None  # the cluster's own configuration decides (see README: SLURM)
    else:
        n = n_workers or cores
        threads = max(1, cores // n)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               env={"NUMBA_NUM_THREADS": str(threads)})
        client = Client(cluster)
        n_parts = n
    try:
        batches = sweep.batches(pending, n_parts=n_parts)
        futures = {}
        for batch in batches:
            fut = client.submit(run_sweep_batch, [r.config.to_dict() for r in batch], [str(r.path) for r in batch],
                                argv=argv, num_threads=threads, pure=False)
            futures[fut] = batch
        total = len(sweep.runs)
        for fut in as_completed(futures):
            batch = futures[fut]
            try:
                results = fut.result()
                messages = {run.id: msg for run, (status, msg) in zip(batch, results) if msg}
            except Exception as exc:  # noqa: BLE001 - a lost worker or a crash: those runs are redone next time
                messages = {run.id: f"worker error: {exc.__class__.__name__}: {exc}" for run in batch}
            index.refresh(batch, messages)
            index.write()
            done += len(batch)
            if progress is not None:
                progress(done, total)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
