"""Sweeps (docs/design.md, "Sweeps and backends"): a grid of parameters times seeds, one HDF5 file
per run (or per batch of runs), resumable.

A sweep folder holds ``sweep.json`` (the fixed parameters and the grid: a folder is one sweep),
one file per run at ``OUTDIR/<run id>.h5`` with run ids such as ``reward=orm/N=8/seed=3`` (or batch
files under ``OUTDIR/batches/``), and ``index.csv`` (one row per run). Re-running the same sweep
keeps complete runs and redoes the others from scratch. Runs of one shape are advanced together
by :func:`fastpg.api.run_batch`. The index only reports a run ``complete`` once its file says so,
so killing a sweep at any moment loses no completed run.

- ``spec``: what a sweep is (grid, seeds, runs, ids, its folder and manifest) and its parsers;
- ``execute``: running its batches on a backend, the estimate and the time left;
- ``backends``: where batches run (plain executors, knowing nothing of sweeps);
- ``index``: ``index.csv`` and the summary;
- ``data``: reading a folder for analysis (``fastpg.load_sweep``).
"""
