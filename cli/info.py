"""``fastpg info``: a human summary of a result file or a folder of result files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from fastpg.outputs import COUNTERS, METRICS
from fastpg.store import load

from .progress import duration as _duration

SHOWN_CONFIG = ("d", "k", "N", "features", "contexts", "base", "algorithm", "reward", "G", "baseline", "lr", "eta",
                "steps", "seed")
KL_SHOWN = ("kl_coef", "kl_estimator", "kl_in", "n_train", "skip")  # shown for runs with a KL term


STALE_SECONDS = 120.0  # a running file with no new row for this long (and 5x its usual gap) is called stale


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def seed_ranges(seeds) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (a 100,001-seed sweep is one short range)."""
    seeds = sorted(int(s) for s in seeds)
    parts, start = [], None
    for i, s in enumerate(seeds):
        if start is None:
            start = s
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            parts.append(str(start) if start == s else f"{start}-{s}")
            start = None
    return ",".join(parts)


def running_state(path, r, done: int, total: int) -> str:
    """``running``, with the rate and the time left, or ``stale`` when no row came for long."""
    wall = r.trace["wall_time"]
    age = time.time() - Path(path).stat().st_mtime
    gaps = np.diff(wall) if len(wall) > 1 else np.array([0.0])
    if age > max(STALE_SECONDS, 5 * float(gaps.max())):
        return (f"stale: no new row for {_duration(age)} (the process was probably killed; "
                "incomplete, a sweep re-run redoes it)")
    if len(wall) > 1 and wall[-1] > 0 and done > 0:
        rate = done / wall[-1]
        return f"running: {rate:.3g} steps/s, about {_duration((total - done) / rate)} left (incomplete until it ends)"
    return "running (incomplete until it ends)"


def describe_batch_file(path) -> str:
    """A batch file (``--layout batch``): its runs by status, and its progress."""
    from fastpg.store import batch_statuses

    status, message, runs = batch_statuses(path)
    counts: dict = {}
    for run_status in runs.values():
        counts[run_status] = counts.get(run_status, 0) + 1
    lines = [f"{path}", f"  batch file   {len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
             f"  status       {status}{': ' + message if message else ''}{_progress(path) if status == 'running' else ''}"]
    failed = [rid for rid, run_status in runs.items() if run_status == "failed"]
    lines += [f"  failed       {rid}" for rid in failed[:10]]
    lines.append("  read with    fastpg.load(path, run=<run id>) or fastpg.store.load_batch(path)")
    return "\n".join(lines)


def describe_file(path) -> str:
    from fastpg.store import BATCH_LAYOUT, open_result

    try:
        with open_result(path) as f:
            batch = f.attrs.get("layout", "") == BATCH_LAYOUT
    except OSError:
        batch = False
    if batch:
        return describe_batch_file(path)
    try:
        r = load(path)
    except (OSError, KeyError, ValueError) as exc:
        return f"{path}: unreadable or not a fastpg result ({exc.__class__.__name__}); treat it as incomplete"
    cfg = r.config
    status = r.status
    rows = r.rows
    steps_done = int(r.trace["steps"][-1]) if rows else 0
    total = cfg["n_pre"] if r.experiment == "pretrain" else cfg["steps"]
    state = {
        "running": running_state(path, r, steps_done, total) if status == "running" else "",
        "complete": "complete" + (f" in {_duration(float(r.trace['wall_time'][-1]))}" if rows else "")
                    + (f" ({r.message})" if r.message else ""),
        "failed": f"failed: {r.message}",
    }.get(status, status)
    lines = [
        f"{path}",
        f"  status       {state}",
        f"  experiment   {r.experiment}",
        f"  progress     {steps_done} / {total} steps, {rows} evaluation points",
        "  config       " + " ".join(f"{key}={cfg[key]}" for key in SHOWN_CONFIG if key in cfg)
        + ("".join(f" {key}={cfg[key]}" for key in KL_SHOWN if key in cfg) if cfg.get("kl_coef") else "")
        + (f" temperature={cfg['temperature']}" if cfg.get("temperature", 1.0) != 1.0 else "")
        + (" filter_groups=True" if cfg.get("filter_groups") else ""),
        f"  base         off-support fraction {_fmt(float(r.base.get('offsupport_fraction', 0.0)))} "
        f"(alpha_off={cfg['alpha_off']})",
    ]
    if rows:
        t = r.trace
        lines.append("  counters     " + " ".join(f"{c}={_fmt(float(t[c][-1]))}" for c in COUNTERS if c in t))
        shown = (*METRICS, "expected_error_sampling")  # and the sampling policy's error, where recorded
        lines.append("  metrics      " + " ".join(f"{m}={_fmt(float(t[m][-1]))}" for m in shown if m in t))
    return "\n".join(lines)


