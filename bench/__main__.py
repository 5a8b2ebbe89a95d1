"""Benchmarks of fastpg against peer implementations, all measured in this one process run.

    python -m bench [--quick] [--out bench/results] [--page docs/performance.md] [--isa avx2]

Reference configuration (docs/design.md, "Performance"): d=64, k=8, N=16, position features,
float64, sphere contexts, teacher base (beta=2000, rho=0.05: about 37% of on-policy samples are
correct), constant learning rate 0.01; PG steps (B) also at d=32, k=4, N=8 (Figure 1's shape) and
d=256, k=16, N=32. One thread for everyone: this process is pinned to one core
and every thread variable is set to 1 before NumPy, Numba or JAX is imported; OPENBLAS_CORETYPE
and OPENBLAS_L2_SIZE are removed for the peers. Compile / JIT warm-up is excluded; every rate is
the median of repeats. A correctness check compares the implementations before anything is timed.
"""

from __future__ import annotations

import os
import sys

REMOVED = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.pop(v, None) is not None]
os.environ.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "NUMEXPR_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2",
                   "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"})
# --isa avx2: every implementation held to AVX2 + FMA on an AVX-512 host (read before anything is
# imported): Numba compiles for haswell, XLA caps its ISA, OpenBLAS takes its Haswell kernels and
# NumPy's own loops leave AVX-512 out
ISA = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--isa=")), None) or (
    sys.argv[sys.argv.index("--isa") + 1] if "--isa" in sys.argv[:-1] else "native")
if ISA == "avx2":
    os.environ.update({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "", "OPENBLAS_CORETYPE": "Haswell",
                       # NumPy >= 2.4 names its AVX-512 targets X86_V4, AVX512_ICL, AVX512_SPR; older ones the
                       # rest (each version warns about the other's names and applies its own)
                       "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_SKX "
                                                   "AVX512_CLX AVX512_CNL"})
    os.environ["XLA_FLAGS"] += " --xla_cpu_max_isa=AVX2"
ALL_CORES = os.sched_getaffinity(0)
os.sched_setaffinity(0, {min(ALL_CORES)})

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from fastpg.config import RunConfig  # noqa: E402
from fastpg.kernels.engine import Batch, sample_batch  # noqa: E402
from fastpg.kernels.rng import seed_sequence, xoshiro_state  # noqa: E402
from fastpg.kernels.tables import ensure_row, new_table  # noqa: E402
from fastpg.kernels.updates import accumulate_score, apply_update  # noqa: E402
from fastpg.machine import cache_sizes  # noqa: E402
from fastpg.runs import base_model, post_training_run  # noqa: E402
from fastpg.tasks import make_task  # noqa: E402

from . import numpy_peer  # noqa: E402

numba.set_num_threads(1)
REFERENCE = dict(d=64, k=8, N=16, features="position", contexts="sphere", base="teacher", beta=2000.0, rho=0.05,
                 lr="constant", eta=0.01, n_test=4096, G=1, baseline="none")
GOALS = {"A1": 3.0, "A2": 1.5, "B-orm": 2.0, "B-prm": 2.0, "B-orm-fig1": 2.0, "B-prm-fig1": 2.0, "B-orm-large": 2.0,
         "B-prm-large": 2.0, "C": 1.2}


def peers():
    """NumPy always; JAX and PyTorch where installed (``pip install ".[bench]"``)."""
    out = [numpy_peer]
    for name in ("jax_peer", "torch_peer"):
        try:
            out.append(__import__(f"bench.{name}", fromlist=["NAME"]))
        except ImportError:
            pass
    return out


