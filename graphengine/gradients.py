"""Reverse-mode differentiation as a compiler pass: forward graph in, gradient graph out.

:func:`gradients` keeps the nodes on a differentiable path from a wrt tensor to
the loss, visits them in reverse topological order and applies each op's
gradient rule (its vjp) to the incoming gradient.  Rules emit ordinary nodes of
our own op set, so the result is an ordinary graph: it can be saved, drawn, run
and differentiated again.  The pass does the shared work once, so rules stay
short: fan-out contributions are summed in one ``add_n``, a gradient flowing
into a broadcast input is summed back to that input's shape (``sum_like``),
``x*1`` and ``x+0`` are never emitted, identical nodes are shared, and nodes
that no gradient output needs are dropped at the end.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .compiler import to_networkx
from .dtypes import dtype_name, is_float
from .errors import GradientError
from .graph import Graph, Node, Tensor, fresh_name, make_ref, parse_ref, require_graph
from .model import GradientInfo
from .ops.registry import OpDef, get_op
from .shapes import TensorType
from .simplify import EmissionContext

if TYPE_CHECKING:  # pragma: no cover - NetworkX is imported only to explain a missing gradient
    import networkx as nx

#: Name scope of every node the pass adds.
SCOPE = "gradients"


class GradientWarning(UserWarning):
    """A wrt tensor got a zero gradient because the loss does not depend on it."""


class NodeView:
    """What a gradient rule sees of the forward node it differentiates.

    ``inputs`` and ``outputs`` are tensor handles in the gradient graph (which
    holds every forward node), so rules reuse forward values instead of
    recomputing them; ``wants(i)`` tells whether input ``i`` needs a gradient.
    """

    inputs: list[Tensor]
    outputs: list[Tensor]

    def __init__(self, graph: Graph, node: Node, wanted: Sequence[bool]) -> None:
        self.name = node.name
        self.op = node.op
        self.attrs = node.attrs
        self._graph = graph
        self._node = node
        self._wanted = wanted

    def __getattr__(self, attr: str) -> list[Tensor]:
        # ``inputs`` and ``outputs`` are made on first use (then found in the
        # instance): many rules read only ``dy`` (add) or only the outputs (tanh).
        # (Only these two names touch the fields: any other missing attribute,
        # asked before __init__ ran as copy and pickle do, is an AttributeError.)
        if attr == "inputs":
            graph = self._graph
            # The node's inputs exist in the graph: handles without the lookup checks.
            self.inputs = [
                Tensor(graph, r) if ":" not in r else Tensor(graph, *parse_ref(r))
                for r in self._node.inputs
            ]
            return self.inputs
        if attr == "outputs":
            graph, node = self._graph, self._node
            self.outputs = [Tensor(graph, node.name, i) for i in range(len(node.types))]
            return self.outputs
        raise AttributeError(f"'NodeView' object has no attribute {attr!r}")

    def wants(self, index: int) -> bool:
        return self._wanted[index]


@dataclass
class _Reach:
    """Which tensors lie on a differentiable path from a wrt tensor to the loss."""

    live: set[str]  # tensor refs that carry a gradient
    #: The nodes to differentiate, in forward order, each with its inputs as
    #: canonical refs (``node:0`` written ``node``) and, per input, whether it
    #: is a differentiable edge (see _edges).
    steps: list[tuple[Node, Sequence[str], list[bool]]]

    @property
    def nodes(self) -> list[Node]:
        return [node for node, _, _ in self.steps]


def _differentiable_edge(node: Node, slot: int, in_type: TensorType) -> bool:
    opdef = node.opdef
    return (
        opdef.differentiable and opdef.input_spec(slot).differentiable and is_float(in_type.dtype)
    )


@functools.cache
def _differentiable_inputs(opdef: OpDef) -> tuple[bool, ...]:
    """Per input slot of ``opdef``, whether its schema lets a gradient through
    (one entry for a variadic op, whose inputs share a declaration); looked up
    once per op, as the pass asks for every edge."""
    if not opdef.differentiable:
        return ()
    return tuple(spec.differentiable for spec in opdef.inputs)


def _may_refuse(opdef: OpDef) -> bool:
    """Whether ``opdef`` says when its rule cannot differentiate a node (it
    overrides :meth:`OpDef.gradient_unsupported`); the others never refuse, so
    their input types need not be looked up."""
    return type(opdef).gradient_unsupported is not OpDef.gradient_unsupported


class _FloatRefs(dict[str, bool]):
    """Whether each tensor reference has a float dtype, computed once per ref."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self._type_of = graph.type_of
        #: The answer per dtype, for the few dtypes a graph has.
        self.by_dtype: dict[np.dtype, bool] = {}

    def __missing__(self, ref: str) -> bool:
        dtype = self._type_of(ref).dtype
        result = self.by_dtype.get(dtype)
        if result is None:
            result = self.by_dtype[dtype] = is_float(dtype)
        self[ref] = result
        return result


