"""How good is the estimate a sweep prints before it starts? Runs a fixed set of sweeps with the
real ``fastpg sweep`` command and prints, for each, the time and disk it estimated and what it
took (docs/design.md, "Estimates"; the constants of ``fastpg.sweeps.execute.estimate`` were fitted to it).

    python -m bench.estimates [--only NAME ...] [--keep DIR]

Every sweep runs on this machine's cores with the local backend, one after another; the whole
set takes about five minutes on 2 cores with a warm Numba cache.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIG1_SHAPE = ["--preset", "fig1-orm"]
SWEEPS = {
    # many tiny runs: per-run file overhead dominates
    "tiny-600-run": ["--preset", "tiny", "--seeds", "0-599"],
    "tiny-2000-batch": ["--preset", "tiny", "--seeds", "0-1999", "--layout", "batch"],
    # Figure 1's shape: steps, pre-training and exact evaluations dominate
    "fig1-orm-18": [*FIG1_SHAPE, "--grid", "N=2,4,6", "--seeds", "0-5", "--steps", "100000"],
    "fig1-280": [*FIG1_SHAPE, "--grid", "N=2,4,6,8", "--grid", "reward=orm,prm", "--seeds", "0-34",
                 "--steps", "20000"],
    # rs with many evaluation points: the rows written dominate
    "rs-288": ["--algorithm", "rs", "--base", "uniform", "--grid", "N=2,3,4,5", "--grid", "reward=orm,prm",
               "--seeds", "0-35", "-d", "8", "-k", "3", "--steps", "20000"],
    "rs-72-batch": ["--algorithm", "rs", "--base", "uniform", "--grid", "N=2,5", "--seeds", "0-35", "-d", "8",
                    "-k", "3", "--steps", "20000", "--eval-every", "100", "--layout", "batch"],
}
ESTIMATE = re.compile(r"about ([\d.]+) (\w+) on disk and (.+?) on \d+ cores? here")
UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def seconds(text: str) -> float:
    """Seconds in a duration as the CLI prints it (``5 s``, ``2.5 min``, ``1 h 3 min``...)."""
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)\s*(h|min|s)\b", text):
        total += float(value) * {"h": 3600, "min": 60, "s": 1}[unit]
    return total


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(name: str, args: list[str], root: Path) -> dict:
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    # the fastpg command of the Python running this (no console script needed on PATH); -P: not the
    # current folder first on the path, so a checkout's fastpg/ does not shadow the installed one
    done = subprocess.run([sys.executable, "-P", "-m", "fastpg_cli.main", "sweep", str(out), *args, "--yes"],
                          capture_output=True, text=True)
    taken = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name}: fastpg sweep failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    found = ESTIMATE.search(done.stderr)
    if found is None:
        sys.exit(f"{name}: no estimate line in: {done.stderr[:400]}")
    return {"name": name, "seconds_estimated": seconds(found.group(3)), "seconds_taken": taken,
            "bytes_estimated": float(found.group(1)) * UNITS[found.group(2)], "bytes_taken": folder_bytes(out)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SWEEPS), help="run these sweeps only")
    parser.add_argument("--keep", type=Path, help="leave the sweep folders here (default: a temporary folder)")
    args = parser.parse_args(argv)
    names = args.only or list(SWEEPS)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        rows = [measure(name, SWEEPS[name], root) for name in names]
    print(f"{'sweep':18} {'estimated':>10} {'taken':>8} {'ratio':>6}   {'disk est.':>10} {'disk':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['name']:18} {r['seconds_estimated']:9.1f}s {r['seconds_taken']:7.1f}s "
              f"{r['seconds_taken'] / r['seconds_estimated']:6.2f}   {r['bytes_estimated'] / 1e6:8.1f}MB "
              f"{r['bytes_taken'] / 1e6:7.1f}MB {r['bytes_taken'] / r['bytes_estimated']:6.2f}")
    ratios = [r["seconds_taken"] / r["seconds_estimated"] for r in rows]
    print(f"time taken / estimated: median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
