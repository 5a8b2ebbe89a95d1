"""The files an experiment computes: its output folder, and which run files to (re)compute or keep."""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, RunConfig
from ..store import COMPLETE, check_output, load, read_status


def output_folder(outdir) -> Path:
    path = Path(outdir)
    if path.exists() and not path.is_dir():
        raise ConfigError("outdir", f"{path} is a file; allowed: a folder (created if missing)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def files_to_run(configs: dict, png, overwrite: bool, resume: bool) -> list:
    """The files to (re)compute, of ``configs`` (``{path: the run's parameters}``): with ``resume``
    complete files are kept and the others redone; otherwise every existing output is refused unless
    ``overwrite``. A complete file kept on ``resume`` must have been made with the same parameters:
    a folder from an earlier version with other defaults (Figure 1's clusters, say) is refused, not
    silently reused. Returns the paths to run."""
    if not resume:
        for path in (*configs, png):
            check_output(path, overwrite)
        return list(configs)
    todo = [p for p in configs if not Path(p).exists() or read_status(p) != COMPLETE]
    for path, params in configs.items():
        if path in todo or overwrite:
            continue
        want = RunConfig.from_dict(params).to_dict()
        have = load(path).config
        differs = [k for k in want if k in have and have[k] != want[k]]
        if differs:
            k = differs[0]
            raise ConfigError("outdir", f"{Path(path).name} was made with {k}={have[k]!r}, not {want[k]!r}; allowed: "
                                        "another folder, or --overwrite to redo it")
    for path in todo:
        check_output(path, overwrite=True)
    check_output(png, overwrite=True)
    return todo