def _edges(flags: tuple[bool, ...], inputs: Sequence[str], floats: _FloatRefs) -> list[bool]:
    """For each input of a node (``inputs``, its canonical refs; ``flags``, its
    op's :func:`_differentiable_inputs`), whether it is a differentiable edge:
    the same test as :func:`_differentiable_edge`, with the per-op and per-ref
    parts looked up once."""
    if not flags:
        return [False] * len(inputs)
    if len(flags) == 1:
        if flags[0]:
            # map with the dict's own lookup (which still falls back to
            # __missing__): no Python frame per input, for every node on the path.
            return list(map(floats.__getitem__, inputs))
        return [False] * len(inputs)
    return [flag and floats[ref] for flag, ref in zip(flags, inputs)]


def _reach(graph: Graph, loss: str, wrt: Sequence[str]) -> _Reach:
    """Sweep the nodes up to the loss in topological order: forward from the wrt
    tensors, then backward from the loss, both along differentiable edges only.

    A graph's insertion order is a topological order (every node is added after
    its inputs, by the builder, the loader and the passes), so one sweep each
    way suffices.  Only nodes the forward sweep touched can carry a gradient
    back, and the backward sweep reaches only ancestors of the loss, so neither
    needs the ancestors worked out first.  Nodes of ops without a gradient rule
    have no differentiable edges and pass nothing on, either way.
    """
    nodes = graph.nodes
    del nodes[nodes.index(graph.node(parse_ref(loss)[0])) + 1 :]
    floats = _FloatRefs(graph)
    float_dtype = floats.by_dtype
    forward = set(wrt)
    # Nodes through which a gradient can flow from a wrt tensor (a
    # differentiable edge from a tensor in ``forward``): the only candidates.
    steps = []
    # op -> (_differentiable_inputs, whether all of them are true), once per op
    flags_of: dict[str, tuple[tuple[bool, ...], bool]] = {}
    for node in nodes:
        inputs: Sequence[str] = node.inputs
        if not inputs:
            continue  # a source: nothing flows into it
        for ref in inputs:
            if ":" in ref:  # rare: only then the call that canonicalises
                inputs = _canonical(inputs)
                break
        if forward.isdisjoint(inputs):
            continue  # no wrt tensor reaches this node
        found = flags_of.get(node.op)
        if found is None:
            flags = _differentiable_inputs(get_op(node.op))
            found = flags_of[node.op] = (flags, bool(flags) and all(flags))
        flags, every = found
        if every and (len(flags) == 1 or len(flags) == len(inputs)):
            # What _edges finds for an op whose every input slot lets a
            # gradient through (most nodes), inline: whether each input is
            # float, by one C-level map over the dict's lookup.
            node_edges = list(map(floats.__getitem__, inputs))
        else:
            node_edges = _edges(flags, inputs, floats)
        for edge, ref in zip(node_edges, inputs):
            if edge and ref in forward:
                steps.append((node, inputs, node_edges))
                carries = True
                break
        else:
            carries = False
        name, types = node.name, node.types
        if len(types) == 1:
            # Its consumers ask too: answered here, where the type is at hand.
            dtype = types[0].dtype
            is_output_float = float_dtype.get(dtype)
            if is_output_float is None:
                is_output_float = float_dtype[dtype] = is_float(dtype)
            floats[name] = is_output_float
            if carries and is_output_float:
                forward.add(name)
        elif carries:
            forward.update(r for r, t in zip(node.output_refs(), types) if is_float(t.dtype))
    # Of those, the ones a gradient from the loss reaches.  Every candidate has
    # an edge from ``forward``, so each one reached passes the gradient on.
    backward = {loss}
    differentiated = []
    for step in reversed(steps):
        node, inputs, node_edges = step
        if len(node.types) == 1:
            if node.name not in backward:
                continue
        elif not any(r in backward for r in node.output_refs()):
            continue
        for edge, ref in zip(node_edges, inputs):
            if edge and ref in forward:
                backward.add(ref)
        differentiated.append(step)
    differentiated.reverse()
    return _Reach(forward & backward, differentiated)


