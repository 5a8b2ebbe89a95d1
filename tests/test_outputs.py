"""The outputs table (fastpg.outputs) is the one home of what a file holds: every object of a run
file and of a batch file has its row, with the units and description the writers gave it, and
everything derived from the table (metrics, index columns, the design doc's layout) follows it."""

import json
import signal
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import fastpg
from fastpg import metrics, outputs
from fastpg.api import BatchFile, run_batch, run_into
from fastpg.outputs import ATTRIBUTE, OUTPUTS

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(d=6, k=3, N=3, n_pre=50, steps=60, n_test=16, eval_every=20, token_trace=True, teacher_scale="block")


SCALE_BOOKKEEPING = ("units", "description", "CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST")


def file_objects(path) -> tuple[dict, dict]:
    """``({dataset path: (units, description)}, {attribute path: value})`` of an HDF5 file; attribute
    paths as in the table (``group@name``), the dimension-scale bookkeeping of HDF5 left out."""
    datasets, attrs = {}, {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                datasets[name] = (obj.attrs.get("units"), obj.attrs.get("description"))
                attrs.update({f"{name}@{k}": v for k, v in obj.attrs.items() if k not in SCALE_BOOKKEEPING})
            elif name not in ("config",):
                attrs.update({f"{name}@{k}": v for k, v in obj.attrs.items()})
        attrs.update({f"@{k}": v for k, v in f.attrs.items()})
        f.visititems(visit)
    return datasets, attrs


def expected(layout: str, config: dict, kinds_with_data=True) -> dict:
    return {o.path: o for o in OUTPUTS if o.only in ("", layout) and (o.kind != ATTRIBUTE) == kinds_with_data
            and outputs.present(o, config)}


@pytest.mark.parametrize("layout", ["run", "batch"])
@pytest.mark.parametrize("options", [{}, {"pass_k": [1, 8]}], ids=["defaults", "pass_k"])
def test_every_object_of_a_file_has_its_row(tmp_path, layout, options):
    """Every object has its row, and a row with ``when`` exists only in runs with that option."""
    configs = [dict(SMALL, seed=s, **options) for s in (0, 1)]
    if layout == "run":
        fastpg.run(configs[0], tmp_path / "a.h5")
    else:
        run_into(BatchFile(tmp_path / "a.h5", ["s0", "s1"]), configs)
    datasets, attrs = file_objects(tmp_path / "a.h5")
    rows = expected(layout, configs[0])
    attribute_rows = {p for p in expected(layout, configs[0], kinds_with_data=False) if "<" not in p}
    if layout == "batch":  # the task's and base model's attributes become datasets over runs
        per_run = {p for p in attribute_rows if p.split("@")[0] in ("task", "base")}
        attribute_rows -= per_run
        rows.update({p.replace("@", "/"): None for p in per_run})
    assert set(datasets) == set(rows), (set(datasets) ^ set(rows))
    teacher = {"teacher_scale": "block", "teacher_norm": "every block of norm 1, so ||W*||^2 = the number of blocks"}
    for path, (units, description) in datasets.items():
        if path.startswith("runs/") or rows[path] is None:  # a batch file's bookkeeping and attributes: no units
            continue
        row = rows[path]
        assert units == row.units and description == row.describe(layout == "batch", **teacher), path
    assert attribute_rows <= set(attrs), attribute_rows - set(attrs)
    extra = {a for a in attrs if a not in attribute_rows and a.split("@")[1] not in ("units", "description")}
    assert not extra, extra


def test_test_metrics_fills_every_metric_row():
    rng = np.random.default_rng(0)
    loglik = np.log(rng.uniform(0.01, 1, 20))
    kl, entropy = rng.uniform(size=20), rng.uniform(size=20)
    values = metrics.test_metrics(loglik, rng.uniform(size=20) < 0.5, rng.uniform(size=20) < 0.3, kl, entropy)
    assert tuple(values) == outputs.METRICS
    with_k = metrics.test_metrics(loglik, rng.uniform(size=20) < 0.5, rng.uniform(size=20) < 0.3, kl, entropy,
                                  loglik - 1, [1, 4], sampling_loglik=loglik - 0.5)
    rows = [o.name for o in OUTPUTS if o.kind == outputs.METRIC or o.name == "pass_at_k"]
    assert sorted(with_k) == sorted(rows) and with_k["pass_at_k"].shape == (2,)


def test_the_trace_columns_follow_the_table():
    every_run = tuple(o.name for o in OUTPUTS if o.kind == outputs.COUNTER and not o.when)  # groups_discarded aside
    assert outputs.TRACE_NAMES == every_run + outputs.METRICS + ("wall_time",)
    assert outputs.COUNTERS == fastpg.codes.COUNTERS
    assert set(outputs.TRACE_AXES) == {"eval", "run", "context", "position"}


def test_the_design_doc_shows_the_table():
    """docs/design.md's file layout is the table (``fastpg.outputs.markdown_table()``)."""
    assert outputs.markdown_table() in (ROOT / "docs" / "design.md").read_text()


@pytest.mark.parametrize("layout", ["run", "batch"])
def test_a_run_and_its_file_give_the_same_result(tmp_path, layout):
    """fastpg.run's result and fastpg.load's are one type holding the same things (``created`` aside,
    the writer's own clock): a token trace, a run stopped early, and a run in memory too."""
    cfg = dict(SMALL, stop_eps=0.5)
    if layout == "run":
        ran = fastpg.run(cfg, tmp_path / "a.h5")
        loaded = fastpg.load(tmp_path / "a.h5")
    else:
        ran = run_into(BatchFile(tmp_path / "a.h5", ["s0", "s1"]), [cfg, dict(cfg, seed=1)])[0]
        loaded = fastpg.load(tmp_path / "a.h5", run="s0")
    assert type(ran) is type(loaded) is fastpg.RunData and fastpg.RunResult is fastpg.RunData
    for name in ("status", "message", "experiment", "fastpg_version", "schema_version", "config", "task"):
        assert getattr(ran, name) == getattr(loaded, name), name
    assert set(ran.trace) == set(loaded.trace) == set(outputs.TRACE_NAMES)
    for name in ran.trace:
        np.testing.assert_array_equal(ran.trace[name], loaded.trace[name], err_msg=name)
    for name in ("loglik", "token_loglik", "W", "queries"):
        np.testing.assert_array_equal(getattr(ran, name), getattr(loaded, name), err_msg=name)
    assert set(ran.base) == set(loaded.base) and set(ran.lq) == set(loaded.lq)
    for group in ("base", "lq"):
        for name, value in getattr(ran, group).items():
            np.testing.assert_array_equal(value, getattr(loaded, group)[name], err_msg=f"{group}/{name}")
    assert ran.query_complexity(0.01, 0.5) == loaded.query_complexity(0.01, 0.5)
    memory = fastpg.run(cfg)
    assert memory.path is None and memory.complete
    np.testing.assert_array_equal(memory.loglik, ran.loglik)
    np.testing.assert_array_equal(memory.W, ran.W)


def test_a_run_that_cannot_start_is_a_failed_result(tmp_path):
    (result,) = run_batch([dict(SMALL, base="file", base_file=str(tmp_path / "none.h5"))], raise_errors=False)
    assert result.status == "failed" and result.message.startswith("base_file: ") and result.rows == 0 and result.W is None


def test_the_fingerprint_tells_results_apart(tmp_path):
    """tests/fingerprint.py (behind the restructure's "every result unchanged"): the same run twice
    gives identical fingerprints (wall time and creation time aside), another seed, a changed
    dataset or a changed description does not."""
    import fingerprint

    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / name).mkdir()
        fastpg.run(dict(SMALL, seed=seed), tmp_path / name / "r.h5")
    a, b, c = (fingerprint.folder_fingerprint(tmp_path / n) for n in "abc")
    assert fingerprint.compare(a, b) == []
    assert "r.h5: trace/loglik differs" in fingerprint.compare(a, c)
    with h5py.File(tmp_path / "b" / "r.h5", "r+") as f:
        f["trace/loglik"][0, 0] = np.nextafter(f["trace/loglik"][0, 0], 0)  # one ulp
        f["trace/steps"].attrs["description"] = "changed"
    assert fingerprint.compare(a, fingerprint.folder_fingerprint(tmp_path / "b")) == [
        "r.h5: trace/loglik differs", "r.h5: trace/steps@attrs differs"]


