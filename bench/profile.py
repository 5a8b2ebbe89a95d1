"""Where one PG step's time goes, one thread: at the reference shape (d=64, k=8, N=16) or another.

    python -m bench.profile [--shape d,k,N]

Times each compiled building block of a step in a compiled loop (microseconds per call,
median of 5): drawing a context, the teacher's greedy label (one context at a time, or a tile
of contexts drawn ahead as the step loop does), the model's logits (one context, or per context of
a tile), its probability table, sampling N tokens from it, the score-function update, and
held-back updates (correcting a context's logits for them, applying them together). ``W`` is
64-byte aligned, as in a ``Batch``.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from fastpg.kernels.advance import HELD, add_held_scores, apply_held, held_gram  # noqa: E402
from fastpg.kernels.contexts import draw_context, draw_labelled_tile  # noqa: E402
from fastpg.kernels.engine import aligned_copy, evaluate_tile  # noqa: E402
from fastpg.kernels.lanes import TILE, tile_logits
from fastpg.kernels.rng import seed_sequence, xoshiro_state  # noqa: E402
from fastpg.kernels.sampling import greedy_decode, sample_token
from fastpg.kernels.tables import (
    aligned_zeros,
    ensure_row,
    fill_table,
    log_partition_planes,
    new_table,
    reset_table,
    scores,
    scores_planes,
)
from fastpg.kernels.updates import accumulate_score, apply_update


@njit
def _context(state, x, n):
    c, cdf = np.zeros((0, x.shape[0])), np.zeros(0)
    for _ in range(n):
        draw_context(state, c, cdf, 0.0, x)


@njit
def _teacher(W, x, y, n):
    work = new_table(W.shape[0], W.shape[1])[0]
    for _ in range(n):
        greedy_decode(W, x, 0, work, y, True)


@njit
def _teacher_tile(W, state, n):
    """Contexts drawn a tile ahead and labelled together, as the step loop does; time per context."""
    B, k, d = W.shape
    c, cdf = np.zeros((0, d)), np.zeros(0)
    Xt, XT, Y = aligned_zeros(TILE, d), aligned_zeros(d, TILE), np.empty((TILE, B), dtype=np.int64)
    S, work = np.empty((TILE, 4), dtype=np.uint64), new_table(TILE * B, k)[0]
    for _ in range(max(n // TILE, 1)):
        draw_labelled_tile(state, W, c, cdf, 0.0, TILE, B, Xt, XT, Y, S, work)


@njit
def _dots(W, x, n):
    out = np.empty(W.shape[1])
    for _ in range(n):
        for b in range(W.shape[0]):
            scores(W, x, b, out)


@njit
def _dots_planes(W, x, n):
    table = new_table(W.shape[0], W.shape[1])[0]
    for _ in range(n):
        scores_planes(W, x, table)


@njit
def _tile_logits(W, n):
    """Logits of a whole tile of contexts with the contexts in SIMD lanes (copied into columns
    first, as the step loop and the evaluation do); time per context."""
    X = aligned_zeros(TILE, W.shape[2])
    X[:] = 1.0 / np.sqrt(W.shape[2])
    XT = aligned_zeros(W.shape[2], TILE)
    D = aligned_zeros(W.shape[1], TILE * W.shape[0])
    for _ in range(max(n // TILE, 1)):
        tile_logits(W, X, 0, XT, D)


@njit
def _log_partition(W, n):
    """The evaluation's softmax statistics of a tile's logits (:func:`log_partition_planes`); time per context."""
    work = new_table(TILE * W.shape[0], W.shape[1])[0]
    work[:] = 0.5
    for _ in range(max(n // TILE, 1)):
        log_partition_planes(work)


@njit
def _evaluation(W, X, Y, n):
    """Exact evaluation tile by tile (``engine.evaluate_tile``: logits, statistics, log-likelihoods
    and greedy checks); time per context."""
    B, k, d = W.shape
    XT, work = aligned_zeros(d, TILE), new_table(TILE * B, k)[0]
    m = X.shape[0]
    ll, tok, ok = np.empty(m), np.empty((m, B)), np.empty(m, dtype=np.bool_)
    j0 = 0
    for _ in range(max(n // TILE, 1)):
        evaluate_tile(W, X, Y, j0, ll, tok, ok, XT, work)
        j0 = (j0 + TILE) % m


@njit
def _held_scores(W, x, n):
    """The correction of one context's logits for HELD / 2 held-back updates."""
    B, k, d = W.shape
    held_c, held_x = np.full((HELD, k * B), 1e-9), np.ones((HELD, d)) / np.sqrt(d)
    g, diff = np.empty(HELD), np.zeros(k * B)
    for _ in range(n):
        held_gram(held_x, HELD // 2, x, g)
        add_held_scores(held_c, g, HELD // 2, diff)


@njit
def _apply_held(W, n):
    """Applying HELD held-back updates together; time per update."""
    B, k, d = W.shape
    held_c, held_x = np.full((HELD, k * B), 1e-12), np.ones((HELD, d)) / np.sqrt(d)
    for _ in range(max(n // HELD, 1)):
        apply_held(W, held_c, held_x, HELD)


@njit
def _table(W, x, n):
    table, have = new_table(W.shape[0], W.shape[1])
    for _ in range(n):
        reset_table(have)
        for b in range(W.shape[0]):
            ensure_row(W, x, b, table, have)


@njit
def _whole_table(W, x, n):
    table, have = new_table(W.shape[0], W.shape[1])
    for _ in range(n):
        fill_table(W, x, table, have)


@njit
def _sample(W, x, state, n):
    table, have = new_table(W.shape[0], W.shape[1])
    for b in range(W.shape[0]):
        ensure_row(W, x, b, table, have)
    s = 0
    for _ in range(n):
        for b in range(W.shape[0]):
            s += sample_token(table, 1, b, 1.0, state)
    return s


@njit
def _update(W, x, y, n):
    table, have = new_table(W.shape[0], W.shape[1])
    for b in range(W.shape[0]):
        ensure_row(W, x, b, table, have)
    coef = np.zeros((W.shape[0], W.shape[1]))
    touched = np.zeros(W.shape[0], dtype=np.bool_)
    w = np.full(y.shape[0], 1e-12)
    for _ in range(n):
        accumulate_score(W, x, y, w, 0, table, have, coef, touched)
        apply_update(W, x, coef, touched)


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="64,8,16", help="d,k,N (default 64,8,16; Figure 1's is 32,4,8)")
    d, k, N = (int(v) for v in ap.parse_args(argv).shape.split(","))
    rng = np.random.default_rng(0)
    W = aligned_copy(0.3 * rng.standard_normal((N, k, d)), np.float64)  # as in a Batch
    x = rng.standard_normal(d)
    x = aligned_copy(x / np.linalg.norm(x), np.float64)
    X_test = aligned_copy(rng.standard_normal((8 * TILE, d)), np.float64)
    Y_test = rng.integers(0, k, (8 * TILE, N))
    y = np.zeros(N, dtype=np.int64)
    state = xoshiro_state(seed_sequence(0, "profile", {}))
    parts = [
        (f"draw a context ({d} normals, normalise)", lambda n: _context(state, x.copy(), n)),
        ("draw + label contexts a tile ahead (step loop)", lambda n: _teacher_tile(W, state, n)),
        (f"teacher label, one context ({N}x{k} logits, margin)", lambda n: _teacher(W, x, y, n)),
        (f"  of which the {N}x{k}x{d} dot products", lambda n: _dots_planes(W, x, n)),
        (f"{N}x{k}x{d} dot products, block by block (markov)", lambda n: _dots(W, x, n)),
        (f"  the same logits from a tile of {TILE} contexts, per context", lambda n: _tile_logits(W, n)),
        ("probability table, row by row (markov features)", lambda n: _table(W, x, n)),
        ("probability table, whole (position features)", lambda n: _whole_table(W, x, n)),
        (f"sample {N} tokens from the table", lambda n: _sample(W, x, state, n)),
        ("score-function update (coefficients + W += c x)", lambda n: _update(aligned_copy(W, np.float64), x, y, n)),
        (f"held updates: correct one context's logits for {HELD // 2}", lambda n: _held_scores(W, x, n)),
        (f"held updates: apply {HELD} together, per update", lambda n: _apply_held(aligned_copy(W, np.float64), n)),
        ("evaluation, per context: tile logits, statistics, checks", lambda n: _evaluation(W, X_test, Y_test, n)),
        ("  of which the softmax statistics (log_partition_planes)", lambda n: _log_partition(W, n)),
    ]
    n = 100_000
    print(f"{'component':60s} us/call")
    for name, fn in parts:
        fn(1)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            fn(n)
            times.append((time.perf_counter() - t) / n * 1e6)
        print(f"{name:60s} {statistics.median(times):7.3f}")


if __name__ == "__main__":
    main()