def _canonical(refs: Sequence[str]) -> Sequence[str]:
    # Only a ``node:k`` reference can be written two ways (``node:0`` is ``node``).
    for r in refs:
        if ":" in r:
            return [make_ref(*parse_ref(r)) if ":" in r else r for r in refs]
    return refs


def explain_no_gradient(graph: Graph, loss: str, wrt: str, g: nx.DiGraph | None = None) -> str:
    """Why no gradient reaches ``wrt``: not connected, or blocked by named ops.

    ``g`` is ``to_networkx(graph)``, when the caller already has it.
    """
    import networkx as nx

    g = to_networkx(graph) if g is None else g
    source, target = parse_ref(wrt)[0], parse_ref(loss)[0]
    if source == target:
        return f"'{wrt}' is the loss itself but has dtype {graph.tensor(wrt).dtype}"
    if not nx.has_path(g, source, target):
        return (
            f"the loss '{loss}' does not depend on '{wrt}': no path leads from it to the "
            "loss (did you build the loss from another tensor?)"
        )
    between = nx.descendants(g, source) & (nx.ancestors(g, target) | {target})
    blockers = []
    for name in sorted(between | {source}, key=lambda n: g.nodes[n]["index"]):
        node = graph.node(name)
        for i, ref in enumerate(node.inputs):
            producer = parse_ref(ref)[0]
            if (
                (producer == source or producer in between)
                and name in between
                and not _differentiable_edge(node, i, graph.type_of(ref))
            ):
                blockers.append(_why_blocked(graph, node, i, ref))
    path = nx.shortest_path(g, source, target)
    text = "; ".join(dict.fromkeys(blockers)) or "no differentiable path"
    return (
        f"every path from '{wrt}' to the loss '{loss}' is blocked: {text} "
        f"(one such path: {' -> '.join(path)})"
    )


def _why_blocked(graph: Graph, node: Node, slot: int, ref: str) -> str:
    opdef = node.opdef
    dtype = graph.tensor(ref).dtype
    if not opdef.differentiable:
        return f"node '{node.name}' ({node.op}) passes no gradient"
    if not opdef.input_spec(slot).differentiable:
        return (
            f"input '{opdef.input_spec(slot).name}' of node '{node.name}' ({node.op}) "
            "is not differentiable"
        )
    return f"'{ref}' has dtype {dtype.name} (gradients flow only through float tensors)"


