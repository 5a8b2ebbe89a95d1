"""Vectorisable elementary functions for compiled kernels (docs/kernels.md).

This llvmlite has no vector math library, so ``math.exp`` / ``math.log`` inside a loop are
scalar calls. The two functions here, ``exp_le0`` and ``log_pos``, are inlined into the
kernels' loops: straight-line arithmetic (range reduction, a polynomial, and the exponent written
or read as IEEE bits through scalar bit casts, ``np.float64(v).view(np.int64)``), which LLVM
turns into SIMD code. Both agree with ``math`` to a few ulp (tested in ``tests/test_model.py``).
They are compiled with ``fastmath={"reassoc", "contract"}``
only: no flag that assumes finite values or approximates functions.
"""

from __future__ import annotations

import numpy as np
from numba import njit

FAST = {"reassoc", "contract"}
_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238  # ln 2 split so that n * _LN2_HI is exact for |n| < 2^11
_LN2_LO = 1.9082149292705877e-10
_SQRT2 = 1.4142135623730951
_MANTISSA = (1 << 52) - 1
_ONE_BITS = 1023 << 52
EXP_FLUSH = -708.0  # exp(x) below this (about 3e-308, near the subnormal range) is flushed to 0


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always", _nrt=False)
def _exp_reduced(x):
    """``(p, n)`` with ``e^x = p 2^n``: Cody–Waite reduction ``x = n ln2 + r`` (``|r| <= ln2 / 2``)
    and a degree-12 Taylor polynomial ``p = e^r`` (truncation below 3e-16 relative)."""
    n = np.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p, n


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always", _nrt=False)
def exp_le0(x):
    """``exp(x)`` for ``x <= 0``: ``e^x = p 2^n`` (:func:`_exp_reduced`), with ``2^n`` made from its
    IEEE bits (``(n + 1023) << 52``) by a bit cast, so that a loop over it vectorises in one pass.
    Arguments below ``EXP_FLUSH`` give 0."""
    p, n = _exp_reduced(max(x, EXP_FLUSH))
    two_n = np.int64((np.int64(n) + 1023) << 52).view(np.float64)
    return p * two_n if x >= EXP_FLUSH else 0.0


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always", _nrt=False)
def log_pos(v):
    """``log v`` for positive, finite, normal ``v``.

    ``v = 2^e f`` with ``f`` in ``[sqrt(1/2), sqrt(2))`` read from the IEEE bits (bit casts, so a
    loop over it vectorises), then ``log v = e ln 2 + 2 atanh(s)``, ``s = (f - 1) / (f + 1)``,
    ``|s| <= 0.172``, with the odd series of ``atanh`` to ``s^23`` (truncation below 1e-18 relative).
    """
    b = np.float64(v).view(np.int64)
    f = np.int64((b & _MANTISSA) | _ONE_BITS).view(np.float64)
    e = np.float64((b >> 52) - 1023)
    big = f > _SQRT2
    f = f * 0.5 if big else f
    e = e + 1.0 if big else e
    s = (f - 1.0) / (f + 1.0)
    s2 = s * s
    q = 1.0 / 23.0
    q = q * s2 + 1.0 / 21.0
    q = q * s2 + 1.0 / 19.0
    q = q * s2 + 1.0 / 17.0
    q = q * s2 + 1.0 / 15.0
    q = q * s2 + 1.0 / 13.0
    q = q * s2 + 1.0 / 11.0
    q = q * s2 + 1.0 / 9.0
    q = q * s2 + 1.0 / 7.0
    q = q * s2 + 1.0 / 5.0
    q = q * s2 + 1.0 / 3.0
    log_f = 2.0 * s + (2.0 * s) * (s2 * q)
    return e * _LN2_HI + (log_f + e * _LN2_LO)

