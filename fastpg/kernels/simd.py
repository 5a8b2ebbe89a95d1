"""Explicit SIMD values for compiled kernels: eight float64 lanes (docs/kernels.md).

Numba has no vector type, and its loop vectoriser only vectorises the innermost loop: a product
of weight rows with several contexts then keeps one vector accumulator per logit (lanes over the
feature index ``j``) and ends each logit with a horizontal reduction, or, with the contexts in
the lanes, keeps its accumulators in memory. This module adds the vector type through Numba's
extension API (a type whose data model is LLVM's ``<8 x double>``) and four intrinsics, so
that a kernel can hold vector accumulators in registers across a loop:

* ``vzero()``: eight zeros;
* ``vload(a, i)``: ``a[i : i + 8]`` of a contiguous 1-D float64 array;
* ``vstore(a, i, v)``: ``a[i : i + 8] = v``;
* ``vfma(a, s, c)``: ``c + a * s`` per lane with one rounding (``llvm.fma``), ``s`` a scalar.

``vload`` and ``vstore`` do not check bounds: callers guarantee ``0 <= i`` and ``i + 8 <= len(a)``.
LLVM lowers ``<8 x double>`` to what the machine has (one AVX-512 register, two AVX registers or
four SSE registers), so the kernels run everywhere, and a fused multiply-add gives the same bits
on every machine (a correctly rounded ``a * s + c``; ``tests/test_model.py`` compiles the exact
tests for AVX2 and for baseline x86-64, where ``llvm.fma`` becomes the C library's ``fma``).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, models, register_model

LANES = 8
_VEC = ir.VectorType(ir.DoubleType(), LANES)


class Float64x8(types.Type):
    """Eight float64 lanes held as one SIMD value."""

    def __init__(self):
        super().__init__(name="float64x8")


float64x8 = Float64x8()


@register_model(Float64x8)
class _Float64x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _address(context, builder, array_type, array, i):
    """Pointer to ``array[i]`` as a pointer to eight lanes."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [i]), _VEC.as_pointer())


def _check_array(a):
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.float64 and a.layout == "C"):
        raise TypingError(f"expected a contiguous 1-D float64 array, got {a}")


@intrinsic
def vzero(typingctx):
    """Eight zeros."""

    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, [0.0] * LANES)

    return float64x8(), codegen


@intrinsic
def vload(typingctx, a, i):
    """``a[i : i + 8]`` (no bounds check)."""
    _check_array(a)

    def codegen(context, builder, sig, args):
        return builder.load(_address(context, builder, sig.args[0], args[0], args[1]), align=8)

    return float64x8(a, types.intp), codegen


@intrinsic
def vstore(typingctx, a, i, v):
    """``a[i : i + 8] = v`` (no bounds check)."""
    _check_array(a)

    def codegen(context, builder, sig, args):
        builder.store(args[2], _address(context, builder, sig.args[0], args[0], args[1]), align=8)
        return context.get_dummy_value()

    return types.none(a, types.intp, float64x8), codegen


@intrinsic
def vfma(typingctx, a, s, c):
    """``c + a * s`` lane by lane with one rounding (a fused multiply-add), ``s`` a float64 scalar."""

    def codegen(context, builder, sig, args):
        a, s, c = args
        lane0 = builder.insert_element(ir.Constant(_VEC, ir.Undefined), s, ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(lane0, ir.Constant(_VEC, ir.Undefined),
                                       ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3), "llvm.fma.v8f64")
        return builder.call(fma, [a, splat, c])

    return float64x8(float64x8, types.float64, float64x8), codegen
