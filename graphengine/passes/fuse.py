"""Fusion: common forward and backward patterns become one fused op each
(:mod:`graphengine.ops.fused`), so a plan runs one kernel where it ran several.

Forward:

* ``activation(matmul(x, w) + b)``, x (N, K), w (K, M), b (M,), activation relu,
  tanh or sigmoid (or none: ``matmul(x, w) + b`` alone) -> ``dense``;
* a chain of unary elementwise ops (``exp``, ``tanh``, ``sqrt`` ...) ->
  ``elementwise_chain``.

Backward (the nodes the gradient pass emits):

* ``matmul(transpose(a), b)`` and ``matmul(a, transpose(b))`` (2-D: a dense
  layer's weight and input gradients) -> ``matmul_transposed``;
* a masked gradient, ``where(y > 0, dy, 0)`` -> ``relu_grad(dy, y)``, the same
  bits (not in forward graphs, which keep the ops ONNX export knows);
* a bias gradient, ``sum_like(dz, b)`` with dz (N, M) float32 or float64 and b
  (M,) -> ``sum_rows(dz)``;
* a per-channel sum of max pooling's gradient (a convolution's bias gradient),
  ``sum_like(max_pool_grad(m, i, x), b)`` with b (C, 1, ..) -> ``sum_like(m, b)``:
  the same numbers summed (each element of m lands once, in its channel), at
  the pooled size;
* relu's gradient after max pooling's, ``relu_grad(max_pool_grad(dy, i, y), y)``
  with i from ``max_pool(y)`` -> ``max_pool_grad(relu_grad(dy, max_pool(y)), i,
  y)``: y at each index is the pooled maximum, so the mask is applied at the
  pooled size (a quarter of y's for 2x2 pooling), with the same values;
* softmax cross-entropy's rule for integer labels, ``(exp(log_prob) -
  one_hot(labels)) * g`` -> ``softmax_cross_entropy_grad``;
* batch norm's rule (about twenty nodes) -> ``batch_norm_grad``.  Its nodes are
  found by replaying the op's own gradient rule against the graph: the rule,
  run again with identical nodes shared, must land on existing nodes only, which
  then are exactly its dx, dgamma and dbeta.

Reordering:

* max pooling after relu, ``max_pool(relu(z))``, when relu's output feeds only
  the pool and the pool's gradient (whose relu gradient then fuses as above),
  -> ``relu(max_pool(z))``: the maximum commutes with relu (both monotone, the
  same values bit for bit), so relu runs at the pooled size and relu(z) is not
  computed at all.  The maxima are then chosen in z, not in relu(z): they differ
  only in windows whose maximum is at most 0, where relu's gradient mask is 0
  whichever element is chosen, so the gradients are the same too.

A pattern fuses only when its inner nodes feed nothing else and are not kept
tensors, so no value is computed twice.  The fused node takes the name of the
node it replaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..graph import Graph, Node, canonical_ref, parse_ref
from ..ops.fused import CHAINABLE
from ..shapes import normalize_axis
from .rewrite import Rewriter, use_counts

_ACTIVATIONS = ("relu", "tanh", "sigmoid")


def fuse_ops(graph: Graph, keep: Sequence[str], **_: Any) -> Graph:
    """Apply the fusions of this module in one sweep; see the module docstring.

    >>> import numpy as np, graphengine as ge
    >>> from graphengine.passes import fuse_ops
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 3))
    >>> w, b = g.parameter("w", shape=(3, 2)), g.parameter("b", shape=(2,), init="zeros")
    >>> g.mark_output(ge.relu(x @ w + b))
    >>> [n.op for n in fuse_ops(g, g.outputs).nodes]
    ['placeholder', 'parameter', 'parameter', 'dense']
    """
    fuser = _Fuser(graph, keep)
    return fuser.run()


class _Fuser:
    def __init__(self, graph: Graph, keep: Sequence[str]) -> None:
        self.graph = graph
        self.rw = Rewriter(graph, keep)
        self.uses = use_counts(graph)
        self.consumers: dict[str, list[Node]] = {}
        for node in graph.nodes:
            for ref in node.inputs:
                self.consumers.setdefault(parse_ref(ref)[0], []).append(node)
        self.batch_norm = _find_batch_norm_gradients(graph)

    def run(self) -> Graph:
        rw = self.rw
        for node in self.graph.nodes:
            inputs = rw.inputs(node)
            if node.name in self.batch_norm:
                self._batch_norm_part(node)
                continue
            rule = _RULES.get(node.op)
            if rule is None or not rule(self, node, inputs):
                rw.copy(node)
        return rw.finish()

    # -- helpers -------------------------------------------------------------------
    def inner(self, ref: str, op: str | tuple[str, ...]) -> Node | None:
        """The producer of new-graph ref ``ref`` when it is an unkept, single-use,
        single-output node of ``op`` copied from the source graph."""
        node = self.rw.producer(ref)
        ops = (op,) if isinstance(op, str) else op
        if node is None or node.op not in ops or len(node.types) != 1:
            return None
        # Use counts are those of the source graph: valid for copied nodes and for
        # fused ones, which take the name of the node they replace.
        if self.uses.get(ref, 0) != 1 or node.name in self.rw.keep_nodes:
            return None
        return node

    def _batch_norm_part(self, node: Node) -> None:
        """Emit batch_norm_grad at the first of its three gradients, and let each
        of the three be the matching output."""
        rw = self.rw
        forward, dy, grads = self.batch_norm[node.name]
        key = f"__fused__{forward.name}"
        if key not in rw.subst:
            fused = rw.emit(
                "batch_norm_grad",
                [
                    rw.ref(dy),
                    rw.ref(forward.inputs[0]),
                    rw.ref(forward.inputs[1]),
                    rw.ref(f"{forward.name}:1"),
                    rw.ref(f"{forward.name}:2"),
                ],
                {"epsilon": forward.attrs["epsilon"]},
                like=node,
            )
            rw.subst[key] = fused[0]
        base = parse_ref(rw.subst[key])[0]
        k = grads.index(node.output_refs()[0])
        rw.replace(node, [f"{base}:{k}" if k else base])


def _dense(f: _Fuser, node: Node, inputs: list[str]) -> bool:
    """activation(x @ w + b), or x @ w + b when the sum feeds no activation."""
    rw = f.rw
    if node.op in _ACTIVATIONS:
        total, activation = f.inner(inputs[0], "add"), node.op
        if total is None:
            return _chain(f, node, inputs)
        operands = total.inputs
    else:  # an add: leave it to its activation, if that will fuse it
        consumers = f.consumers.get(node.name, [])
        if (
            len(consumers) == 1
            and consumers[0].op in _ACTIVATIONS
            and f.uses.get(node.name, 0) == 1
            and node.name not in rw.keep_nodes
        ):
            return False
        total, activation, operands = node, "none", inputs
    for product_ref, bias in (operands, operands[::-1]):
        product = f.inner(product_ref, "matmul")
        if product is None:
            continue
        x, w = product.inputs
        tx, tw, tb = rw.type_of(x), rw.type_of(w), rw.type_of(bias)
        if (
            len(tx.shape) != 2
            or len(tw.shape) != 2
            or len(tb.shape) != 1
            or tb.shape[0] != tw.shape[1]  # a (1,) bias broadcast over M is no dense's
            or rw.type_of(product_ref) != total.types[0]
            or not tx.dtype == tw.dtype == tb.dtype
        ):
            continue
        rw.emit("dense", [x, w, bias], {"activation": activation}, like=node, name=node.name)
        return True
    return False


def _chain(f: _Fuser, node: Node, inputs: list[str]) -> bool:
    """u2(u1(x)) for chainable unary ops -> elementwise_chain(x, ops=(u1, u2))."""
    if node.op not in CHAINABLE:
        return False
    inner = f.inner(inputs[0], (*CHAINABLE, "elementwise_chain"))
    if inner is None or inner.types[0] != node.types[0]:
        return False
    ops = inner.attrs["ops"] if inner.op == "elementwise_chain" else (inner.op,)
    f.rw.emit(
        "elementwise_chain", [inner.inputs[0]], {"ops": (*ops, node.op)}, like=node, name=node.name
    )
    return True


def _where(f: _Fuser, node: Node, inputs: list[str]) -> bool:
    """In the gradient section, where(t > 0, dy, 0) -> relu_grad(dy, t).

    relu_grad is that ``where`` bit for bit (+0.0 where t <= 0 or t is nan,
    whatever dy is, inf and nan included).  Forward graphs keep their ``where``
    (a "safe log" where(x > 0, log(x), 0), say): relu_grad is internal, and a
    forward graph keeps the ops ONNX export knows."""
    rw = f.rw
    if not rw.rebuild.in_source_gradient(node.name):
        return False
    condition, dy, zero = inputs
    test = rw.producer(condition)
    if (
        test is None
        or test.op != "greater"
        or not _is_zero(rw, zero, positive=True)  # relu_grad's zeros are +0.0
        or not _is_zero(rw, test.inputs[1])
    ):
        return False
    t = test.inputs[0]
    if rw.type_of(t) != node.types[0] or rw.type_of(dy) != node.types[0]:
        return False
    rw.emit("relu_grad", [dy, t], {}, like=node, name=node.name)
    return True


def _relu_grad(f: _Fuser, node: Node, inputs: list[str]) -> bool:
    """relu_grad(max_pool_grad(dy, indices, y), y), indices from max_pool(y) ->
    max_pool_grad(relu_grad(dy, max_pool(y):0), indices, y).  After the reorder
    of _max_pool, y = relu(z) and the indices come from max_pool(z): the mask is
    then max_pool(z):0 > 0, the same as relu's, and z stands in for y as the
    shape of the result, so that relu(z) is not needed."""
    rw = f.rw
    scattered, y = inputs
    spread = f.inner(scattered, "max_pool_grad")
    if spread is None:
        return False
    dy, indices, like = spread.inputs
    pool_name, index = parse_ref(indices)
    pool = rw.producer(indices)
    if pool is None or pool.op != "max_pool" or index != 1:
        return False
    pooled = canonical_ref(pool.inputs[0])
    relu = rw.producer(y)
    reordered = relu is not None and relu.op == "relu" and canonical_ref(relu.inputs[0]) == pooled
    if (
        (pooled != canonical_ref(y) and not reordered)
        or canonical_ref(like) != canonical_ref(y)
        or rw.type_of(pool_name) != rw.type_of(dy)
    ):
        return False
    (masked,) = rw.emit("relu_grad", [dy, pool_name], {}, like=node)
    rw.emit(
        "max_pool_grad", [masked, indices, pooled], dict(spread.attrs), like=node, name=node.name
    )
    return True


def _max_pool(f: _Fuser, node: Node, inputs: list[str]) -> bool:
    """max_pool(relu(z)) -> relu(max_pool(z)) (see the module docstring), when
    relu's output y feeds nothing but this pool and its gradients
    max_pool_grad(dy, indices, y), and each of those feeds only relu's gradient
    relu_grad(., y), which _relu_grad then fuses."""
    rw = f.rw
    relu = rw.producer(inputs[0])
    if (
        relu is None
        or relu.op != "relu"
        or relu.name in rw.keep_nodes
        or node.name in rw.keep_nodes
        or f.uses.get(node.name, 0) == 0  # the pooled maxima are not even read
    ):
        return False
    y, indices = canonical_ref(relu.name), f"{node.name}:1"
    for user in f.consumers.get(relu.name, []):
        if user is node:
            continue
        if user.op == "max_pool_grad":
            grad_ok = (
                canonical_ref(user.inputs[1]) == indices
                and canonical_ref(user.inputs[2]) == y
                and f.uses.get(user.name, 0) == 1
                and user.name not in rw.keep_nodes
                and all(
                    c.op == "relu_grad"
                    and canonical_ref(c.inputs[0]) == user.name
                    and canonical_ref(c.inputs[1]) == y
                    for c in f.consumers.get(user.name, [])
                )
            )
            if grad_ok:
                continue
        if user.op == "relu_grad" and canonical_ref(user.inputs[1]) == y:
            source = f.graph.get(parse_ref(user.inputs[0])[0])
            if (
                source is not None
                and source.op == "max_pool_grad"
                and canonical_ref(source.inputs[1]) == indices
            ):
                continue  # checked as that max_pool_grad's consumer
        return False
    if any(
        canonical_ref(ref) == indices and user.op != "max_pool_grad"
        for user in f.consumers.get(node.name, [])
        for ref in user.inputs
    ):
        return False
    z = relu.inputs[0]
    pooled = rw.emit("max_pool", [z], dict(node.attrs), like=node)
    rw.emit("relu", [pooled[0]], {}, like=node, name=node.name)
    rw.subst[indices] = pooled[1]
    return True


def _is_zero(rw: Rewriter, ref: str, positive: bool = False) -> bool:
    """``ref`` is a scalar constant 0 (+0.0 only, with ``positive``)."""
    value = rw.constant(ref)
    if value is None or value.shape != () or float(value) != 0.0:
        return False
    return not (positive and np.signbit(value))


def _multiply(f: _Fuser, node: Node, inputs: list[str]) -> bool:
    """(exp(P) - one_hot(L, axis=a)) * broadcast_like(G, axes=(a,)) ->
    softmax_cross_entropy_grad(P, L, G, axis=a)."""
    rw = f.rw
    out = node.types[0]
    for diff_ref, spread_ref in (inputs, inputs[::-1]):
        diff, spread = f.inner(diff_ref, "subtract"), rw.producer(spread_ref)
        if (
            diff is None
            or spread is None
            or spread.op != "broadcast_like"
            or spread.attrs["mean"]
            or spread.attrs["axes"] is None
            or len(spread.attrs["axes"]) != 1
        ):
            continue
        ex, hot = f.inner(diff.inputs[0], "exp"), rw.producer(diff.inputs[1])
        if ex is None or hot is None or hot.op != "one_hot":
            continue
        rank = len(out.shape)
        axis = normalize_axis(spread.attrs["axes"][0], rank)
        log_prob, labels, g = ex.inputs[0], hot.inputs[0], spread.inputs[0]
        if (
            hot.attrs["axis"] % rank != axis
            or hot.attrs["dtype"] != out.dtype
            or rw.type_of(log_prob) != out
            or rw.type_of(spread_ref) != out
            or rw.type_of(diff_ref) != out
            or hot.attrs["depth"] != out.shape[axis]
            or rw.type_of(labels).dtype.name not in ("int32", "int64")
        ):
            continue
        rw.emit(
            "softmax_cross_entropy_grad",
            [log_prob, labels, g],
            {"axis": axis},
            like=node,
            name=node.name,
        )
        return True
    return False


def _matmul(f: _Fuser, node: Node, inputs: list[str]) -> bool:
    """In the gradient section, matmul(transpose(a), b) and matmul(a,
    transpose(b)) of 2-D float operands -> matmul_transposed(a, b).  The
    transpose is a view, so one that feeds other nodes too may stay for them."""
    rw = f.rw
    if not rw.rebuild.in_source_gradient(node.name):
        return False  # forward graphs keep what ONNX export knows
    operands, flags = [], []
    for ref in inputs:
        t = rw.type_of(ref)
        if len(t.shape) != 2 or t.dtype.kind != "f":
            return False
        producer = rw.producer(ref)
        flipped = (
            producer is not None
            and producer.op == "transpose"
            and producer.attrs["axes"] in (None, (1, 0))
        )
        operands.append(producer.inputs[0] if flipped and producer else ref)
        flags.append(flipped)
    if not any(flags):
        return False
    rw.emit(
        "matmul_transposed",
        operands,
        {"transpose_a": flags[0], "transpose_b": flags[1]},
        like=node,
        name=node.name,
    )
    return True


def _sum_like(f: _Fuser, node: Node, inputs: list[str]) -> bool:
    """sum_like(dz, b) summing a 2-D float32/float64 dz (N, M) over its rows to b
    (M,) (a dense layer's bias gradient) -> sum_rows(dz)."""
    rw = f.rw
    if not rw.rebuild.in_source_gradient(node.name):
        return False  # forward graphs keep what ONNX export knows
    if node.attrs["axes"] is not None or node.attrs["mean"]:
        return False
    if _channel_sum_of_pool_gradient(f, node, inputs):
        return True
    x, like = rw.type_of(inputs[0]), rw.type_of(inputs[1])
    if len(x.shape) != 2 or len(like.shape) != 1 or x.dtype.name not in ("float32", "float64"):
        return False
    columns = x.shape[1]
    if not isinstance(columns, int) or columns != like.shape[0]:
        return False  # a column axis of 1 stretched to M sums over columns too
    rw.emit("sum_rows", [inputs[0]], {}, like=node, name=node.name)
    return True


def _channel_sum_of_pool_gradient(f: _Fuser, node: Node, inputs: list[str]) -> bool:
    """sum_like(max_pool_grad(m, i, x), b) with b (C, 1, ..) or (1, C, 1, ..):
    x's sum per channel (a convolution's bias gradient behind a max pool) ->
    sum_like(m, b).  max_pool_grad sends every element of m to one element of
    the same channel of x and fills the rest with zeros, so both sums add the
    same numbers (in another order: equal up to rounding), and this one reads
    the pooled size instead of x's."""
    rw = f.rw
    spread = rw.producer(inputs[0])
    if spread is None or spread.op != "max_pool_grad":
        return False
    pooled, full, like = rw.type_of(spread.inputs[0]), node.types[0], rw.type_of(inputs[1])
    rank = len(pooled.shape)
    shape = tuple(like.shape)
    if len(shape) == rank:
        if shape[0] != 1:
            return False
        shape = shape[1:]
    if (
        len(shape) != rank - 1
        or shape[0] != pooled.shape[1]
        or any(d != 1 for d in shape[1:])
        or full.dtype != pooled.dtype
    ):
        return False
    rw.emit("sum_like", [spread.inputs[0], inputs[1]], dict(node.attrs), like=node, name=node.name)
    return True


_RULES = {
    "matmul": _matmul,
    "relu": _dense,
    "tanh": _dense,
    "sigmoid": _dense,
    "add": _dense,
    "where": _where,
    "relu_grad": _relu_grad,
    "max_pool": _max_pool,
    "sum_like": _sum_like,
    "multiply": _multiply,
    **{op: _chain for op in CHAINABLE if op not in _ACTIVATIONS},
}


# -- batch norm: find the gradient nodes by replaying the rule ----------------------


def _find_batch_norm_gradients(graph: Graph) -> dict[str, tuple[Node, str, list[str]]]:
    """For each batch_norm node whose gradients (x, gamma and beta) are in the
    graph: {name of each gradient's node: (forward node, dy, [dx, dgamma, dbeta])}."""
    info = graph.gradient
    if info is None:
        return {}
    section = set(info.nodes)
    derived: dict[str, list[Node]] = {}
    for node in graph.nodes:
        if node.name in section and node.derived_from:
            derived.setdefault(node.derived_from, []).append(node)
    found: dict[str, tuple[Node, str, list[str]]] = {}
    for forward in graph.nodes:
        if forward.op != "batch_norm" or forward.name not in derived:
            continue
        match = _replay_batch_norm(graph, forward, derived[forward.name])
        if match is None:
            continue
        dy, grads = match
        names = [parse_ref(r)[0] for r in grads]
        if len(set(names)) != 3 or any(r != n for r, n in zip(grads, names)):
            continue
        for name in names:
            found[name] = (forward, dy, grads)
    return found


def _replay_batch_norm(graph: Graph, forward: Node, nodes: list[Node]):
    """(dy, [dx, dgamma, dbeta]) when batch_norm's rule, replayed on dy with no
    gradient reaching the statistics outputs, builds nothing new; else None."""
    from ..simplify import cse_key

    y_type = forward.types[0]
    candidates = []
    for node in nodes:
        for ref in (*node.inputs, *node.output_refs()):
            if (
                ref not in candidates
                and parse_ref(ref)[0] != forward.name
                and ref != forward.inputs[0]
                and graph.type_of(ref) == y_type
            ):
                candidates.append(ref)
    table: dict = {}
    for node in graph.nodes:
        if node.op == "constant":
            value = node.attrs["value"]
            table.setdefault(("constant", value.dtype.str, value.shape, value.tobytes()), node.name)
            continue
        key = cse_key(node.op, list(node.inputs), node.attrs)
        if key is not None:
            table.setdefault(key, node.name)
    for dy in candidates[:8]:
        grads = _replay(graph, forward, table, dy)
        if grads is not None:
            return dy, grads
    return None


def _replay(graph: Graph, forward: Node, table: dict, dy: str):
    """Run batch_norm's rule on ``dy`` against a scratch view of ``graph`` whose
    identical nodes are shared; its three gradients when it built nothing new."""
    from ..gradients import NodeView
    from ..graph import Tensor
    from ..simplify import EmissionContext

    scratch = graph.copy(record=False)  # shares the node records; values are not needed
    try:
        with scratch.emitting_gradients(EmissionContext(scope="replay", cse=dict(table))):
            view = NodeView(scratch, forward, [True, True, True, False, False])
            results = forward.opdef.vjp(view, [scratch.tensor(dy), None, None])
    except Exception:
        return None
    if len(scratch) != len(graph) or len(results) < 3:
        return None
    grads = [r.name for r in results[:3] if isinstance(r, Tensor)]
    if len(grads) == 3 and all(parse_ref(r)[0] in graph for r in grads):
        return grads
    return None