def median_rate(fn, work, repeats):
    """Median of ``work / seconds`` over ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        rates.append(work / (time.perf_counter() - t))
    return statistics.median(rates)


class Setup:
    def __init__(self, **over):
        self.cfg = RunConfig.from_dict({**REFERENCE, **over})
        self.task = make_task(self.cfg)
        self.W0 = base_model(self.cfg, self.task)
        N, k, d = self.cfg.N, self.cfg.k, self.cfg.d
        self.N, self.k, self.d = N, k, d
        self.W2 = self.W0.reshape(N * k, d).copy()
        self.Ws2 = self.task.W_star.reshape(N * k, d).copy()

    def batch(self, **over):
        cfg = self.cfg.replace(**over) if over else self.cfg
        return Batch([post_training_run(cfg, self.task, self.W0)])


def check_agreement(s: Setup, impls) -> dict:
    """Same inputs, same numbers: probabilities, one update, exact evaluation."""
    rng = np.random.default_rng(0)
    x = s.task.test_x[0]
    table, have = new_table(s.N, s.k)
    for b in range(s.N):
        ensure_row(s.W0, x, b, table, have)
    p_fast = table[1].T  # token-major table: [k, N]
    y = rng.integers(0, s.k, s.N)
    a = rng.random(s.N)
    W_fast = s.W0.copy()
    coef, touched = np.zeros((s.N, s.k)), np.zeros(s.N, dtype=np.bool_)
    accumulate_score(W_fast, x, y, 0.01 * a, 0, table, have, coef, touched)
    apply_update(W_fast, x, coef, touched)
    X, Y = s.task.test_x[:256], s.task.test_y[:256]
    ll_fast, _, ok_fast = (v[0] for v in Batch([dict(post_training_run(s.cfg, s.task, s.W0), test_x=X, test_y=Y)]).evaluate())
    report = {}
    for impl in impls:
        got = impl.check(s.W2, x, y, a, 0.01, X, Y, s.N, s.k)
        err = {"probabilities": float(np.abs(got["probabilities"] - p_fast).max()),
               "update": float(np.abs(got["W"].reshape(W_fast.shape) - W_fast).max()),
               "loglik_rel": float(np.max(np.abs(got["loglik"] - ll_fast) / np.maximum(1.0, np.abs(ll_fast)))),
               "greedy_equal": bool(np.array_equal(got["greedy_ok"], ok_fast))}
        if not (err["probabilities"] < 1e-12 and err["update"] < 1e-12 and err["loglik_rel"] < 1e-10 and err["greedy_equal"]):
            raise SystemExit(f"bench: {impl.NAME} disagrees with fastpg: {err}")
        report[impl.NAME] = err
    return report


def bench_sampling(s: Setup, impls, q):
    out = {}
    repeats = 3 if q else 5
    for label, B, calls in (("A1", 1, 2000 if q else 20000), ("A2", 1024, 3 if q else 20)):
        X = s.task.test_x[:B].copy()
        Y = np.empty((B, s.N), dtype=np.int64)
        state = xoshiro_state(seed_sequence(0, "bench", {}))
        W0 = s.W0

        def fast(calls=calls, W0=W0, X=X, state=state, Y=Y):  # this iteration's arrays, bound
            for _ in range(calls):
                sample_batch(W0, X, 0, state, Y)

        rates = {"fastpg": median_rate(fast, B * calls, repeats)}
        for impl in impls:
            rates[impl.NAME] = median_rate(impl.sampler(s.W2, X, s.N, s.k, calls, 0), B * calls, repeats)
        out[label] = rates
    return out


PG_SHAPES = {"fig1": dict(d=32, k=4, N=8), "ref": {}, "large": dict(d=256, k=16, N=32)}  # (B) at three shapes


def bench_pg(s: Setup, impls, q, shape: str = "ref"):
    out, frac = {}, {}
    repeats = 3 if q else 5
    for reward in ("orm", "prm"):
        n_fast = 20000 if q else 200000
        batch = s.batch(reward=reward)
        rates = {"fastpg": median_rate(lambda batch=batch, n_fast=n_fast: batch.advance(n_fast), n_fast, repeats)}
        c = batch.counters[0]
        frac[("fastpg", reward)] = 1 - c[7] / c[2]
        upd_frac = c[6] / c[0]
        for impl in impls:
            n = max(1, int(n_fast * impl.STEPS_SCALE))
            run = impl.pg_runner(s.W2, s.Ws2, s.N, s.k, s.d, 0.01, reward, n, 0)
            last = {}

            def timed(run=run, last=last):
                last["correct"] = run()[0]

            rates[impl.NAME] = median_rate(timed, n, repeats)
            frac[(impl.NAME, reward)] = last["correct"] / n
        key = f"B-{reward}" if shape == "ref" else f"B-{reward}-{shape}"
        out[key] = rates
        out[f"{key}-updates-per-step"] = upd_frac
    return out, frac


def bench_eval(s: Setup, impls, q):
    batch = s.batch()
    n = s.cfg.n_test
    repeats = 5 if q else 20
    rates = {"fastpg": median_rate(batch.evaluate, n, repeats)}
    for impl in impls:
        rates[impl.NAME] = median_rate(impl.evaluator(s.W2, s.task.test_x, s.task.test_y, s.N, s.k), n, repeats)
    return {"C": rates}


def bench_skip(impls, q):
    """rs + ORM with skip-ahead and no learning on a uniform base: p = 8^-13 = 1.8e-12 per context."""
    s = Setup(N=13, base="uniform", algorithm="rs", reward="orm", eta=0.0, M=2**53)
    n_fast = 20000 if q else 200000
    repeats = 3 if q else 5
    batch = s.batch()

    def fast():
        before = batch.counters[0][4]
        batch.advance(n_fast)
        return batch.counters[0][4] - before

    runners = {"fastpg": fast}
    for impl in impls:
        runners[impl.NAME] = impl.rs_skip_runner(s.W2, s.Ws2, s.N, s.k, s.d, max(1, int(n_fast * impl.STEPS_SCALE)), 0)
    out = {}
    for name, run in runners.items():
        run()  # warm-up (compilation)
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            queries = run()
            rates.append(queries / (time.perf_counter() - t))
        out[name] = statistics.median(rates)
    return {"D": out}


def bench_events(q):
    """(H) ``pg`` on a pool, event by event against stepping through: ORM, G = 1, a uniform base with
    k = 4, N = 10 (every step moves W with probability 4^-10 = 9.5e-7), a pool of 16 contexts and a
    small constant rate (1e-6), so that the probability stays near 1e-6 for the whole measurement."""
    over = dict(d=16, k=4, N=10, contexts="sphere", base="uniform", algorithm="pg", reward="orm", G=1,
                lr="constant", eta=1e-6, n_train=16, n_test=16)
    out = {}
    for skip, n in ((False, 20000 if q else 200000), (True, 10**10 if q else 10**11)):
        s = Setup(**over, skip=skip)
        batch = s.batch()
        batch.advance(1000)  # compile
        rates = []
        for _ in range(3):
            before = batch.counters[0].copy()
            t = time.perf_counter()
            batch.advance(n)
            rates.append(n / (time.perf_counter() - t))
        out["events" if skip else "steps"] = statistics.median(rates)
        if skip:
            out["updates"] = float(batch.counters[0][6] - before[6])
            out["steps_per_call"] = n
    out["ratio"] = out["events"] / out["steps"]
    return {"H": out}


def bench_scaling(q):
    """8 equal PG-ORM runs in one batch on 1 and 2 threads (fastpg only: the peers have no batching)."""
    os.sched_setaffinity(0, ALL_CORES)
    s = Setup(n_test=64)
    steps = 20000 if q else 200000
    cfg = s.cfg
    runs = [post_training_run(cfg.replace(seed=i), make_task(cfg.replace(seed=i)),
                              base_model(cfg.replace(seed=i), make_task(cfg.replace(seed=i)))) for i in range(8)]
    out, Ws = {}, {}
    for threads in (1, 2):
        numba.set_num_threads(threads)
        b = Batch(runs)
        b.advance(10)
        t = time.perf_counter()
        b.advance(steps)
        out[threads] = 8 * steps / (time.perf_counter() - t)
        Ws[threads] = b.W.copy()
    numba.set_num_threads(1)
    os.sched_setaffinity(0, {min(ALL_CORES)})
    return {"E": {"steps_per_s_1": out[1], "steps_per_s_2": out[2], "speedup": out[2] / out[1],
                  "identical": bool(np.array_equal(Ws[1], Ws[2]))}}


def bench_overhead(q):
    """Per-run cost of a sweep of many small runs (the tiny preset, 200 steps): wall time per run
    of the whole sweep (task, base model, simulation, files, index) in each storage layout, and of
    the same runs kept in memory (no files). Simulation itself is a small part of it."""
    from fastpg.api import run_batch
    from fastpg.config import PRESETS
    from fastpg.sweeps.execute import execute
    from fastpg.sweeps.spec import Sweep

    n = 200 if q else 1000
    fixed = dict(PRESETS["tiny"], steps=200)
    run_batch([dict(fixed, seed=0)], [None])  # compile
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layout in ("run", "batch"):
            times = []
            for rep in range(3):
                sweep = Sweep(Path(tmp) / f"{layout}{rep}", fixed, {}, list(range(n)), layout=layout)
                t = time.perf_counter()
                execute(sweep)
                times.append((time.perf_counter() - t) / n)
            out[f"{layout}_ms"] = 1e3 * statistics.median(times)
            out[f"{layout}_kb"] = sum(f.stat().st_size for f in (Path(tmp) / f"{layout}0").rglob("*")) / n / 1e3
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for i in range(0, n, 64):
            run_batch([dict(fixed, seed=s) for s in range(i, min(n, i + 64))], None)
        times.append((time.perf_counter() - t) / n)
    out["memory_ms"] = 1e3 * statistics.median(times)
    out["runs"] = n
    return {"I": out}


def _fastpg_cmd(args, env):
    code = "import resource, subprocess, sys, time; t = time.perf_counter(); " \
           "r = subprocess.run(sys.argv[1:]); " \
           "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)"
    cmd = [sys.executable, "-c", code, sys.executable, "-c", "from fastpg_cli.main import entry; entry()", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout.split()
    if out[2] != "0":
        raise SystemExit(f"bench: fastpg {' '.join(args)} failed")
    return float(out[0]), int(out[1]) / 1024.0


def bench_startup_memory(q):
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=str(Path(tmp) / "cache"), NUMBA_NUM_THREADS="1")
        cold, _ = _fastpg_cmd(["run", "--preset", "tiny", "--out", f"{tmp}/a.h5", "-q"], env)
        warm = statistics.median(_fastpg_cmd(["run", "--preset", "tiny", "--out", f"{tmp}/{i}.h5", "-q"], env)[0]
                                 for i in range(3))
        mem = {}
        for steps in ((20000, 200000) if q else (100000, 1000000)):
            _, rss = _fastpg_cmd(["run", "-d", "64", "-k", "8", "-N", "16", "--base", "teacher", "--beta", "2000",
                                  "--rho", "0.05", "--steps", str(steps), "--eval-log", "20", "--n-test", "512",
                                  "--out", f"{tmp}/m{steps}.h5", "-q"], env)
            mem[steps] = rss
    return {"F": {"cold_s": cold, "warm_s": warm}, "G": {"peak_rss_mb": mem}}


def cpu() -> dict:
    """The CPU the numbers are for: its model, the LLVM target Numba compiles for, and the widest
    SIMD instruction set it has (AVX-512 and AVX2 machines differ most; docs/kernels.md)."""
    import llvmlite.binding as ll

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    features = ll.get_host_cpu_features()
    isa = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4.2", "SSE4.2"),
                                        ("neon", "NEON")) if features.get(flag)), "scalar")
    try:  # what NumPy's own loops run (the check that --isa avx2 reached them)
        info = np.lib.introspect.opt_func_info(func_name="exp|add|multiply", signature="float64")
        numpy_loops = sorted({t["current"] for f in info.values() for t in f.values()})
    except AttributeError:  # NumPy < 2.0
        numpy_loops = ["unknown"]
    return {"cpu_model": model or platform.processor() or platform.machine(), "llvm_target": ll.get_host_cpu_name(),
            "isa": isa, "compiled_for": "AVX2 + FMA (haswell), the peers capped where their libraries allow" if ISA ==
            "avx2" else isa, "numpy_loops": "/".join(numpy_loops),
            "caches": " ".join(f"{level} {size}" for level, size in cache_sizes().items()) or "unknown"}


PEERS_TEXT = """What each peer does (`bench/numpy_peer.py`, `bench/jax_peer.py`, `bench/torch_peer.py`): the same
work with the same sampling rule, checked to agree with fastpg before anything is timed, each in
its fastest honest form. Whatever does not depend on the weights being trained (contexts, teacher
labels, per-token uniforms) is drawn ahead in bulk for 4,096 steps at a time, as fastpg draws its
contexts a tile ahead; only the work that depends on `W` runs step by step.

