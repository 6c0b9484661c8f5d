"""Checking analytic gradients against central finite differences in float64.

:func:`gradcheck` converts the graph to float64 (:func:`to_float64`), builds its
gradient graph, and compares each analytic gradient with
``(f(x + eps) - f(x - eps)) / (2 eps)``: element by element for small tensors,
along random directions for large ones.  The report gives, per tensor, the
worst error with the index and both values, so a failure can be acted on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .compiler import NodeRecord, build_graph
from .errors import GradientError
from .executor import run
from .gradients import gradients
from .graph import Graph, Tensor, require_graph


def to_float64(graph: Graph) -> Graph:
    """The same graph with every float32/float16 placeholder, parameter, constant
    and cast made float64 (so finite differences are accurate)."""
    wide = np.dtype("float64")

    def widen(dtype: np.dtype) -> np.dtype:
        return wide if dtype.kind == "f" else dtype

    records, values = [], {}
    for node in graph.nodes:
        attrs = dict(node.attrs)
        if "dtype" in attrs and isinstance(attrs["dtype"], np.dtype):
            attrs["dtype"] = widen(attrs["dtype"])
        if node.op == "constant":
            attrs["value"] = attrs["value"].astype(widen(attrs["value"].dtype))
        if node.op == "parameter":
            values[node.name] = graph.values[node.name].astype(widen(graph.values[node.name].dtype))
        records.append(
            NodeRecord(node.name, node.op, list(node.inputs), attrs, node.scope, node.derived_from)
        )
    out = build_graph(graph.name, records, values)
    out.set_outputs(graph.marked_outputs)
    return out


@dataclass
class TensorCheck:
    """The comparison for one wrt tensor."""

    name: str
    max_abs_error: float
    max_rel_error: float
    index: tuple | str  # element index, or "direction k" for projections
    analytic: float
    numeric: float
    ok: bool


@dataclass
class GradCheckResult:
    """Per-tensor results; ``ok`` when every tensor is within tolerance."""

    checks: list[TensorCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def __str__(self) -> str:
        lines = []
        for c in self.checks:
            status = "ok  " if c.ok else "FAIL"
            lines.append(
                f"{status} {c.name}: max rel error {c.max_rel_error:.3g}, max abs error "
                f"{c.max_abs_error:.3g} at {c.index} (analytic {c.analytic:.8g}, "
                f"numeric {c.numeric:.8g})"
            )
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise GradientError("gradient check failed:\n" + str(self))


def gradcheck(
    graph: Graph,
    loss: str | Tensor,
    wrt: Sequence[str | Tensor] | None = None,
    feeds: Mapping[str, Any] | None = None,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    max_elements: int = 64,
    directions: int = 8,
    seed: int = 0,
    training: bool = False,
) -> GradCheckResult:
    """Compare analytic gradients of ``loss`` with central finite differences.

    The graph and feeds are widened to float64 first.  Tensors of at most
    ``max_elements`` elements are checked element by element; larger ones along
    ``directions`` random unit directions.  An element passes when
    ``|analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|)``.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (3,))
    >>> loss = ge.sum(ge.tanh(x) * x)
    >>> ge.gradcheck(g, loss, ["x"], {"x": np.array([0.1, -0.5, 2.0])}).ok
    True
    """
    require_graph(graph, "ge.gradcheck")
    g64 = to_float64(graph)
    loss_ref = graph.tensor(loss).name
    wrt_refs = (
        [n.name for n in graph.parameters(trainable=True)]
        if wrt is None
        else [graph.tensor(w).name for w in wrt]
    )
    feeds64 = {k: _widen(np.asarray(v)) for k, v in (feeds or {}).items()}
    tg = gradients(g64, loss_ref, wrt_refs)
    analytic = run(
        tg, [tg.gradient.grads[r] for r in wrt_refs], feeds64, training=training, seed=seed
    )
    rng = np.random.default_rng(seed)
    result = GradCheckResult()

    def f(values: dict[str, np.ndarray], fed: dict[str, np.ndarray]) -> float:
        saved = dict(g64.values)
        g64.values.update(values)
        try:
            return float(run(g64, loss_ref, fed, training=training, seed=seed))
        finally:
            g64.values.clear()
            g64.values.update(saved)

    for ref in wrt_refs:
        grad = analytic[tg.gradient.grads[ref]]
        base, is_param = _base_value(g64, ref, feeds64)

        def perturbed(delta: np.ndarray, ref=ref, base=base, is_param=is_param) -> float:
            value = base + delta
            if is_param:
                return f({ref: value}, feeds64)
            return f({}, {**feeds64, ref: value})

        result.checks.append(
            _compare(ref, grad, base, perturbed, eps, rtol, atol, max_elements, directions, rng)
        )
    return result


def _widen(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float64) if array.dtype.kind == "f" else array


def _base_value(graph: Graph, ref: str, feeds: Mapping[str, np.ndarray]):
    node = graph.node(ref)
    if node.op == "parameter":
        return graph.values[ref], True
    if node.op == "placeholder":
        if ref not in feeds:
            raise GradientError(f"gradcheck: feed a value for wrt placeholder '{ref}'")
        return feeds[ref], False
    raise GradientError(
        f"gradcheck: wrt '{ref}' must be a parameter or a placeholder (it is a {node.op} node)"
    )


def _compare(name, grad, base, perturbed, eps, rtol, atol, max_elements, directions, rng):
    worst = None
    if base.size <= max_elements:
        probes = [
            (tuple(int(j) for j in np.unravel_index(i, base.shape)), _unit(base.shape, i))
            for i in range(base.size)
        ]
        pairs = [(idx, float(grad[idx]), direction) for idx, direction in probes]
    else:
        pairs = []
        for k in range(directions):
            direction = rng.standard_normal(base.shape)
            direction /= np.linalg.norm(direction)
            pairs.append((f"direction {k}", float(np.sum(grad * direction)), direction))
    max_abs = max_rel = 0.0
    ok = True
    for idx, a, direction in pairs:
        n = (perturbed(eps * direction) - perturbed(-eps * direction)) / (2 * eps)
        err = abs(a - n)
        rel = err / max(abs(a), abs(n), 1e-300)
        passed = err <= atol + rtol * max(abs(a), abs(n))
        ok &= passed
        if worst is None or err > max_abs or (not passed and worst[3]):
            worst = (idx, a, n, passed)
        max_abs, max_rel = max(max_abs, err), max(max_rel, rel if err > atol else 0.0)
    idx, a, n, _ = worst if worst else ((), 0.0, 0.0, True)
    return TensorCheck(name, max_abs, max_rel, idx, a, n, ok)


def _unit(shape, flat_index: int) -> np.ndarray:
    e = np.zeros(shape)
    e.flat[flat_index] = 1.0
    return e