def gradients(
    graph: Graph,
    loss: str | Tensor,
    wrt: Sequence[str | Tensor] | None = None,
    *,
    grad_ys: Any = None,
    unconnected: str = "zeros",
    name: str | None = None,
) -> Graph:
    """Build the gradient graph of ``loss`` with respect to ``wrt``.

    Args:
        graph: the forward graph (left unchanged).
        loss: the tensor to differentiate; it must be a float scalar unless
            ``grad_ys`` is given.
        wrt: tensors to differentiate with respect to (parameters, placeholders or
            intermediate tensors); default every trainable parameter.
        grad_ys: the seed gradient for a non-scalar loss (as tf.gradients): an
            array of the loss's shape, or ``"placeholder"`` to feed it at run time
            as ``gradients/seed``.
        unconnected: what a wrt tensor the loss does not depend on gets:
            ``"zeros"`` (zeros of its shape, with a GradientWarning saying why) or
            ``"error"`` (a GradientError saying why).
        name: name of the new graph (default ``<graph>_grad``).

    Returns:
        A new graph holding the forward nodes and the gradient nodes (under
        ``gradients/``, each linked to its forward node by ``derived_from``).
        ``result.gradient.grads`` maps each wrt tensor to its gradient tensor,
        named ``gradients/<wrt>``; the loss and the gradients are its outputs.

    Raises:
        GradientError: a non-float or non-scalar loss without ``grad_ys``, an
            unknown or non-float wrt tensor, an unconnected wrt tensor with
            ``unconnected="error"``, ops without a usable gradient rule (all
            listed at once).

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (), "float64")
    >>> y = ge.sin(x * x)
    >>> tg = ge.gradients(g, y, wrt=["x"])
    >>> round(float(ge.run(tg, "gradients/x", {"x": 1.0})), 6)  # 2x cos(x^2)
    1.080605
    """
    require_graph(graph, "ge.gradients")
    if unconnected not in ("zeros", "error"):
        raise GradientError(f"unconnected must be 'zeros' or 'error', not {unconnected!r}")
    loss_ref = _tensor_ref(graph, loss, "loss")
    loss_type = graph.tensor(loss_ref).type
    if not is_float(loss_type.dtype):
        raise GradientError(
            f"loss '{loss_ref}' has dtype {loss_type.dtype.name}; only a float "
            "tensor can be differentiated"
        )
    if wrt is None:
        wrt_refs = [n.name for n in graph.parameters(trainable=True)]
        if not wrt_refs:
            raise GradientError(
                f"graph '{graph.name}' has no trainable parameters; name the "
                "tensors to differentiate with wrt=[...]"
            )
    else:
        wrt_refs = list(dict.fromkeys(_tensor_ref(graph, w, "wrt") for w in wrt))
    for ref in wrt_refs:
        dtype = graph.type_of(ref).dtype
        if not is_float(dtype):
            raise GradientError(
                f"wrt tensor '{ref}' has dtype {dtype.name}; gradients exist only for float tensors"
            )
    if loss_type.shape != () and grad_ys is None:
        raise GradientError(
            f"loss '{loss_ref}' has shape {loss_type.shape}, not a scalar: "
            "reduce it (ge.sum, ge.mean) or pass grad_ys, the gradient to "
            "start from, with the loss's shape"
        )

    # The collector is paused from the sweep on (see _gc_paused), which
    # allocates as the emission does.
    with _gc_paused():
        reach = _reach(graph, loss_ref, wrt_refs)
        nodes = reach.nodes
        refusing = {op for op in {n.op for n in nodes} if _may_refuse(get_op(op))}
        # (Most graphs have no op that may refuse: then no second sweep.)
        unsupported = [
            f"node '{n.name}' ({n.op}): {why}"
            for n in (nodes if refusing else ())
            if n.op in refusing
            and (why := n.opdef.gradient_unsupported(n.attrs, [graph.type_of(r) for r in n.inputs]))
            is not None
        ]
        if unsupported:
            raise GradientError(
                f"{len(unsupported)} node(s) on the path to the loss have no "
                "usable gradient rule: " + "; ".join(unsupported)
            )
        disconnected = [ref for ref in wrt_refs if ref not in reach.live]
        if disconnected:
            nxg = to_networkx(graph)
            reasons = "; ".join(
                f"'{ref}': {explain_no_gradient(graph, loss_ref, ref, nxg)}" for ref in disconnected
            )
            if unconnected == "error":
                raise GradientError(
                    f"no gradient reaches {reasons}. Pass unconnected='zeros' to get zeros instead"
                )
            warnings.warn(
                f"the gradient of {len(disconnected)} wrt tensor(s) is zero: {reasons}",
                GradientWarning,
                stacklevel=2,
            )
        out = _build(graph, loss_ref, loss_type, wrt_refs, reach, grad_ys, disconnected, name)
        # Freed while the collector is paused, the sweep's records (a fifth of the
        # objects the pass made) are not scanned by the collection its restart starts.
        del reach, nodes
    return out


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the pass runs: it allocates
    tens of thousands of small objects that form no cycles, and collections
    triggered by them cost about a fifth of the time on large graphs (measured
    with tools/bench_gradients.py)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _build(
    graph: Graph,
    loss_ref: str,
    loss_type: TensorType,
    wrt_refs: list[str],
    reach: _Reach,
    grad_ys: Any,
    disconnected: list[str],
    name: str | None,
) -> Graph:
    """Emit the gradient nodes into a copy of ``graph``; see :func:`gradients`."""
    out = graph.copy(name or f"{graph.name}_grad")
    first = len(out)
    scope = _free_scope(out)
    output_names = _output_names(out, scope, wrt_refs)
    ctx = EmissionContext(scope=scope, reserved=set(output_names.values()))
    with out.emitting_gradients(ctx):
        seed_ref = _seed(out, ctx, loss_ref, loss_type, grad_ys)
        totals = _backpropagate(out, ctx, reach, loss_ref, seed_ref, set(wrt_refs), scope)
        grads = {}
        for ref in wrt_refs:
            ctx.scope, ctx.derived_from = scope, parse_ref(ref)[0]
            value = totals.get(ref)
            op, arg = ("identity", value) if value is not None else ("zeros_like", out.tensor(ref))
            grad = out.apply(op, [arg], name=output_names[ref].split("/", 1)[1])
            assert isinstance(grad, Tensor)
            grads[ref] = grad.name
    fed_seed = seed_ref if out.node(parse_ref(seed_ref)[0]).op == "placeholder" else ""
    added = _drop_unused(out, first, list(grads.values()) + ([fed_seed] if fed_seed else []))
    out.gradient = GradientInfo(
        loss_ref, grads, tuple(added), seed=fed_seed, zero=tuple(disconnected)
    )
    out.set_outputs([loss_ref, *grads.values()])
    return out


