"""MPI for graphengine: the communicator that collective ops and data-parallel
training use, found lazily.

mpi4py is an optional dependency (``pip install "graphengine[mpi]"``, which also
installs the ``mpich`` wheel, so no system MPI is needed).  Nothing imports it
until a process asks for the communicator, and :func:`world` asks MPI only when
the process was started by an MPI launcher (``mpiexec``): it tells from the
environment variables every launcher sets (``PMI_SIZE`` for MPICH's hydra,
``OMPI_COMM_WORLD_SIZE`` for Open MPI, ``PMIX_RANK`` for PMIx ones).  A plain
``python`` or ``graphengine`` process runs as one process, without MPI.

:class:`Communicator` wraps an mpi4py communicator with the few collectives
graphengine needs, and times them, so a benchmark can say how much of a step
the allreduce took.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import GraphEngineError

#: Environment variables that MPI launchers set in the processes they start.
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")

INSTALL_HINT = 'install the MPI extra: pip install "graphengine[mpi]" (mpi4py and mpich)'


class MPIError(GraphEngineError):
    """MPI is needed but missing, or the processes of a job disagree."""


def launched_by_mpi() -> bool:
    """Whether an MPI launcher (mpiexec, mpirun, srun) started this process."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def launcher_size() -> int:
    """The number of processes the launcher says the job has (1 when none started it)."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def import_mpi() -> Any:
    """mpi4py's ``MPI`` module; MPIError with the install command when it is missing."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise MPIError(
            f"this needs MPI through mpi4py, which cannot be imported ({exc}); " + INSTALL_HINT
        ) from None
    return MPI


class Communicator:
    """The collectives of a data-parallel job over an mpi4py communicator.

    ``rank`` and ``size`` are the process's number and the job's process count.
    ``seconds``, ``calls`` and ``bytes`` add up the array allreduces done (for
    benchmarks; :meth:`reset_stats` zeroes them).
    """

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        self._mpi = import_mpi()
        self.reset_stats()

    def reset_stats(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.bytes = 0

    def allreduce(self, array: np.ndarray) -> np.ndarray:
        """The elementwise sum of ``array`` over every process, in a new array
        (MPI_Allreduce with MPI_SUM).  Every process gets the same bits."""
        send = np.ascontiguousarray(array)
        out = np.empty_like(send)
        started = time.perf_counter()
        self.comm.Allreduce(send, out, op=self._mpi.SUM)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        self.bytes += send.nbytes
        return out

    def sum(self, value: float | int) -> float | int:
        """The sum of a Python number over every process."""
        return self.comm.allreduce(value, op=self._mpi.SUM)

    def broadcast(self, obj: Any, root: int = 0) -> Any:
        """``obj`` of process ``root``, on every process (pickled: for small things)."""
        return self.comm.bcast(obj, root=root)

    def broadcast_array(self, array: np.ndarray, root: int = 0) -> None:
        """Overwrite ``array`` (contiguous, the same shape and dtype everywhere) with
        process ``root``'s values."""
        self.comm.Bcast(array, root=root)

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        return self.comm.allgather(obj)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every process of the job now (MPI_Abort)."""
        self.comm.Abort(code)


_override: list[Communicator | None] = []
_world: Communicator | None = None


def world() -> Communicator | None:
    """The communicator of this process's job: the one set by :func:`use`, else
    MPI's COMM_WORLD when a launcher started the process, else None (one process).

    Raises MPIError when a launcher started a job of several processes but mpi4py
    cannot be imported.
    """
    global _world
    if _override:
        return _override[-1]
    if _world is None and launched_by_mpi():
        if launcher_size() > 1 or _mpi_importable():
            _world = Communicator(import_mpi().COMM_WORLD)
    return _world


def _mpi_importable() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def use(comm: Communicator | None) -> Iterator[Communicator | None]:
    """Make ``comm`` the communicator of collective ops inside the block (None: run
    them as on one process)."""
    _override.append(comm)
    try:
        yield comm
    finally:
        _override.pop()
