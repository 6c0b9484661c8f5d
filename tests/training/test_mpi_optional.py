"""graphengine without the [mpi] extra: nothing imports mpi4py until a process of
a real MPI job needs it, and then the error says what to install."""

import subprocess
import sys

import pytest

import graphengine.mpi as mpi
from graphengine.cli.main import main
from graphengine.training import distributed


def test_training_does_not_import_mpi4py():
    code = (
        "import sys, numpy as np, graphengine as ge\n"
        "import graphengine.training.distributed\n"
        "g = ge.Graph(); x = g.placeholder('x', (None,))\n"
        "w = g.parameter('w', np.zeros((), np.float32))\n"
        "ge.train(g, {'x': np.ones(4, np.float32)}, loss=ge.mean((x * w - x) ** 2.0).name,"
        " progress=False)\n"
        "print('mpi4py' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    with pytest.raises(mpi.MPIError, match=r'pip install "graphengine\[mpi\]"'):
        mpi.import_mpi()


def test_a_job_of_several_processes_without_mpi4py_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(mpi, "_world", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "0")
    assert mpi.launched_by_mpi() and mpi.launcher_size() == 2
    with pytest.raises(mpi.MPIError, match="mpi4py"):
        mpi.world()


def test_one_process_is_not_a_job(monkeypatch):
    for name in mpi.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert mpi.world() is None
    assert distributed.from_launcher() is None
    with pytest.raises(mpi.MPIError, match="mpiexec -n K"):
        distributed.DataParallel()


def test_workers_needs_mpiexec(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(mpi.MPIError, match="--workers needs mpiexec"):
        distributed.find_mpiexec()


def test_workers_must_be_positive(capsys, tmp_path):
    assert (
        main(
            ["train", "model.pb", "--data", "d.npz", "--workers", "0", "-o", str(tmp_path / "t.pb")]
        )
        == 1
    )
    assert "--workers 0: give a number of processes >= 1" in capsys.readouterr().err