def describe_sweep(path: Path) -> str:
    """A sweep folder: runs by status (read from the files themselves) and the runs not complete."""
    from fastpg.config import ConfigError
    from fastpg.sweeps.spec import Sweep

    manifest = json.loads((path / "sweep.json").read_text())
    try:
        sweep = Sweep(path, dict(manifest["fixed"]), manifest["grid"], manifest["seeds"], manifest.get("eps", 0.1),
                      alphas=manifest.get("alpha") or [], cases=manifest.get("cases") or [],
                      layout=manifest.get("layout", "run"))
    except ConfigError as exc:
        return f"{path}: sweep.json cannot be read as a sweep ({exc})"
    by_status: dict = {}
    where = sweep.locate()
    for run in sweep.runs:
        by_status.setdefault(where[run.id][0], []).append(run.id)
    counts = ", ".join(f"{len(ids)} {status}" for status, ids in sorted(by_status.items()))
    grid = " ".join(f"{k}={','.join(map(str, v))}" for k, v in sweep.grid.items())
    if sweep.cases:
        grid += " x cases " + "; ".join(",".join(f"{k}={v}" for k, v in case.items()) for case in sweep.cases)
    lines = [f"{path}", f"  sweep        {len(sweep.runs)} runs: {counts}" + (
                 f" (one file per batch in {path / 'batches'})" if sweep.layout == "batch" else ""),
             f"  grid         {grid} seeds={seed_ranges(sweep.seeds)} ({len(sweep.seeds)} seeds)"]
    waiting = [(status, rid) for status, ids in by_status.items() if status != "complete" for rid in ids]
    for status, rid in waiting[:20]:
        lines.append(f"  {status:<12} {rid}{_progress(where[rid][1], rid) if status == 'running' else ''}")
    if len(waiting) > 20:
        lines.append(f"  ... and {len(waiting) - 20} more not complete")
    if (path / "index.csv").exists():
        lines.append(f"  index        {path / 'index.csv'}")
    return "\n".join(lines)


def _progress(path, run: str | None = None) -> str:
    """``: 1200 / 5000 steps`` of a running file (of one run of a batch file, or of the batch), read
    without loading its traces."""
    try:
        import h5py

        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            ds = f["trace/steps"]
            ds.refresh()
            if ds.ndim == 2:  # a batch file: [eval point, run]
                ids = [x.decode() if isinstance(x, bytes) else str(x) for x in f["runs/id"][...]]
                slot = ids.index(run) if run in ids else 0
                done = int(np.nan_to_num(ds[-1, slot])) if ds.shape[0] else 0
                total = json.loads(f["runs/config"][slot])["steps"]
            else:
                done = int(ds[-1]) if ds.shape[0] else 0
                total = json.loads(f["config"].attrs["json"])["steps"]
        return f": {done} / {total} steps"
    except (OSError, KeyError, ValueError):
        return ""


def describe(path) -> str:
    path = Path(path)
    if path.is_dir() and (path / "sweep.json").exists():
        return describe_sweep(path)
    if path.is_dir():
        files = sorted(path.rglob("*.h5"))
        if not files:
            return f"{path}: no result files"
        return "\n".join(describe_file(p) for p in files)
    return describe_file(path)
