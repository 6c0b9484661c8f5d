"""Import rules for MatMul, Gemm and the Einsum equations that are matrix products.

``Gemm`` is ``alpha * A' @ B' + beta * C`` built from transpose, matmul,
multiply and add.  ``Einsum`` is supported where it is a matrix product with
batch dims (``"bij,bjk->bik"``, ``"ij,kj->ik"``, ``"i,i"``, ellipses included),
or, with one operand, a transpose and a sum (``"ij->ji"``, ``"ij->i"``); other
repeated letters (diagonals and traces: ``"ii->i"``, ``"ii"``, ``"bii->bi"``)
are taken first with ``diagonal``; other equations (three operands, products
that are not matrix products) are refused, naming the node.

``Trilu`` (PyTorch's ``triu``/``tril``: the causal mask of
``nn.Transformer.generate_square_subsequent_mask``) is a ``where`` against a
constant band mask, so it needs static sizes on its last two axes.

Our ``matmul`` takes no bfloat16 (numpy's matmul of bfloat16 returns float32):
a bfloat16 product is cast to float32, multiplied and rounded back, as
onnxruntime and ONNX's reference do.
"""

from __future__ import annotations

import numpy as np

from ..ops import api as ops
from .import_rules import NodeContext, rule


def matmul(a, b):
    """a @ b; a bfloat16 product is computed in float32 and rounded back."""
    if a.dtype.name == "bfloat16" and b.dtype.name == "bfloat16":
        wide = ops.matmul(ops.cast(a, dtype="float32"), ops.cast(b, dtype="float32"))
        return ops.cast(wide, dtype="bfloat16")
    return ops.matmul(a, b)


@rule("MatMul", versions=(13,))
def _matmul(ctx: NodeContext):
    return matmul(ctx.input(0), ctx.input(1))


@rule("Gemm", versions=(13,))
def _gemm(ctx: NodeContext):
    a, b = ctx.input(0), ctx.input(1)
    if ctx.attr("transA", 0):
        a = ops.transpose(a)
    if ctx.attr("transB", 0):
        b = ops.transpose(b)
    out = matmul(a, b)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if alpha != 1.0:
        out = out * alpha
    if ctx.has(2) and beta != 0.0:
        c = ctx.input(2)
        out = out + (c if beta == 1.0 else c * beta)
    return out


def _parse_einsum(ctx: NodeContext, equation: str, ranks: list[int]):
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ctx.fail(f"equation {equation!r} has {len(terms)} operands, the node {len(ranks)}")
    ellipsis_rank = 0
    for term, rank in zip(terms, ranks):
        if "..." in term:
            ellipsis_rank = max(ellipsis_rank, rank - len(term.replace("...", "")))
    fill = "".join(chr(0x100 + i) for i in range(ellipsis_rank))  # letters no user writes
    expanded = []
    for term, rank in zip(terms, ranks):
        if "..." in term:
            width = rank - len(term.replace("...", ""))
            term = term.replace("...", fill[ellipsis_rank - width :])
        if len(term) != rank:
            raise ctx.fail(f"einsum term {term!r} does not fit an operand of rank {rank}")
        expanded.append(term)
    if arrow:
        out = rhs.replace("...", fill)
    else:
        counts = {c: lhs.count(c) for c in set("".join(expanded))}
        out = fill + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in fill))
    return expanded, out


@rule("Einsum", versions=(12, 28))
def _einsum(ctx: NodeContext):
    xs = ctx.inputs()
    terms, out = _parse_einsum(ctx, ctx.attr("equation"), [x.ndim for x in xs])
    if len(set(out)) != len(out):
        raise ctx.fail(f"the output {out!r} of einsum repeats a letter")
    for k, term in enumerate(terms):
        xs[k], terms[k] = _take_diagonals(xs[k], term)
    if len(xs) == 1:
        (x,), (term,) = xs, terms
        summed = tuple(i for i, c in enumerate(term) if c not in out)
        if summed:
            x = ops.sum(x, axis=summed)
            term = "".join(c for c in term if c in out)
        perm = tuple(term.index(c) for c in out)
        return ops.transpose(x, axes=perm) if perm != tuple(range(len(perm))) else ops.identity(x)
    if len(xs) != 2:
        raise ctx.fail("only Einsum of one or two operands is supported")
    (a, b), (ta, tb) = xs, terms
    batch = [c for c in ta if c in tb and c in out]
    contracted = [c for c in ta if c in tb and c not in out]
    free_a = [c for c in ta if c not in tb]
    free_b = [c for c in tb if c not in ta]
    if (
        len(contracted) > 1
        or len(free_a) > 1
        or len(free_b) > 1
        or any(c not in out for c in free_a + free_b)
        or (not contracted and not (free_a and free_b))
    ):
        raise ctx.fail(f"einsum {ctx.attr('equation')!r} is not a (batched) matrix product")
    # Bring a to (batch..., m, k) and b to (batch..., k, n); missing m, n or k
    # become 1-D operands, which matmul handles as numpy does.
    order_a = batch + free_a + contracted
    order_b = batch + contracted + free_b
    a = _permute(a, ta, order_a)
    b = _permute(b, tb, order_b)
    if not contracted:  # an outer product: (..., m, 1) @ (..., 1, n)
        a = ops.expand_dims(a, axis=-1)
        b = ops.expand_dims(b, axis=len(batch))
    if batch and (not free_a or not free_b) and contracted:
        # A batched matrix-vector product: keep matmul's batch semantics.
        if not free_a:
            a = ops.expand_dims(a, axis=-2)
        if not free_b:
            b = ops.expand_dims(b, axis=-1)
        result = matmul(a, b)
        drop = ([len(batch)] if not free_a else []) + ([-1] if not free_b else [])
        result = ops.squeeze(result, axis=tuple(drop))
    else:
        result = matmul(a, b)
    produced = "".join(batch + free_a + free_b)
    perm = tuple(produced.index(c) for c in out)
    return ops.transpose(result, axes=perm) if perm != tuple(range(len(perm))) else result


def _take_diagonals(x, term: str):
    """A repeated letter is a diagonal ("ii" -> "i", "bii" -> "bi"): take it with
    ``diagonal``, which moves it to the end, until every letter is distinct."""
    while len(set(term)) != len(term):
        letter = next(c for c in term if term.count(c) > 1)
        first = term.index(letter)
        second = term.index(letter, first + 1)
        x = ops.diagonal(x, axis1=first, axis2=second)
        term = "".join(c for i, c in enumerate(term) if i not in (first, second)) + letter
    return x, term


def _permute(x, term: str, order: list[str]):
    perm = tuple(term.index(c) for c in order)
    return ops.transpose(x, axes=perm) if perm != tuple(range(len(perm))) else x


@rule("Trilu", versions=(14,), static=(1,))
def _trilu(ctx: NodeContext):
    x = ctx.input(0)
    k = int(ctx.require_static(1, "k").reshape(())) if ctx.has(1) else 0
    if len(x.shape) < 2 or not all(isinstance(d, int) for d in x.shape[-2:]):
        raise ctx.fail(
            f"input of shape {tuple(x.shape)} needs static sizes on its last two axes "
            "(the rows and columns of the band mask)"
        )
    rows, cols = x.shape[-2:]
    # ONNX: upper keeps j - i >= k, lower keeps j - i <= k.
    offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    keep = offset >= k if ctx.attr("upper", 1) else offset <= k
    return ops.where(ctx.graph.constant(keep), x, ops.zeros_like(x))