def _output_names(graph: Graph, scope: str, wrt_refs: list[str]) -> dict[str, str]:
    """wrt ref -> the name of its gradient output: ``scope/ref`` with ``:`` as ``_``.
    Output k of node ``a`` and a node named ``a_k`` would then share a name (a
    dropout's mask ``dropout:1`` and the next dropout ``dropout_1``): the node
    keeps it and the ``node:k`` ref takes the next free counter (``a_k_1``)."""
    taken = {f"{scope}/{ref}" for ref in wrt_refs if ":" not in ref}
    names: dict[str, str] = {}
    for ref in wrt_refs:
        if ":" not in ref:
            names[ref] = f"{scope}/{ref}"
            continue
        base = name = f"{scope}/{ref.replace(':', '_')}"
        counter = 0
        while name in taken or name in graph:
            counter += 1
            name = f"{base}_{counter}"
        taken.add(name)
        names[ref] = name
    return names


def _tensor_ref(graph: Graph, value: str | Tensor, what: str) -> str:
    try:
        return graph.tensor(value).name
    except Exception as exc:
        raise GradientError(f"{what}: {exc}") from None


def _seed(
    graph: Graph, ctx: EmissionContext, loss: str, loss_type: TensorType, grad_ys: Any
) -> str:
    ctx.derived_from = parse_ref(loss)[0]
    if isinstance(grad_ys, str):
        if grad_ys != "placeholder":
            raise GradientError(f"grad_ys must be an array or 'placeholder', not {grad_ys!r}")
        return graph.placeholder("seed", loss_type.shape, loss_type.dtype).name
    if grad_ys is None:
        value = np.ones((), loss_type.dtype)
    else:
        value = np.asarray(grad_ys, dtype=loss_type.dtype)
        if loss_type.is_static and value.shape != loss_type.shape:
            raise GradientError(
                f"grad_ys has shape {value.shape}, the loss '{loss}' has shape {loss_type.shape}"
            )
    return graph.constant(value).name


