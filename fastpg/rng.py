"""Per-run random streams (SPEC §10).

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
_TWO_PI = 2.0 * math.pi


@njit(cache=True, inline="always")
def _rotl(x, r):
    return (x << r) | (x >> (_U64 - r))


@njit(cache=True)
def next_u64(state):
    """Advance a xoshiro256** state (``uint64[4]``) in place and return 64 random bits."""
    result = _rotl(state[1] * _U5, _U7) * _U9
    t = state[1] << _U17
    state[2] ^= state[0]
    state[3] ^= state[1]
    state[1] ^= state[2]
    state[0] ^= state[3]
    state[2] ^= t
    state[3] = _rotl(state[3], _U45)
    return result


@njit(cache=True)
def uniform(state):
    """Uniform float64 on ``[0, 1)`` with 53 random bits."""
    return float(next_u64(state) >> _U11) * _TWO_M53


@njit(cache=True)
def uniform_pos(state):
    """Uniform float64 on ``(0, 1]`` (safe to take the log of)."""
    return (float(next_u64(state) >> _U11) + 1.0) * _TWO_M53


@njit(cache=True)
def normal(state):
    """Standard normal by Box–Muller (one of the pair is used, so the stream stays simple)."""
    u1 = uniform_pos(state)
    u2 = uniform(state)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)


@njit(cache=True)
def fill_normal(state, out):
    """Standard normals into ``out``, by Box–Muller pairs ``(r cos t, r sin t)`` from two uniforms."""
    n = out.shape[0]
    for j in range(0, n, 2):
        r = math.sqrt(-2.0 * math.log(uniform_pos(state)))
        t = _TWO_PI * uniform(state)
        out[j] = r * math.cos(t)
        if j + 1 < n:
            out[j + 1] = r * math.sin(t)


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
