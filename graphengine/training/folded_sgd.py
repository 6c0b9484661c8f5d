"""Plain SGD folded into the training plan: a dense layer's weight update is the
product that would compute its gradient, ``w -= lr * op(a) @ op(b)``, as one
BLAS gemm into the weight (``alpha = -lr``, ``beta = 1``; see
:mod:`graphengine.blas`).

The unfolded step writes the gradient into a buffer, multiplies it by the
learning rate into scratch and subtracts that from the weight: three passes over
the weight's size after the product, which the folded step does not make (for
784x512 float32 weights at batch 128, 1.17 against 1.09 ms on one thread, 1.05
against 0.57 ms with two).  The result is the same up to float rounding: BLAS
adds ``-lr * product`` into the weight as it goes instead of rounding ``lr *
gradient`` first.

What is folded (:meth:`FoldedSGD.updates`): a trained parameter whose gradient,
in the fused training graph, is a ``matmul_transposed`` node that nothing else
reads and nothing else fetches, of float32 or float64 and at least
:data:`FOLD_MIN_ELEMENTS` elements (below, the ctypes call costs more than the
passes it saves).  The trainer folds only plain SGD (no momentum, weight decay,
clipping or data parallelism), and only where numpy's OpenBLAS is found; every
other parameter keeps its gradient fetch and the optimizer's update.

Each update runs at the end of the plan's run (:class:`ParameterUpdate`), after
every read of the weight, and does nothing when the run's loss is not finite,
so a step that the trainer refuses leaves every parameter as it was.

The parameters left to the optimizer are packed (:meth:`FoldedSGD.pack`): their
values become views of one array, laid back to back, and the plan lays their
gradients' buffers out the same way, so that SGD updates them all in two numpy
calls instead of two per parameter (for the six parameters of a 64-128-64-10
MLP, 4-5 against 12-16 us).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .. import blas
from ..executor import ParameterUpdate
from ..graph import Graph, Node, parse_ref
from ..memory_plan import back_to_back

#: The fewest elements of a weight whose update is folded: the ctypes call
#: outweighs the passes it saves below.  Product and update against the folded
#: product (CPU time, one thread): a 128x128 weight at batch 32, 14.6 against
#: 16.5 us, and at batch 128, 50.2 against 54.3 us; 256x128, 32.1 against 28.8
#: us at batch 32 and 95.0 against 91.5 us at batch 128.
FOLD_MIN_ELEMENTS = 1 << 15


class FoldedSGD:
    """Plain SGD updates folded into a training plan's products.

    Args:
        grads: trained parameter -> its gradient's reference in the gradient graph.
        loss: the loss's reference; an update applies only when it is finite.

    Set :attr:`lr` before each run of the plan.  :attr:`params` lists the folded
    parameters once :meth:`updates` has chosen them.

    >>> import numpy as np, graphengine as ge
    >>> from graphengine.training.trainer import compile_training_plan
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 256))
    >>> w = g.parameter("w", np.ones((256, 128), np.float32))
    >>> loss = ge.mean(ge.matmul(x, w))
    >>> tg = ge.gradients(g, loss, ["w"])
    >>> tg.values = g.values
    >>> folded = FoldedSGD(tg.gradient.grads, tg.gradient.loss)
    >>> plan = compile_training_plan(tg, [tg.gradient.loss], ["x"], folded=folded)
    >>> folded.lr = 0.5
    >>> _ = plan.run({"x": np.ones((4, 256), np.float32)})
    >>> float(g.values["w"][0, 0]) if folded.params else 1.0 - 0.5 / 128
    0.99609375
    """

    def __init__(self, grads: Mapping[str, str], loss: str) -> None:
        self.grads = dict(grads)
        self.loss = loss
        #: The learning rate of the next run.
        self.lr = 0.0
        self.params: tuple[str, ...] = ()

    def updates(self, graph: Graph, fetches: Sequence[str]) -> list[ParameterUpdate]:
        """The updates for the parameters that fold (see the module docstring) in
        ``graph``, the fused training graph computing ``fetches``; records them in
        :attr:`params`.  None when numpy's OpenBLAS is not available."""
        self.params = ()
        if not blas.available():
            return []
        readers: dict[str, int] = {}
        for node in graph.nodes:
            for ref in node.inputs:
                readers[parse_ref(ref)[0]] = readers.get(parse_ref(ref)[0], 0) + 1
        found = []
        for param, grad in self.grads.items():
            node = _product(graph, grad, readers)
            value = graph.values.get(param)
            if (
                node is None
                or list(fetches).count(grad) != 1
                or param in fetches
                or value is None
                or value.dtype.name not in ("float32", "float64")
                or value.size < FOLD_MIN_ELEMENTS
                or tuple(node.types[0].shape) != value.shape
            ):
                continue
            kernel = self._kernel(node.attrs["transpose_a"], node.attrs["transpose_b"])
            found.append(ParameterUpdate(param, (*node.inputs, self.loss), kernel, node.name))
        self.params = tuple(u.parameter for u in found)
        return found

    def pack(self, values: dict[str, np.ndarray]) -> list[str]:
        """Replace the values of the parameters not folded with views of one new
        array (their values copied), in the order of :attr:`grads`, and return
        their names; none when they do not share a float dtype (or are fewer
        than two).  Parameters must be packed before a plan reads them, since
        arrays taken from ``values`` earlier no longer change."""
        names = [p for p in self.grads if p not in self.params and p in values]
        dtypes = {values[p].dtype for p in names}
        if len(names) < 2 or len(dtypes) != 1 or dtypes.pop().kind != "f":
            return []
        views = back_to_back([values[p].shape for p in names], values[names[0]].dtype)
        for p, view in zip(names, views):
            view[...] = values[p]
            values[p] = view
        return names

    def _kernel(self, transpose_a: bool, transpose_b: bool) -> Callable[..., None]:
        def sgd_product(w: np.ndarray, a: np.ndarray, b: np.ndarray, loss: np.ndarray) -> None:
            if not math.isfinite(loss):
                return  # the trainer refuses this step: leave w as it was
            lr = self.lr
            if not blas.add_product(w, a, b, -lr, transpose_a, transpose_b):
                # Operands BLAS cannot read in place: the unfolded step's arithmetic.
                grad = np.matmul(a.T if transpose_a else a, b.T if transpose_b else b)
                np.multiply(grad, lr, out=grad)
                w -= grad

        return sgd_product


def _product(graph: Graph, grad: str, readers: Mapping[str, int]) -> Node | None:
    """The matmul_transposed node that computes ``grad`` (through the identity
    nodes the gradient pass names gradients with), when no other node reads it
    or the identities; else None."""
    name, index = parse_ref(grad)
    node = graph.get(name)
    expected = 0  # the gradient's own node is read by nothing
    while node is not None and node.opdef.alias and readers.get(node.name, 0) == expected:
        name, index = parse_ref(node.inputs[0])
        node = graph.get(name)
        expected = 1  # read by the identity just left
    if (
        node is None
        or index != 0
        or node.op != "matmul_transposed"
        or readers.get(node.name, 0) != expected
    ):
        return None
    return node
