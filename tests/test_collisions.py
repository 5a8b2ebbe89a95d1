"""Values that must never collide: exact integers everywhere, lossless run ids, unique files.

The two bugs these guard against were silent: two 19-digit seeds read through float became the
same run, and two grid values that print alike under ``%g`` shared one run id (and one file).
"""

import csv

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastpg
from fastpg.config import PARAMS, ConfigError, RunConfig, parse_int
from fastpg.sweeps.spec import Sweep, SweepRun, check_unique_ids, id_value, load_toml, parse_grid, run_id
from test_cli import fastpg as fastpg_cmd

SEEDS = (1700000000123456789, 1700000000123456788)  # equal once rounded to float64


@pytest.mark.slow
def test_19_digit_seeds_stay_distinct_through_the_cli(tmp_path):
    weights = []
    for seed in SEEDS:
        out = tmp_path / f"{seed}.h5"
        r = fastpg_cmd("run", "--preset", "tiny", "--steps", "50", "--seed", seed, "--out", out, "-q")
        assert r.returncode == 0, r.stderr
        with h5py.File(out, "r") as f:
            assert int(f.attrs["seed"]) == seed
            assert fastpg.load(out).config["seed"] == seed
            weights.append(f["final/W"][...])
    assert not np.array_equal(weights[0], weights[1])


def test_integers_are_exact_in_toml_grids_and_dicts(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text(f"seeds = [{SEEDS[0]}, {SEEDS[1]}]\n[fixed]\nM = {2**53 - 1}\nsteps = \"1e3\"\n"
                    f"[grid]\nn_pre = [\"{10**15 + 1}\"]\n")
    spec = load_toml(toml)
    assert spec["seeds"] == sorted(SEEDS) and spec["fixed"]["M"] == 2**53 - 1 and spec["fixed"]["steps"] == 1000
    assert spec["grid"]["n_pre"] == [10**15 + 1]
    assert parse_grid([f"seed_like={SEEDS[0]}".replace("seed_like", "M")]) == {"M": [SEEDS[0]]}
    assert RunConfig.from_dict({"seed": str(SEEDS[0])}).seed == SEEDS[0]
    assert RunConfig.from_dict({"n_train": "1e3"}).n_train == 1000
    for bad in ("1.5", "1e400", str(2**63), "nan", "", 2.0**60):
        with pytest.raises(ConfigError, match="^steps: "):
            RunConfig.from_dict({"steps": bad})


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_parse_int_is_exact(n):
    assert parse_int(str(n)) == n and parse_int(n) == n


@pytest.mark.slow
def test_close_floats_get_different_run_ids_through_the_cli(tmp_path):
    out = tmp_path / "sw"
    r = fastpg_cmd("sweep", out, "--preset", "tiny", "--steps", "40", "--grid", "eta=0.1234567,0.1234568",
                   "--seeds", "0")
    assert r.returncode == 0, r.stderr
    with open(out / "index.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(row["file"] for row in rows) == ["eta=0.1234567/seed=0.h5", "eta=0.1234568/seed=0.h5"]
    assert all(row["status"] == "complete" for row in rows)
    etas = sorted(fastpg.load(out / row["file"]).config["eta"] for row in rows)
    assert etas == [0.1234567, 0.1234568]
    # the summary shows the two values apart, and a resume keeps both files untouched
    assert "0.1234567" in r.stdout and "0.1234568" in r.stdout
    stamps = {row["file"]: (out / row["file"]).stat().st_mtime_ns for row in rows}
    again = fastpg_cmd("sweep", out, "--preset", "tiny", "--steps", "40", "--grid", "eta=0.1234567,0.1234568",
                       "--seeds", "0")
    assert again.returncode == 0, again.stderr
    assert {f: (out / f).stat().st_mtime_ns for f in stamps} == stamps


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=2, max_size=2, unique=True))
def test_id_values_of_different_floats_differ(values):
    a, b = values  # unique by ==, so never 0.0 and -0.0 together
    assert id_value(a) != id_value(b)
    assert float(id_value(a)) == a


def test_id_values_of_paths_are_safe_and_distinct():
    ids = {id_value(v) for v in ("runs/a.h5", "runs_a.h5", "runs a.h5", "runs/a.h5 ")}
    assert len(ids) == 4 and all("/" not in i and " " not in i for i in ids)
    assert id_value("orm") == "orm" and id_value(8) == "8" and id_value(0.1) == "0.1" and id_value(True) == "true"
    assert run_id({"reward": "orm", "N": 8}, 3) == "reward=orm/N=8/seed=3"


def test_duplicate_ids_are_refused_before_any_work(tmp_path):
    cfg = RunConfig()
    runs = [SweepRun("x=1/seed=0", {"x": 1}, 0, cfg, tmp_path / "a.h5"),
            SweepRun("x=1/seed=0", {"x": 1.0}, 0, cfg, tmp_path / "a.h5")]
    with pytest.raises(ConfigError, match="^grid: .*share the id"):
        check_unique_ids(runs)


def test_sweep_does_not_change_the_callers_dicts(tmp_path):
    fixed, grid, seeds = {"eta": 0.3, "seed": 4, "steps": 10}, {"eta": [0.1, 0.2]}, [0]
    before = (dict(fixed), {k: list(v) for k, v in grid.items()}, list(seeds))
    sweep = Sweep(tmp_path / "s", fixed, grid, seeds)
    assert (fixed, grid, seeds) == before
    assert sweep.fixed == {"steps": 10}


def test_every_parameter_round_trips_through_the_table():
    """Each parameter's default is allowed and its parser reads back what it would print."""
    cfg = RunConfig()
    for p in PARAMS:
        default = getattr(cfg, p.name)
        p.check(default)
        if default is not None:
            assert p.parse(str(default).lower() if p.kind == "bool" else str(default)) == default