- **NumPy**: a Python loop over the drawn-ahead steps.
- **JAX**: `jit` and one `lax.scan` per chunk that carries only `W`, with `lax.cond` for the
  update. Batched sampling (A) and evaluation (C) are one GEMM each.
- **PyTorch**: eager code under `torch.inference_mode` (`torch.compile` made the per-step function
  slower).
- The rs skip-ahead (D) has nothing that depends on a changing `W`, so every peer computes whole
  chunks of steps as one vectorised computation.
"""


def page(header: str, table: str, res: dict) -> str:
    """The performance page (``--page docs/performance.md``): everything on it is from this run."""
    m = res["machine"]
    missing = [name for name in ("jax", "torch") if name not in res["peers"]]
    return "\n".join([
        "# fastpg: performance", "",
        "Written by `python -m bench --page docs/performance.md`; every number below is from that one run, "
        "never edited by hand. Ratios are against the fastest peer measured in the same run, on one pinned core. "
        "How the kernels are made fast: [kernels.md](kernels.md).", "",
        f"**Machine**: {m.get('cpu_model', '-')} ({m.get('isa', '-')}, LLVM target `{m.get('llvm_target', '-')}`), "
        f"{m.get('cores', '-')} cores; code compiled for {m.get('compiled_for', '-')}.", "",
        header.strip(), "", table, "",
        *([f"**Not measured** (not installed; `pip install \".[bench]\"`): {', '.join(missing)}.", ""] if missing else []),
        PEERS_TEXT])


def matmul_ceiling():
    a = np.random.default_rng(0).random((1024, 1024))
    return median_rate(lambda: a @ a, 2 * 1024**3, 5) / 1e9


def render(res) -> str:
    names = ["fastpg", *[p for p in res["peers"]]]
    lines = ["| measurement | unit | " + " | ".join(names) + " | fastpg / best peer | goal |",
             "|---|---|" + "---|" * len(names) + "---|---|"]
    labels = {"A1": ("(A) sampling, B=1 per call", "responses/s"), "A2": ("(A) sampling, B=1024", "responses/s"),
              "B-orm-fig1": ("(B) PG steps, ORM, d=32 k=4 N=8", "steps/s"),
              "B-prm-fig1": ("(B) PG steps, PRM, d=32 k=4 N=8", "steps/s"),
              "B-orm": ("(B) PG steps, ORM, d=64 k=8 N=16", "steps/s"), "B-prm": ("(B) PG steps, PRM, d=64 k=8 N=16", "steps/s"),
              "B-orm-large": ("(B) PG steps, ORM, d=256 k=16 N=32", "steps/s"),
              "B-prm-large": ("(B) PG steps, PRM, d=256 k=16 N=32", "steps/s"),
              "C": ("(C) exact evaluation, n_test=4096", "contexts/s"),
              "D": ("(D) rs skip-ahead, p=1.8e-12", "queries/s")}
    for key, (label, unit) in labels.items():
        rates = res["rates"][key]
        best = max(rates[p] for p in res["peers"] if p in rates)
        ratio = rates["fastpg"] / best
        goal = GOALS.get(key)
        goal_s = f">= {goal:g}x: {'met' if ratio >= goal else 'NOT met'}" if goal else "-"
        lines.append(f"| {label} | {unit} | " + " | ".join(f"{rates.get(n, float('nan')):.4g}" for n in names)
                     + f" | {ratio:.2f}x | {goal_s} |")
    e, f, g = res["E"], res["F"], res["G"]
    lines += ["", f"(E) 8 runs in one batch: {e['steps_per_s_1']:.4g} steps/s on 1 thread, {e['steps_per_s_2']:.4g} on 2: "
                  f"{e['speedup']:.2f}x, results identical: {e['identical']}",
              f"(F) `fastpg run --preset tiny`: cold Numba cache {f['cold_s']:.1f} s (goal < 60), "
              f"warm {f['warm_s']:.2f} s (goal < 2)",
              "(G) peak memory of `fastpg run` at the reference shape: " +
              ", ".join(f"{steps} steps {mb:.0f} MB" for steps, mb in g["peak_rss_mb"].items()),
              f"(H) pg on a pool of 16 contexts, moves with probability 9.5e-7 per step: event by event "
              f"{res['H']['events']:.3g} simulated steps/s "
              f"({res['H']['updates']:.0f} updates in {res['H']['steps_per_call']:.0e} "
              f"steps), stepping through {res['H']['steps']:.3g} steps/s: {res['H']['ratio']:.0f}x (goal >= 1000x: "
              f"{'met' if res['H']['ratio'] >= 1000 else 'NOT met'})",
              f"(I) per-run cost of a sweep of {res['I']['runs']} tiny runs (200 steps): --layout batch "
              f"{res['I']['batch_ms']:.2f} ms/run (goal <= 2: {'met' if res['I']['batch_ms'] <= 2 else 'NOT met'}), "
              f"{res['I']['batch_kb']:.0f} KB/run; --layout run {res['I']['run_ms']:.2f} ms/run, "
              f"{res['I']['run_kb']:.0f} KB/run; "
              f"the same runs in memory without files {res['I']['memory_ms']:.2f} ms/run",
              "", f"FLOP rates (fraction of one-thread DGEMM, {res['ceiling_gflops']:.1f} GFLOP/s): " +
              ", ".join(f"{k} {v['fastpg']:.2f} GFLOP/s ({v['fastpg'] / res['ceiling_gflops']:.0%})"
                        for k, v in res["flops"].items()),
              "Fraction of correct on-policy samples (ORM): " +
              ", ".join(f"{n} {res['correct_fraction'][n + '/orm']:.3f}" for n in names)]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small repeats (a smoke test, not for quoting)")
    ap.add_argument("--out", default="bench/results", help="folder for results.md and results.json")
    ap.add_argument("--page", default=None, help="also write the performance page here (docs/performance.md)")
    ap.add_argument("--isa", choices=("native", "avx2"), default="native",
                    help="avx2: compile fastpg for AVX2 + FMA and cap the peers likewise (XLA's max ISA, OpenBLAS's "
                         "Haswell kernels, NumPy's loops): an AVX-512 host measuring AVX2 code")
    args = ap.parse_args(argv)
    q = args.quick
    t0 = time.time()
    impls = peers()
    s = Setup()
    agreement = check_agreement(s, impls)
    rates = {}
    rates.update(bench_sampling(s, impls, q))
    pg, frac = bench_pg(s, impls, q)
    rates.update({k: v for k, v in pg.items() if not k.endswith("per-step")})
    for shape, over in PG_SHAPES.items():
        if over:
            other = Setup(**over)
            check_agreement(other, impls)
            more, _ = bench_pg(other, impls, q, shape)
            rates.update({k: v for k, v in more.items() if not k.endswith("per-step")})
    rates.update(bench_eval(s, impls, q))
    rates.update(bench_skip(impls, q))
    N, k, d = s.N, s.k, s.d
    per_logits = 2.0 * N * k * d
    flops = {"(A) B=1024": {n: r * per_logits / 1e9 for n, r in rates["A2"].items()},
             "(B) ORM": {n: r * per_logits * (2 + pg["B-orm-updates-per-step"]) / 1e9 for n, r in rates["B-orm"].items()},
             "(C)": {n: r * per_logits / 1e9 for n, r in rates["C"].items()}}
    res = {"rates": rates, "peers": [i.NAME for i in impls], "agreement": agreement, "flops": flops,
           "correct_fraction": {f"{n}/{r}": v for (n, r), v in frac.items()}, "ceiling_gflops": matmul_ceiling(),
           "openblas_vars_removed": REMOVED, "quick": q}
    res.update(bench_scaling(q))
    res.update(bench_events(q))
    res.update(bench_startup_memory(q))
    res.update(bench_overhead(q))
    res["machine"] = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                      **cpu(), "cores": len(ALL_CORES)}
    for mod in ("jax", "torch"):
        try:
            res["machine"][mod] = __import__(mod).__version__
        except ImportError:
            pass
    res["seconds"] = time.time() - t0
    table = render(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    flags = (" --quick" if q else "") + (" --isa avx2" if ISA == "avx2" else "")
    header = (f"Benchmarks (`python -m bench{flags}`, {res['seconds']:.0f} s; one pinned core; "
              f"{', '.join(f'{k} {v}' for k, v in res['machine'].items())}; medians of repeats)\n\n")
    (out / "results.md").write_text(header + table + "\n")
    if args.page:
        Path(args.page).parent.mkdir(parents=True, exist_ok=True)
        Path(args.page).write_text(page(header, table, res) + "\n")
    print(header + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
