"""``fastpg info``: a human summary of a result file or a folder of result files."""

from __future__ import annotations

from pathlib import Path

from fastpg.metrics import METRICS
from fastpg.codes import COUNTERS
from fastpg.store import load

SHOWN_CONFIG = ("d", "k", "N", "features", "contexts", "base", "algorithm", "reward", "G", "baseline", "lr", "eta",
                "steps", "seed")


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def describe_file(path) -> str:
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
        "running": "running (or killed before it finished: incomplete)",
        "complete": "complete",
        "failed": f"failed: {r.message}",
    }.get(status, status)
    lines = [
        f"{path}",
        f"  status       {state}",
        f"  experiment   {r.experiment}",
        f"  progress     {steps_done} / {total} steps, {rows} evaluation points",
        "  config       " + " ".join(f"{key}={cfg[key]}" for key in SHOWN_CONFIG if key in cfg),
        f"  base         off-support fraction {_fmt(float(r.base.get('offsupport_fraction', 0.0)))} "
        f"(alpha_off={cfg['alpha_off']})",
    ]
    if rows:
        t = r.trace
        lines.append("  counters     " + " ".join(f"{c}={_fmt(float(t[c][-1]))}" for c in COUNTERS))
        lines.append("  metrics      " + " ".join(f"{m}={_fmt(float(t[m][-1]))}" for m in METRICS))
    return "\n".join(lines)


def describe_sweep(path: Path) -> str:
    """A sweep folder: runs by status (read from the files themselves) and the runs not complete."""
    import json

    from fastpg.config import ConfigError
    from fastpg.sweep import Sweep

    manifest = json.loads((path / "sweep.json").read_text())
    try:
        sweep = Sweep(path, dict(manifest["fixed"]), manifest["grid"], manifest["seeds"], manifest.get("eps", 0.1),
                      alphas=manifest.get("alpha") or [], cases=manifest.get("cases") or [])
    except ConfigError as exc:
        return f"{path}: sweep.json cannot be read as a sweep ({exc})"
    by_status: dict = {}
    for run in sweep.runs:
        by_status.setdefault(sweep.status(run), []).append(run.id)
    counts = ", ".join(f"{len(ids)} {status}" for status, ids in sorted(by_status.items()))
    grid = " ".join(f"{k}={','.join(map(str, v))}" for k, v in sweep.grid.items())
    if sweep.cases:
        grid += " x cases " + "; ".join(",".join(f"{k}={v}" for k, v in case.items()) for case in sweep.cases)
    lines = [f"{path}", f"  sweep        {len(sweep.runs)} runs: {counts}",
             f"  grid         {grid} seeds={','.join(map(str, sweep.seeds))}"]
    waiting = [(status, rid) for status, ids in by_status.items() if status != "complete" for rid in ids]
    for status, rid in waiting[:20]:
        lines.append(f"  {status:<12} {rid}")
    if len(waiting) > 20:
        lines.append(f"  ... and {len(waiting) - 20} more not complete")
    if (path / "index.csv").exists():
        lines.append(f"  index        {path / 'index.csv'}")
    return "\n".join(lines)


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