def _backpropagate(
    graph: Graph,
    ctx: EmissionContext,
    reach: _Reach,
    loss: str,
    seed: str,
    wrt: set[str],
    scope: str,
) -> dict[str, Tensor]:
    """Apply the rules in reverse order; return the total gradient of each wrt tensor."""
    pending: dict[str, list[Tensor]] = {loss: [graph.tensor(seed)]}
    totals: dict[str, Tensor] = {}
    scopes: dict[str, str] = {}  # forward scope -> gradient scope, made once each

    def total(ref: str, producer: Node) -> Tensor | None:
        parts = pending.pop(ref, None)
        if not parts:
            return None
        ctx.derived_from = producer.name
        ctx.scope = scopes.get(producer.scope) or _scope_of(producer, scope, scopes)
        value = parts[0] if len(parts) == 1 else _sum(graph, parts)
        if ref in wrt:
            totals[ref] = value
        return value

    live = reach.live
    # Rules of nodes with bfloat16 values run in float32 (_in_float32); one look
    # at the dtypes spares every other graph the per-node checks.
    dtypes = {t.dtype for n in graph.nodes for t in n.types}
    bfloat16 = any(dtype_name(d) == "bfloat16" for d in dtypes)
    opdefs: dict[str, tuple[OpDef, bool]] = {}  # op -> (declaration, multi_output), once per op
    type_of = graph.type_of
    for node, inputs, node_edges in reversed(reach.steps):
        name = node.name
        found = opdefs.get(node.op)
        if found is None:
            opdef = get_op(node.op)
            found = opdefs[node.op] = (opdef, opdef.multi_output)
        opdef, multi_output = found
        if multi_output:
            dys = [total(ref, node) for ref in node.output_refs()]
            if all(d is None for d in dys):
                continue
            dy: Tensor | list[Tensor | None] | None = dys
        else:
            # total(), inline for the one-output case (most nodes): no call.
            parts = pending.pop(name, None)
            if not parts:
                continue
            ctx.derived_from = name
            ctx.scope = scopes.get(node.scope) or _scope_of(node, scope, scopes)
            dy = parts[0] if len(parts) == 1 else _sum(graph, parts)
            if name in wrt:
                totals[name] = dy
        # total() has set ctx.derived_from and ctx.scope for this node.
        # Which inputs want a gradient; the one- and two-input cases (most
        # nodes) spelt out, without a comprehension's frame.
        if len(inputs) == 2:
            wanted = [node_edges[0] and inputs[0] in live, node_edges[1] and inputs[1] in live]
        elif len(inputs) == 1:
            wanted = [node_edges[0] and inputs[0] in live]
        else:
            wanted = [edge and ref in live for edge, ref in zip(node_edges, inputs)]
        # The contract (OpDef's docstring): one output gets its gradient, several
        # get a list with None for those no gradient reached.
        rule = opdef.vjp
        assert rule is not None, f"{node.op} is on a gradient path without a rule"
        view = NodeView(graph, node, wanted)
        results = _in_float32(rule, view, dy) if bfloat16 else rule(view, dy)
        assert len(results) == len(inputs), f"vjp of {node.op} returned {len(results)} grads"
        for ref, grad, want in zip(inputs, results, wanted):
            if grad is None or not want:
                continue
            # _fit's common case inline: the gradient has its input's type already.
            have = type_of(grad.node) if grad.index == 0 else type_of(grad.name)
            target = type_of(ref)
            if have.shape == target.shape and have.dtype == target.dtype:
                fitted = grad
            else:
                fitted = _fit(graph, grad, ref, have, target)
            parts = pending.get(ref)
            if parts is None:
                pending[ref] = [fitted]
            else:
                parts.append(fitted)
    # What is left belongs to source tensors (parameters, placeholders) and to wrt
    # tensors that no visited node produced.
    for ref in list(pending):
        total(ref, graph.node(parse_ref(ref)[0]))
    return totals


def _sum(graph: Graph, parts: list[Tensor]) -> Tensor:
    """One ``add_n`` of the contributions a tensor's consumers sent back."""
    value = graph.apply("add_n", parts)
    assert isinstance(value, Tensor)
    return value


