"""Data-parallel training over MPI: K processes train one model as one process
would, each on its share of every batch.

Started by a launcher (``mpiexec -n K graphengine train ...``, or ``graphengine
train --workers K ...``, which runs mpiexec), each process

* loads the same model and data, and checks at start that every process holds
  the same graph, training graph, settings and data (hashes compared);
* takes rank 0's parameters, optimizer state and position (broadcast), so every
  process starts where rank 0 does, a resumed run included;
* walks the single-process batch sequence (the same epoch orders from the same
  seed, the same global batch size) and takes a contiguous slice of each batch:
  process r of K gets examples ``[r*n//K, (r+1)*n//K)`` of a batch of n;
* runs the compiled plan of the *data-parallel gradient graph*
  (:func:`data_parallel_gradients`), whose fused ``allreduce`` nodes sum the
  gradients of every process in one buffer per dtype (Horovod's tensor fusion),
  so every process applies the same update and the parameters stay equal;
* and leaves checkpoints, the metrics log, the progress lines and the output
  file to rank 0.

**Why the result is the single-process one.**  Process r feeds the gradient
pass a seed of ``w_r = n_r / n`` (its share of the batch) instead of 1, so the
allreduce computes ``sum_r w_r * dL_r/dtheta``.  For a loss that is a mean over
the batch's examples (plus any terms that do not depend on the data, as weight
penalties: the shares add up to 1), that is the gradient of the whole batch's
loss, so K processes compute the single-process update up to the order of
floating-point summation.  A loss that *sums* over examples is not scaled this
way: make it a mean.  The loss reported is the same weighted sum, the whole
batch's loss.  Every other metric (accuracy, top-k, macro precision / recall /
F1, MAE, R^2) is computed from sums that the processes add up (correct and
top-k counts, per-class confusion counts, absolute and squared errors,
per-column target sums), never from averages of per-process metrics, so each
equals the single-process value.

**Batch normalization.**  By default each process normalizes with the
statistics of its own slice (as Horovod), and the running statistics are
updated with their average, weighted by the shares (so they stay equal on every
process; the average of per-slice variances lacks the between-slice part).
With ``sync_batch_norm=True`` (``--sync-batch-norm``) every ``batch_norm`` of the
training graph becomes ``sync_batch_norm``, whose statistics are those of the
whole batch, and training matches the single-process run.

**Random ops.**  Dropout on process r draws from the run seed of the step plus
``r << 48``: rank 0 draws as a single process would, the others differently,
so a model with dropout trains equivalently in distribution, not bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ..compiler import prune_to
from ..errors import TrainingError
from ..gradients import gradients
from ..graph import Graph, Tensor, make_ref
from ..model import GradientInfo
from ..mpi import INSTALL_HINT, Communicator, MPIError, launched_by_mpi, launcher_size, world
from ..ops import api as F
from ..ops.collective import SYNCHRONISED
from ..rebuild import Rebuild
from .checkpoint import graph_fingerprint
from .data import BatchFeeder, Dataset
from .metrics import EpochMetrics, merge_sums

if TYPE_CHECKING:  # pragma: no cover
    from .evaluate import Evaluator
    from .trainer import Trainer, _RunState

#: Default largest fused allreduce buffer (Horovod's default fusion threshold).
BUCKET_BYTES = 64 << 20
#: Name scope of the nodes the data-parallel transformation adds.
SCOPE = "data_parallel"


# -- the data-parallel gradient graph --------------------------------------------------


def with_sync_batch_norm(graph: Graph) -> Graph:
    """A copy of ``graph`` in which every node of an op with a synchronised twin
    (:data:`graphengine.ops.collective.SYNCHRONISED`: batch_norm) is a node of the
    twin, with the same name, inputs and attributes (and the twin's extra
    outputs, which nothing reads)."""
    rebuild = Rebuild(graph)
    for node in graph.nodes:
        twin = SYNCHRONISED.get(node.op)
        if twin is None:
            rebuild.add(node)
        else:
            rebuild.emit(
                twin,
                node.inputs,
                node.attrs,
                scope=node.scope,
                derived_from=node.derived_from,
                name=node.name,
            )
    return rebuild.finish()


def data_parallel_gradients(
    graph: Graph,
    loss: str | Tensor,
    wrt: Sequence[str],
    *,
    sync_batch_norm: bool = False,
    bucket_bytes: int = BUCKET_BYTES,
    name: str | None = None,
) -> Graph:
    """The gradient graph one process of a data-parallel job runs.

    It is :func:`graphengine.gradients` of ``loss`` with respect to ``wrt``, with
    the seed gradient fed as the placeholder ``gradients/seed`` (each process
    feeds its share of the batch, n_r / n), followed by the fusion: the weighted
    loss, every gradient and the batch statistics of each batch_norm, flattened
    and joined into one buffer per dtype (at most ``bucket_bytes`` each), summed
    over the processes by one ``allreduce`` node per buffer, and split back.
    ``result.gradient`` names the reduced tensors: ``loss`` is the whole batch's
    loss and ``grads`` its gradients.  ``result.metadata["data_parallel.stats"]``
    lists ``local=reduced`` pairs of batch statistics.

    On one process (seed 1) it computes what ``gradients`` computes.

    >>> import numpy as np, graphengine as ge
    >>> from graphengine.training.distributed import data_parallel_gradients
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 2))
    >>> w = g.parameter("w", np.ones((2, 3), np.float32))
    >>> dp = data_parallel_gradients(g, ge.mean(x @ w), ["w"])
    >>> [n.op for n in dp.nodes if n.op == "allreduce"], dp.gradient.seed
    (['allreduce'], 'gradients/seed')
    """
    loss_ref = graph.tensor(loss).name
    forward = with_sync_batch_norm(graph) if sync_batch_norm else graph
    out = gradients(
        forward,
        loss_ref,
        list(wrt),
        grad_ys="placeholder",
        name=name or f"{graph.name}_data_parallel",
    )
    info = out.gradient
    assert info is not None and info.seed
    before = set(out.names())
    seed = out.tensor(info.seed)
    with out.name_scope(SCOPE):
        weighted = F.multiply(out.tensor(loss_ref), seed, name="weighted_loss")
        reduced: dict[str, str] = {}
        stats = _batch_statistics(out, loss_ref, seed)
        # Readable names for the reduced tensors: data_parallel/loss,
        # data_parallel/gradients/<wrt>, data_parallel/<node>_<output>.
        labels = {weighted.name: "loss"}
        labels.update(
            {out.tensor(info.grads[w]).name: f"gradients/{w.replace(':', '_')}" for w in wrt}
        )
        labels.update({t.name: ref.replace(":", "_") for ref, t in stats.items()})
        tensors = [weighted] + [out.tensor(info.grads[w]) for w in wrt] + list(stats.values())
        for number, bucket in enumerate(_buckets(tensors, bucket_bytes)):
            reduced.update(_fused_allreduce(out, bucket, number, labels))
    names = {ref: reduced[t.name] for ref, t in stats.items()}
    out.gradient = GradientInfo(
        reduced[weighted.name],
        {w: reduced[out.tensor(info.grads[w]).name] for w in wrt},
        info.nodes + tuple(n for n in out.names() if n not in before),
        seed=info.seed,
        zero=info.zero,
    )
    out.set_outputs([out.gradient.loss, *out.gradient.grads.values(), *names.values()])
    out.metadata["data_parallel.stats"] = ",".join(f"{k}={v}" for k, v in names.items())
    return out


def _batch_statistics(graph: Graph, loss: str, seed: Tensor) -> dict[str, Tensor]:
    """The batch values of the declared state updates (batch_norm's batch mean and
    variance) of the nodes the loss depends on, weighted by the seed, to be summed
    into their average over the processes; synchronised ops are left out, their
    statistics are already those of the whole batch."""
    out = {}
    synchronised = set(SYNCHRONISED.values())
    for node in prune_to(graph, [loss]):
        if node.op in synchronised:
            continue
        for update in node.opdef.state_updates:
            stat = graph.tensor(make_ref(node.name, node.opdef.outputs.index(update.batch)))
            out[stat.name] = F.multiply(stat, seed)
    return out


def _buckets(tensors: list[Tensor], limit: int) -> list[list[Tensor]]:
    """Tensors grouped by dtype, in order, each group cut to at most ``limit`` bytes
    (a tensor larger than ``limit`` gets a bucket of its own)."""
    by_dtype: dict[np.dtype, list[list[Tensor]]] = {}
    sizes: dict[np.dtype, int] = {}
    for tensor in tensors:
        nbytes = math.prod(d for d in tensor.shape if isinstance(d, int)) * tensor.dtype.itemsize
        groups = by_dtype.setdefault(tensor.dtype, [[]])
        if groups[-1] and sizes[tensor.dtype] + nbytes > limit:
            groups.append([])
            sizes[tensor.dtype] = 0
        groups[-1].append(tensor)
        sizes[tensor.dtype] = sizes.get(tensor.dtype, 0) + nbytes
    return [group for groups in by_dtype.values() for group in groups]


def _fused_allreduce(
    graph: Graph, bucket: list[Tensor], number: int, labels: dict[str, str]
) -> dict[str, str]:
    """One allreduce of the bucket's tensors flattened into one buffer; returns
    tensor -> its reduced copy, reshaped back and named by ``labels``."""
    for tensor in bucket:
        if not all(isinstance(d, int) for d in tensor.shape):
            raise TrainingError(
                f"data-parallel training: tensor '{tensor.name}' has shape "
                f"{tensor.shape}; only tensors of static shape can be fused"
            )
    shapes = [tuple(d for d in t.shape if isinstance(d, int)) for t in bucket]
    sizes = [math.prod(shape) for shape in shapes]
    flat = [F.reshape(t, (-1,)) for t in bucket]
    buffer = flat[0] if len(flat) == 1 else F.concatenate(flat, name=f"bucket_{number}")
    summed = F.allreduce(buffer, name=f"allreduce_{number}")
    pieces = [summed] if len(bucket) == 1 else F.split(summed, list(np.cumsum(sizes)[:-1]))
    return {
        t.name: F.reshape(p, shape, name=labels[t.name]).name
        for t, p, shape in zip(bucket, pieces, shapes)
    }


# -- the job ---------------------------------------------------------------------------


class DataParallel:
    """How a :class:`~graphengine.training.Trainer` trains as one process of a
    data-parallel job: pass ``parallel=DataParallel()`` to it in every process.

    Args:
        comm: the job's communicator (default :func:`graphengine.mpi.world`).
        sync_batch_norm: normalize with the statistics of the whole batch.
        bucket_bytes: the largest fused allreduce buffer.
    """

    def __init__(
        self,
        comm: Communicator | None = None,
        *,
        sync_batch_norm: bool = False,
        bucket_bytes: int = BUCKET_BYTES,
    ) -> None:
        comm = comm if comm is not None else world()
        if comm is None:
            raise MPIError(
                "data-parallel training needs an MPI job: start the command with "
                "mpiexec -n K, or use graphengine train --workers K"
            )
        self.comm = comm
        self.rank, self.size = comm.rank, comm.size
        self.sync_batch_norm = sync_batch_norm
        self.bucket_bytes = bucket_bytes
        self.seed_name = ""
        self._stats: dict[str, str] = {}
        self._feeder: BatchFeeder | None = None
        self._stand_in = False
        self._slice = 1
        self._seed_dtype = np.dtype("float32")

    @property
    def is_root(self) -> bool:
        """Whether this process writes the job's files (rank 0)."""
        return self.rank == 0

    def outputs(
        self, checkpoint_dir: Any, log: Any, progress: bool | None, stream: IO[str] | None
    ) -> tuple[Any, Any, bool | None, IO[str] | None]:
        """The trainer's output options for this process: unchanged on rank 0; no
        checkpoints, log or messages elsewhere."""
        if self.is_root:
            return checkpoint_dir, log, progress, stream
        return None, None, False, open(os.devnull, "w")  # noqa: SIM115 - lives with the run

    def gradient_graph(self, graph: Graph, loss: str, wrt: Sequence[str]) -> Graph:
        """The training graph: :func:`data_parallel_gradients`."""
        out = data_parallel_gradients(
            graph, loss, wrt, sync_batch_norm=self.sync_batch_norm, bucket_bytes=self.bucket_bytes
        )
        assert out.gradient is not None
        self.seed_name = out.gradient.seed
        self._seed_dtype = out.tensor(self.seed_name).dtype
        pairs = out.metadata.get("data_parallel.stats", "")
        self._stats = dict(p.split("=") for p in pairs.split(",") if p)
        return out

    def fetch(self, ref: str) -> str:
        """What to fetch for batch statistic ``ref``: its average over the processes."""
        return self._stats.get(ref, ref)

    def run_seed(self, seed: int) -> int:
        """The random seed of this process's run of a step (rank 0: the step's own)."""
        return seed + (self.rank << 48)

    def feeds(self, feeder: BatchFeeder, indices: np.ndarray) -> dict[str, np.ndarray]:
        """This process's slice of the batch ``indices``, with its share as the seed.

        A process whose slice is empty (a last batch smaller than the job) runs one
        stand-in example with share 0, so it still takes part in the allreduce and
        adds nothing.
        """
        n = len(indices)
        start, stop = self.rank * n // self.size, (self.rank + 1) * n // self.size
        if self._feeder is None or self._feeder.data is not feeder.data:
            self._feeder = BatchFeeder(feeder.data, self._slice)
        self._stand_in = stop == start
        local = indices[start:stop] if stop > start else indices[:1]
        out = self._feeder.feeds(local)
        out[self.seed_name] = np.asarray((stop - start) / n, self._seed_dtype)
        return out

    def total(self, sums: dict[str, float]) -> dict[str, float]:
        """This process's metric sums of its slice (correct predictions, confusion
        counts, errors: :meth:`EpochMetrics.batch_sums`) added up over the job, so
        every metric is that of the whole batch.  A stand-in example adds nothing."""
        return merge_sums(self.comm.gather({} if self._stand_in else sums))

    def agree_to_stop(self, stop: bool) -> bool:
        """True when any process asked to stop (so all stop at the same step)."""
        return bool(self.comm.sum(int(stop)))

    def evaluate(self, evaluator: Evaluator, data: Dataset) -> dict[str, float]:
        """The evaluator's results over ``data``, each process evaluating a slice:
        the slices' sums are added up, then every metric is computed from them."""
        start, stop = self.rank * data.size // self.size, (self.rank + 1) * data.size // self.size
        sums: dict[str, float] = {}
        if stop > start:
            part = Dataset(
                {k: v[start:stop] for k, v in data.arrays.items()}, stop - start, data.source
            )
            sums = evaluator.totals(part).sums()
        merged = merge_sums(self.comm.gather(sums))
        totals = EpochMetrics(evaluator.spec.metrics, evaluator.comparison, merged)
        return {**totals.result(), "examples": int(merged["examples"])}

    def synchronize(self, trainer: Trainer, state: _RunState) -> _RunState:
        """Check that every process holds the same job, then give every process rank
        0's parameters, optimizer state and run state."""
        self._slice = -(-trainer.spec.batch_size // self.size)  # the largest slice
        mine = {
            "graph": trainer.graph_hash,
            "training graph": graph_fingerprint(trainer.grad_graph),
            "data": trainer.train_data.fingerprint(),
            "parameters": list(trainer.param_names),
            "settings": _settings(trainer),
        }
        everyone = self.comm.gather(mine)
        for key in mine:
            differ = [r for r, theirs in enumerate(everyone) if theirs[key] != everyone[0][key]]
            if differ:
                raise MPIError(
                    f"the processes of this job do not agree on the {key}: "
                    f"process(es) {', '.join(map(str, differ))} differ from "
                    f"process 0. Every process must load the same model file, "
                    f"data and options"
                )
        values = trainer.graph.values
        for name in sorted(values):
            self.comm.broadcast_array(values[name])
        scalars, slots = trainer.optimizer.state()
        for slot in sorted(slots):
            for name in sorted(slots[slot]):
                self.comm.broadcast_array(slots[slot][name])
        trainer.optimizer.load_state(self.comm.broadcast(scalars), slots)
        state = self.comm.broadcast(state)
        # The monitors' state (early stopping, a plateau schedule) that rank 0 may
        # have resumed; callbacks that only rank 0 has (BestCheckpoint) are skipped.
        trainer._load_monitor_state(self.comm.broadcast(trainer._monitor_state()))
        if self.sync_batch_norm and trainer._batch_norms:
            self._check_last_batch(trainer, state)
        return state

    def _check_last_batch(self, trainer: Trainer, state: _RunState) -> None:
        """sync_batch_norm cannot use stand-in examples: every process needs one."""
        size, b = trainer.train_data.size, trainer.spec.batch_size
        last = 0 if trainer.drop_last else size % b
        if 0 < last < self.size or b < self.size:
            raise TrainingError(
                f"--sync-batch-norm over {self.size} processes needs at least one example per "
                f"process in every batch, but batches of {b} over {size} examples leave a "
                f"last batch of {last or b}; use --drop-last, or another batch size"
            )

    def finish(self, trainer: Trainer) -> None:
        """Check that training left every process with the same parameters."""
        digest = graph_values_digest(trainer.graph.values)
        everyone = self.comm.gather(digest)
        differ = [r for r, d in enumerate(everyone) if d != everyone[0]]
        if differ:
            raise MPIError(
                f"after training, the parameters of process(es) "
                f"{', '.join(map(str, differ))} differ from process 0's: the "
                "allreduce did not give every process the same sums"
            )

    @contextlib.contextmanager
    def stop_job_on_error(self, command: str, debug: bool = False) -> Iterator[None]:
        """Turn an error in this process into a stop of the whole job (MPI_Abort), with
        the error printed once: an error every process meets is printed by rank 0,
        whose abort ends the others before they print it; an error of one process
        alone, by that process a moment later."""
        try:
            yield
        except BaseException as exc:
            if not self.is_root:
                time.sleep(3.0)  # rank 0's abort, when it fails too, ends us first
            where = f"process {self.rank} of {self.size}"
            if debug:
                traceback.print_exc()
            message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            print(
                f"graphengine {command} ({where}): {type(exc).__name__}: {message}\n"
                f"graphengine {command}: stopping every process of the job",
                file=sys.stderr,
                flush=True,
            )
            # MPI_Abort ends the job at once, and the launcher may drop output still
            # in its pipes (seen with MPICH's: an empty stderr and exit 1); give it
            # a moment to forward the message first.
            time.sleep(0.5)
            self.comm.abort(1)
            os._exit(1)  # MPI_Abort may return before the launcher ends this process


def _settings(trainer: Trainer) -> dict[str, Any]:
    from .settings import flatten

    return flatten(trainer.spec)


def graph_values_digest(values: dict[str, np.ndarray]) -> str:
    """A hash of parameter values (names, dtypes, shapes, bytes)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(values):
        array = np.ascontiguousarray(values[name])
        h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def from_launcher(
    *, sync_batch_norm: bool = False, workers: int | None = None
) -> DataParallel | None:
    """The data-parallel setup of a process started by an MPI launcher with more
    than one process, else None.  MPIError when ``workers`` is given and differs
    from the job's size, or when mpi4py is missing."""
    if not launched_by_mpi():
        return None
    if launcher_size() <= 1 and (workers or 1) <= 1:
        return None
    comm = world()
    if comm is None:  # pragma: no cover - world() raises when mpi4py is missing
        raise MPIError(INSTALL_HINT)
    if workers and workers != comm.size:
        raise MPIError(
            f"--workers {workers}, but mpiexec started {comm.size} processes; give one of the two"
        )
    if comm.size == 1:
        return None
    return DataParallel(comm, sync_batch_norm=sync_batch_norm)


# -- the launcher ----------------------------------------------------------------------


def find_mpiexec() -> str:
    """The mpiexec beside this Python (where the mpich wheel puts it), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.exists(beside):
        return beside
    found = shutil.which("mpiexec")
    if found is None:
        raise MPIError(
            "--workers needs mpiexec, which is neither beside "
            f"{sys.executable} nor on PATH; " + INSTALL_HINT
        )
    return found


def launch(workers: int, argv: Sequence[str], *, stream: IO[str] | None = None) -> int:
    """Run ``graphengine ARGV`` as a job of ``workers`` processes under mpiexec
    and return its exit status.  Each process gets ``cores // workers`` BLAS and
    OpenMP threads (at least 1) unless the environment already sets them."""
    stream = stream if stream is not None else sys.stderr
    command = [find_mpiexec(), "-n", str(workers), sys.executable, "-m", "graphengine", *argv]
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, threads)
    status = subprocess.call(command, env=env)
    if status != 0:
        print(
            f"graphengine: the job of {workers} processes stopped with exit status "
            f"{status}; every process was stopped (the checkpoints written before stay "
            "intact: resume with --resume DIR)",
            file=stream,
            flush=True,
        )
    return status
