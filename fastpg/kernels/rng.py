"""Per-run random streams (docs/design.md, "Random streams").

Every run owns a xoshiro256** generator whose state is a ``uint64[4]`` array that
the kernels advance in place. Seeds are resolved in Python from numpy
``SeedSequence`` keyed by the run's seed and the parameters that define the
stream, so that the same command gives the same numbers whatever the thread
count, the batch a run is advanced in, or the backend.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
from numba import njit

_U7 = np.uint64(7)
_U9 = np.uint64(9)
_U5 = np.uint64(5)
_U11 = np.uint64(11)
_U17 = np.uint64(17)
_U45 = np.uint64(45)
_U64 = np.uint64(64)
_TWO_M53 = 2.0**-53


@njit(cache=True, inline="always", _nrt=False)
def _rotl(x, r):
    return (x << r) | (x >> (_U64 - r))


@njit(cache=True, inline="always", _nrt=False)
def _xoshiro(s0, s1, s2, s3):
    """One xoshiro256** step on a state held in locals: ``(64 random bits, new state)``."""
    result = _rotl(s1 * _U5, _U7) * _U9
    t = s1 << _U17
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, _U45)
    return result, s0, s1, s2, s3


@njit(cache=True, _nrt=False)
def next_u64(state):
    """Advance a xoshiro256** state (``uint64[4]``) in place and return 64 random bits."""
    result, state[0], state[1], state[2], state[3] = _xoshiro(state[0], state[1], state[2], state[3])
    return result


@njit(cache=True, inline="always", _nrt=False)
def uniform_next(s0, s1, s2, s3):
    """Uniform float64 on ``[0, 1)`` with 53 random bits from a state held in locals: ``(u, new state)``.

    Loops that draw many numbers keep the state in registers with this (see ``sample_response``).
    """
    bits, s0, s1, s2, s3 = _xoshiro(s0, s1, s2, s3)
    return float(bits >> _U11) * _TWO_M53, s0, s1, s2, s3


@njit(cache=True, _nrt=False)
def uniform(state):
    """Uniform float64 on ``[0, 1)`` with 53 random bits, advancing ``state`` in place."""
    u, state[0], state[1], state[2], state[3] = uniform_next(state[0], state[1], state[2], state[3])
    return u


@njit(cache=True, _nrt=False)
def discard(state, n):
    """Advance ``state`` in place past ``n`` outputs, as ``n`` calls of :func:`next_u64` would."""
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    for _ in range(n):
        _, s0, s1, s2, s3 = _xoshiro(s0, s1, s2, s3)
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3


@njit(cache=True, _nrt=False)
def uniform_pos(state):
    """Uniform float64 on ``(0, 1]`` (safe to take the log of)."""
    return (float(next_u64(state) >> _U11) + 1.0) * _TWO_M53


def _ziggurat_tables(layers=128, r=3.442619855899, v=9.91256303526217e-3):
    """Layer edges ``x[0..layers]`` and ratios ``x[i+1]/x[i]`` of the normal ziggurat (Doornik 2005)."""
    x = np.zeros(layers + 1)
    f = math.exp(-0.5 * r * r)
    x[0] = v / f
    x[1] = r
    for i in range(2, layers):
        x[i] = math.sqrt(-2.0 * math.log(v / x[i - 1] + f))
        f = math.exp(-0.5 * x[i] * x[i])
    x[layers] = 0.0
    return x, x[1:] / x[:-1]


_ZIG_X, _ZIG_R = _ziggurat_tables()
_ZIG_TAIL = 3.442619855899
_U127 = np.uint64(127)


@njit(cache=True, inline="always", _nrt=False)
def _normal(state, s0, s1, s2, s3):
    """Standard normal by the ziggurat method (Marsaglia & Tsang 2000; Doornik's ZIGNOR, 128 layers).

    The generator state is carried in locals ``s0..s3`` (returned with the value), so a loop of
    draws keeps it in registers; the rare wedge and tail draws go through ``state``. One 64-bit
    draw gives a uniform ``u`` on (-1, 1) (its top 53 bits) and the layer ``i`` (its low 7 bits,
    independent of those); about 98.8% of draws return ``u * x[i]`` at once, the wedge and the
    tail (``|x| > 3.44``) use exact rejection.
    """
    while True:
        bits, s0, s1, s2, s3 = _xoshiro(s0, s1, s2, s3)
        i = int(bits & _U127)
        u = 2.0 * (float(bits >> _U11) * _TWO_M53) - 1.0
        if abs(u) < _ZIG_R[i]:
            return u * _ZIG_X[i], s0, s1, s2, s3
        state[0], state[1], state[2], state[3] = s0, s1, s2, s3
        value = np.nan
        if i == 0:  # tail beyond r: Marsaglia's exponential rejection
            while True:
                x = math.log(uniform_pos(state)) / _ZIG_TAIL
                y = math.log(uniform_pos(state))
                if -2.0 * y >= x * x:
                    value = x - _ZIG_TAIL if u < 0.0 else _ZIG_TAIL - x
                    break
        else:
            x = u * _ZIG_X[i]
            f0 = math.exp(-0.5 * (_ZIG_X[i] * _ZIG_X[i] - x * x))
            f1 = math.exp(-0.5 * (_ZIG_X[i + 1] * _ZIG_X[i + 1] - x * x))
            if f1 + uniform(state) * (f0 - f1) < 1.0:
                value = x
        s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
        if value == value:  # accepted (not NaN)
            return value, s0, s1, s2, s3


@njit(cache=True, _nrt=False)
def normal(state):
    """One standard normal (ziggurat, :func:`_normal`), advancing ``state`` in place."""
    value, state[0], state[1], state[2], state[3] = _normal(state, state[0], state[1], state[2], state[3])
    return value


@njit(cache=True, _nrt=False)
def fill_normal(state, out):
    """Standard normals into ``out``, one after another (the same numbers as repeated :func:`normal`).

    The state stays in registers for the whole array (about 2x faster than through memory).
    """
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    for j in range(out.shape[0]):
        out[j], s0, s1, s2, s3 = _normal(state, s0, s1, s2, s3)
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3


def stream_key(purpose: str, params: dict) -> list[int]:
    """32-bit words hashing a purpose name and the parameters a stream depends on."""
    blob = json.dumps({"purpose": purpose, "params": params}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def seed_sequence(seed: int, purpose: str, params: dict) -> np.random.SeedSequence:
    """The ``SeedSequence`` of one stream: root ``seed`` plus a hash of what defines it."""
    return np.random.SeedSequence(entropy=[int(seed), *stream_key(purpose, params)])


def xoshiro_state(seq: np.random.SeedSequence) -> np.ndarray:
    """A fresh xoshiro256** state (``uint64[4]``, never all zero) from a SeedSequence."""
    state = seq.generate_state(4, dtype=np.uint64)
    if not state.any():  # pragma: no cover - probability 2^-256
        state[0] = np.uint64(1)
    return state