def _in_float32(rule: Any, view: NodeView, dy: Any) -> list[Tensor | None]:
    """``rule(view, dy)`` for a node that may have bfloat16 values (``dy``: a
    tensor, or a list with None for a multi-output node).

    A node with bfloat16 values has its rule applied to float32 copies of them
    (its bfloat16 inputs, outputs and incoming gradients) and the gradients of
    its bfloat16 inputs summed back to their shapes and rounded: each rule's
    formula is then computed in float32 and rounded once, as the forward kernels
    do, instead of rounding after every op of the formula.  Gradients between
    nodes stay bfloat16, so fan-out is summed in bfloat16.
    """
    narrow = [_is_bfloat16(t) for t in view.inputs]
    if not (any(narrow) or any(_is_bfloat16(t) for t in view.outputs)):
        return rule(view, dy)
    view.inputs = [_widened(t) for t in view.inputs]
    view.outputs = [_widened(t) for t in view.outputs]
    if isinstance(dy, list):
        dy = [None if d is None else _widened(d) for d in dy]
    else:
        dy = _widened(dy)
    results = list(rule(view, dy))
    for i, (grad, x) in enumerate(zip(results, view.inputs)):
        if grad is not None and narrow[i]:
            if grad.shape != x.shape:  # undo broadcasting in float32 too (see _fit)
                grad = _tensor(x.graph.apply("sum_like", [grad, x]))
            results[i] = _cast(grad, "bfloat16")
    return results


def _is_bfloat16(t: Tensor) -> bool:
    return t.dtype.name == "bfloat16"


def _widened(t: Tensor) -> Tensor:
    return _cast(t, "float32") if _is_bfloat16(t) else t


def _cast(t: Tensor, dtype: str) -> Tensor:
    return _tensor(t.graph.apply("cast", [t], {"dtype": dtype}))


def _tensor(value: Tensor | tuple[Tensor, ...]) -> Tensor:
    assert isinstance(value, Tensor)
    return value


def _fit(
    graph: Graph,
    grad: Tensor,
    ref: str,
    have: TensorType | None = None,
    target: TensorType | None = None,
) -> Tensor:
    """Sum a gradient back to the shape of the input ``ref`` it flows into
    (undoing broadcasting) and check its dtype.  ``have`` and ``target`` are
    the types of ``grad`` and ``ref``, when the caller has looked them up."""
    if target is None:
        target = graph.type_of(ref)
    if have is None:
        have = graph.type_of(grad.node) if grad.index == 0 else graph.type_of(grad.name)
    if have.dtype != target.dtype:
        raise GradientError(
            f"internal error: gradient {grad.name} of '{ref}' has dtype "
            f"{have.dtype}, expected {target.dtype}"
        )
    if have.shape == target.shape:
        return grad
    summed = graph.apply("sum_like", [grad, Tensor(graph, *parse_ref(ref))])
    assert isinstance(summed, Tensor)
    return summed


def _scope_of(node: Node, scope: str, made: dict[str, str]) -> str:
    """The gradient scope of ``node`` (``scope/<its scope>``), noted in ``made``."""
    made[node.scope] = found = f"{scope}/{node.scope}" if node.scope else scope
    return found


def _free_scope(graph: Graph) -> str:
    """``gradients``, or ``gradients_1``, ``gradients_2`` ... when a graph already
    holds gradient nodes (differentiating a gradient graph again)."""
    return fresh_name(SCOPE, {n.split("/", 1)[0] for n in graph.names() if n.startswith(SCOPE)})


def _drop_unused(graph: Graph, first: int, keep: list[str]) -> list[str]:
    """Remove added nodes (those from position ``first`` on) that no gradient
    output needs; return the names of the added nodes that remain."""
    added = graph.nodes[first:]
    # The names of the needed nodes and the refs of their inputs as written:
    # Graph.apply writes refs canonically, so a one-output node is needed when
    # its name is there, another when one of its output refs is.
    needed = {parse_ref(r)[0] for r in keep}
    kept = []
    # Insertion order is topological: a reverse sweep sees every consumer of a
    # node before the node itself.
    for node in reversed(added):
        name = node.name
        if name in needed or (len(node.types) > 1 and not needed.isdisjoint(node.output_refs())):
            kept.append(name)
            needed.update(node.inputs)
    kept.reverse()
    if len(kept) < len(added):
        retained = set(kept)
        graph.retain(_AllBut({n.name for n in added if n.name not in retained}))
    return kept


class _AllBut:
    """Every name except ``dropped``: what :meth:`Graph.retain` keeps."""

    def __init__(self, dropped: set[str]) -> None:
        self._dropped = dropped

    def __contains__(self, name: object) -> bool:
        return name not in self._dropped