def test_files_record_the_command_that_made_them(tmp_path):
    """``argv`` is the ``fastpg`` command line for the CLI (and for a sweep's workers), the
    process's own otherwise; no public function takes it."""
    from fastpg.store import command_line, recording
    from fastpg_cli.main import cli

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:  # the console entry, in process (it installs its signal handlers: put back below)
        assert cli(["run", "--preset", "tiny", "--steps", "20", "--out", str(tmp_path / "a.h5"), "-q"]) == 0
        assert cli(["sweep", str(tmp_path / "s"), "--preset", "tiny", "--steps", "20", "--seeds", "0-1", "--layout",
                    "batch", "-q"]) == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    fastpg.run(dict(SMALL), tmp_path / "b.h5")
    with recording(["my", "script"]):
        fastpg.run(dict(SMALL), tmp_path / "c.h5")
        assert command_line() == ["my", "script"]
    argv = {}
    for path in [tmp_path / "a.h5", *sorted((tmp_path / "s").rglob("*.h5")), tmp_path / "b.h5", tmp_path / "c.h5"]:
        with h5py.File(path, "r") as f:
            argv[path.name] = json.loads(f.attrs["argv"])
    assert argv.pop("a.h5") == ["fastpg", "run", "--preset", "tiny", "--steps", "20", "--out", str(tmp_path / "a.h5"), "-q"]
    assert argv.pop("b.h5") == sys.argv and argv.pop("c.h5") == ["my", "script"]
    assert len(argv) == 1 and next(iter(argv.values()))[:2] == ["fastpg", "sweep"]
    assert command_line() == sys.argv


def test_files_record_the_cpu_target_they_were_computed_with(tiny_result, monkeypatch):
    """Root attributes say which CPU wrote a file and which target its kernels were compiled for
    (``NUMBA_CPU_NAME`` where set: an AVX-512 host compiling AVX2 code records AVX2)."""
    import h5py
    from numba.core import config

    from fastpg import machine

    with h5py.File(tiny_result.path) as f:
        attrs = {key: f.attrs[key] for key in ("cpu_model", "cpu_target", "cpu_isa")}
    assert attrs == machine.compiled_for() and all(attrs.values())
    assert attrs["cpu_isa"] in ("AVX-512", "AVX2", "AVX", "SSE4.2", "NEON", "scalar")
    monkeypatch.setattr(config, "CPU_NAME", "haswell")
    assert machine.compiled_for()["cpu_target"] == "haswell" and machine.compiled_for()["cpu_isa"] == "AVX2"
    monkeypatch.setattr(config, "CPU_NAME", "znver4")
    assert machine.compiled_for()["cpu_isa"] == "AVX-512"
