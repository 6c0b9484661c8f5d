"""Collective ops: ``allreduce`` across the processes of an MPI job, and
``sync_batch_norm``, batch normalization with statistics over every process.

Their kernels talk to the communicator of :func:`graphengine.mpi.world`: the
job's MPI_COMM_WORLD when an MPI launcher started the process, else none, and
then they compute what one process would (``allreduce`` is the identity).  So a
data-parallel gradient graph runs, saves, draws and differentiates like any
other, and gives the single-process result when run alone.

Every process of a job must run the same collective nodes in the same order;
data-parallel training makes sure of it by checking that every process holds
the same graph (the plan's order is a function of the graph).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..dtypes import NUMERIC_TYPES
from ..mpi import world
from ..shapes import TensorType
from .norm import BatchNorm, _channel_shape, _norm_grad, _scale_shift, _stat_axes, _sum_terms
from .registry import Array, Attr, F, Input, OpDef, get_op, register

if TYPE_CHECKING:
    from ..executor import RunContext
    from ..gradients import NodeView
    from ..graph import Tensor


def allreduce_array(x: Array) -> Array:
    """The sum of ``x`` over the processes of the job (``x`` itself on one process)."""
    comm = world()
    if comm is None or comm.size == 1:
        return x
    return comm.allreduce(x)


@register
class Allreduce(OpDef):
    """The elementwise sum (or mean) of ``x`` over every process of the MPI job,
    as MPI_Allreduce; every process gets the same result.  On one process it is
    the identity.

        y = sum over processes p of x_p        (reduction="mean": divided by their count)

    vjp: every process's y depends on every x_p with derivative 1 (or 1/K), so
    dx_p = sum over processes of dy (or the mean): the same allreduce of dy.  The
    rule is itself an allreduce, so second derivatives are allreduces too.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (3,))
    >>> ge.run(g, ge.allreduce(x), {"x": np.arange(3, dtype=np.float32)})  # one process
    array([0., 1., 2.], dtype=float32)
    """

    name = "allreduce"
    inputs = (Input("x", NUMERIC_TYPES),)
    attrs = (Attr("reduction", "str", "sum", choices=("sum", "mean")),)
    view_map = {0: 0}  # on one process, x itself

    def infer(self, x: TensorType, *, reduction: str) -> TensorType:
        if reduction == "mean" and x.dtype.kind != "f":
            raise ValueError(f"reduction='mean' needs a float x, got {x.dtype.name}")
        return x

    def kernel(self, x: Array, *, reduction: str) -> Array:
        x = np.asarray(x)
        comm = world()
        if comm is None or comm.size == 1:
            return x
        out = comm.allreduce(x)
        if reduction == "mean":
            out /= out.dtype.type(comm.size)
        return out

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.allreduce(dy, reduction=node.attrs["reduction"])]


@register
class SyncBatchNorm(OpDef):
    """batch_norm whose batch statistics are those of the global batch: the mean
    and the biased variance over every process's examples (two allreduces of one
    small per-channel buffer each, the second of the centred squares).  An
    inference run normalizes with the running statistics, without MPI, exactly
    as batch_norm.  Outputs y, mean and var as batch_norm's, and ``count``, the
    number of elements per channel that made the statistics (over every process
    in a training run; this process's in an inference run).  The function
    returns y, and every output with ``return_stats=True``.

    On one process it computes what batch_norm computes.  Data-parallel training
    puts it in place of batch_norm when asked to synchronise the statistics
    (``--sync-batch-norm``), so K processes normalize as one would.

    vjp: as batch_norm's, with the per-channel sums of dy and dy * xhat that reach
    x through the statistics summed over every process (one allreduce) and divided
    by the global count.  dgamma and dbeta are this process's share (the
    data-parallel gradient allreduce adds the shares).
    """

    name = "sync_batch_norm"
    inputs = BatchNorm.inputs
    outputs = ("y", "mean", "var", "count")
    extra_outputs_flag = "return_stats"
    attrs = BatchNorm.attrs
    uses_context = True
    state_updates = BatchNorm.state_updates

    def infer(
        self,
        x: TensorType,
        gamma: TensorType,
        beta: TensorType,
        running_mean: TensorType,
        running_var: TensorType,
        *,
        epsilon: float,
        momentum: float,
    ) -> Sequence[TensorType]:
        y, mean, var = get_op("batch_norm").infer(
            x, gamma, beta, running_mean, running_var, epsilon=epsilon, momentum=momentum
        )
        return y, mean, var, TensorType(x.dtype, ())

    def kernel(
        self,
        x: Array,
        gamma: Array,
        beta: Array,
        running_mean: Array,
        running_var: Array,
        *,
        epsilon: float,
        momentum: float,
        ctx: RunContext,
    ) -> Sequence[Array]:
        axes = _stat_axes(x.ndim)
        local_count = x.size // max(x.shape[1], 1)
        if not ctx.training:
            y, mean, var = get_op("batch_norm").kernel(
                x,
                gamma,
                beta,
                running_mean,
                running_var,
                epsilon=epsilon,
                momentum=momentum,
                ctx=ctx,
            )
            return y, mean, var, np.asarray(local_count, x.dtype)
        sums = np.empty(x.shape[1] + 1, x.dtype)
        np.sum(x, axis=axes, dtype=x.dtype, out=sums[:-1])
        sums[-1] = local_count
        sums = allreduce_array(sums)
        count = sums[-1]
        mean = sums[:-1] / count
        centred = x - mean.reshape(_channel_shape(x.ndim))
        var = allreduce_array(np.sum(np.square(centred), axis=axes, dtype=x.dtype)) / count
        y = _scale_shift(centred, var, gamma, beta, epsilon)
        return y, mean, var, np.asarray(count, x.dtype)

    def vjp(self, node: NodeView, dys: list[Tensor | None]) -> list[Tensor | None]:
        dy, dmean, dvar, _ = dys  # count does not depend on the values of x
        x, gamma = node.inputs[0], node.inputs[1]
        _, mean, var, count = node.outputs
        g = _norm_grad(node, dy, mean, var)

        def per_element(v: Tensor) -> Tensor:
            """A per-channel value broadcast over x."""
            return F.broadcast_like(v, x, axes=g.axes)

        dx = None
        if node.wants(0):
            # 1/M (M: the global count) in a training run, 0 in an inference run,
            # where the statistics do not depend on x.
            inverse = F.training_flag(x) / count
            terms = []
            if dy is not None and g.dy_sums is not None:
                xhat, dbeta, dgamma = g.dy_sums
                total_beta, total_gamma = F.split(F.allreduce(F.concatenate([dbeta, dgamma])), 2)
                through_stats = per_element(total_beta) + xhat * per_element(total_gamma)
                terms.append(per_element(gamma * g.rstd) * (dy - through_stats * inverse))
            if dmean is not None:
                terms.append(per_element(F.allreduce(dmean)) * inverse)
            if dvar is not None:
                terms.append(g.centred * per_element(F.allreduce(dvar)) * (inverse * 2.0))
            dx = _sum_terms(terms)
        return [dx, *g.param_grads(node), None, None]


#: The op that computes the same thing with statistics over every process, for
#: each op whose kernel computes batch statistics (data-parallel training swaps
#: them with --sync-batch-norm).
SYNCHRONISED = {"batch_norm": "sync_batch_norm"}

__all__ = ["SYNCHRONISED", "Allreduce", "SyncBatchNorm", "allreduce_array"]
