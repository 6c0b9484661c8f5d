"""External data under attack and under crashes: saves killed between their
renames, stale temporary files, hard links, shared or sparse regions, FIFOs."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import graphengine as ge
from graphengine import serialize
from graphengine.proto import graphengine_pb2 as pb


def _graph(fill: float) -> ge.Graph:
    g = ge.Graph("big")
    w = g.parameter("w", np.full(1000, fill, np.float32))
    g.mark_output(ge.sum(w))
    return g


def _data_files(folder: Path) -> list[str]:
    serialize.wait_for_removals()  # old data files are freed in a background thread
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".data"))


_CHILD = textwrap.dedent("""
    import sys, numpy as np, graphengine as ge
    from graphengine import serialize
    g = ge.Graph("big")
    w = g.parameter("w", np.full(1000, 2.0, np.float32))
    g.mark_output(ge.sum(w))
    serialize._pause_between_renames = 60
    ge.save(g, sys.argv[1], external_data_threshold=16)
""")


def test_a_save_killed_between_its_renames_leaves_a_model_that_loads(tmp_path):
    path = tmp_path / "m.pb"
    ge.save(_graph(1.0), path, external_data_threshold=16)
    [old_data] = _data_files(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)])
    try:
        deadline = time.monotonic() + 60
        # The new data file is in place and the model's temporary file written:
        # the child sleeps just before the model's rename.
        while time.monotonic() < deadline:
            names = {p.name for p in tmp_path.iterdir()}
            if len(_data_files(tmp_path)) == 2 and any(
                n.startswith(".m.pb.") and n.endswith(".tmp") for n in names
            ):
                break
            assert child.poll() is None, "the saving process ended early"
            time.sleep(0.05)
        else:
            pytest.fail("the child never reached the point between its renames")
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    # The old model still reads its own, intact data file.
    assert float(ge.load(path).values["w"][0]) == 1.0
    assert old_data in _data_files(tmp_path)
    # The next save clears the dead process's temporary file and the orphan data file.
    ge.save(_graph(3.0), path, external_data_threshold=16)
    assert float(ge.load(path).values["w"][0]) == 3.0
    serialize.wait_for_removals()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert len(leftovers) == 2 and leftovers[0] == "m.pb", leftovers


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    path = tmp_path / "m.pb"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = [tmp_path / f".m.pb.{dead}.0badc0de.tmp", tmp_path / f".m.pb.data.{dead}.12345678.tmp"]
    alive = tmp_path / f".m.pb.{os.getppid()}.cafef00d.tmp"  # a process that still runs
    for p in [*stale, alive]:
        p.write_bytes(b"partial")
    ge.save(_graph(1.0), path)
    assert not any(p.exists() for p in stale)
    assert alive.exists()


def test_errors_name_the_target_not_the_temporary_file(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    target = tmp_path / "file" / "m.pb"  # its folder is a file: nothing can be written
    with pytest.raises(OSError) as info:
        ge.save(_graph(1.0), target)
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)
    with pytest.raises(OSError) as info:
        ge.save(_graph(1.0), target, external_data_threshold=16)
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)


# -- containment: hard links, ownership ---------------------------------------------------


def test_a_hard_linked_data_file_is_refused_unless_allowed(tmp_path):
    outside = tmp_path / "secret"
    outside.write_bytes(np.full(1000, 5.0, np.float32).tobytes())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = model_dir / "m.pb"
    ge.save(_graph(5.0), path, external_data_threshold=16)
    [data] = _data_files(model_dir)
    (model_dir / data).unlink()
    os.link(outside, model_dir / data)  # same bytes, but a link to a file elsewhere
    with pytest.raises(ge.FileFormatError, match="2 hard links.*allow_linked_data=True"):
        ge.load(path)
    assert float(ge.load(path, allow_linked_data=True).values["w"][0]) == 5.0


def _linked_model(tmp_path):
    """A model whose data file is a hard link to a file outside the model's folder."""
    outside = tmp_path / "secret"
    outside.write_bytes(np.full(1000, 5.0, np.float32).tobytes())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = model_dir / "m.pb"
    ge.save(_graph(5.0), path, external_data_threshold=16)
    [data] = _data_files(model_dir)
    (model_dir / data).unlink()
    os.link(outside, model_dir / data)
    return path


def _chown_data_file(path: Path, uid: int) -> None:
    [data] = _data_files(path.parent)
    try:
        os.chown(path.parent / data, uid, -1)
    except (PermissionError, AttributeError):
        pytest.skip("changing a file's owner needs root")


def test_a_data_file_of_another_owner_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "m.pb"
    ge.save(_graph(3.0), path, external_data_threshold=16)
    _chown_data_file(path, 65534)  # nobody: as if placed by another user
    with pytest.raises(ge.FileFormatError) as info:
        ge.load(path)
    message = str(info.value)
    assert "belongs to user id 65534" in message and f"model file to {os.getuid()}" in message
    assert "allow_linked_data=True" in message and "--allow-linked-data" in message
    assert float(ge.load(path, allow_linked_data=True).values["w"][0]) == 3.0
    with ge.allowing_linked_data():
        assert float(ge.load(path).values["w"][0]) == 3.0
    with pytest.raises(ge.FileFormatError, match="belongs to user id 65534"):
        ge.load(path)  # the block is over: the rule holds again


def test_a_data_file_of_the_model_files_owner_is_read(tmp_path):
    path = tmp_path / "m.pb"
    ge.save(_graph(3.0), path, external_data_threshold=16)
    _chown_data_file(path, 65534)
    os.chown(path, 65534, -1)  # model and data of one (other) user: consistent
    assert float(ge.load(path).values["w"][0]) == 3.0


def test_the_command_line_refuses_a_linked_data_file_unless_allowed(tmp_path, capsys):
    from graphengine.cli.main import main

    path = _linked_model(tmp_path)
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 hard links" in err and "--allow-linked-data" in err
    assert main(["inspect", str(path), "--allow-linked-data"]) == 0
    assert main(["--allow-linked-data", "run", str(path)]) == 0
    assert "5000" in capsys.readouterr().out
    assert main(["run", str(path)]) == 1  # the flag lasts one command


def test_the_command_line_refuses_a_data_file_of_another_owner_unless_allowed(tmp_path, capsys):
    from graphengine.cli.main import main

    path = tmp_path / "m.pb"
    ge.save(_graph(3.0), path, external_data_threshold=16)
    _chown_data_file(path, 65534)
    assert main(["inspect", str(path)]) == 1
    assert "belongs to user id 65534" in capsys.readouterr().err
    assert main(["inspect", str(path), "--allow-linked-data"]) == 0


# -- what the data file's bytes may claim -------------------------------------------------


def _model_with_tensors(
    folder: Path, regions: list[tuple[int, int]], file_size: int, sparse: bool = True
) -> Path:
    g = ge.Graph("shared")
    total = None
    for i in range(len(regions)):
        w = g.parameter(f"w{i}", np.zeros(4, np.float32))
        total = ge.sum(w) if total is None else total + ge.sum(w)
    g.mark_output(total)
    path = folder / "m.pb"
    ge.save(g, path, external_data_threshold=0)
    # The large dims are written into the file, not saved: saving an array of
    # 8 GiB would write 8 GiB and fault every page of it in.
    model = pb.ModelProto.FromString(path.read_bytes())
    for param, (offset, length) in zip(model.graph.parameters, regions):
        param.value.dims[:] = [length // 4]
        ext = param.value.external
        ext.location, ext.offset, ext.length = "shared.data", offset, length
        ext.ClearField("crc32")
    model.ClearField("content_crc32")  # edited: the file's checksum no longer holds
    path.write_bytes(model.SerializeToString())
    with open(folder / "shared.data", "wb") as f:
        f.truncate(file_size)  # sparse: no disk used
    return path


def test_tensors_sharing_one_region_of_a_sparse_file_are_refused(tmp_path):
    path = _model_with_tensors(tmp_path, [(0, 2**26)] * 96, 2**26)
    start = time.perf_counter()
    with pytest.raises(ge.FileFormatError, match="overlaps that of graph.parameters"):
        ge.load(path)
    assert time.perf_counter() - start < 5


def test_a_partial_overlap_names_both_tensors_and_the_fix(tmp_path):
    path = _model_with_tensors(tmp_path, [(0, 4096), (4096, 4096), (6144, 4096)], 2**14)
    with pytest.raises(ge.FileFormatError) as info:
        ge.load(path, verify_data=False)
    message = str(info.value)
    assert "'w2'" in message and "'w1'" in message  # the tensor refused and the one it overlaps
    assert "bytes 6144 to 10240" in message and "bytes 4096 to 8192" in message
    assert "save the model again with ge.save" in message


def test_regions_that_touch_but_do_not_overlap_are_read(tmp_path):
    path = _model_with_tensors(tmp_path, [(0, 4096), (4096, 4096), (8192, 64)], 2**14, False)
    g = ge.load(path, verify_data=False)
    assert [g.values[f"w{i}"].nbytes for i in range(3)] == [4096, 4096, 64]


def test_a_tensor_past_the_real_end_of_the_file_is_refused(tmp_path):
    path = _model_with_tensors(tmp_path, [(0, 4096), (4096, 2**20)], 8192)
    with pytest.raises(ge.FileFormatError, match="past the end of 'shared.data' .8192 bytes"):
        ge.load(path, verify_data=False)


def test_one_tensor_of_a_sparse_8_gib_file_is_mapped_not_allocated(tmp_path):
    path = _model_with_tensors(tmp_path, [(0, 2**33)], 2**33)
    g = ge.load(path, verify_data=False)  # nothing is read: the file is mapped
    w = g.values["w0"]
    assert w.shape == (2**31,) and not w.flags.owndata
    w[:4] = 1.0  # copy-on-write: only this page becomes private memory
    assert os.path.getsize(tmp_path / "shared.data") == 2**33
    with open(tmp_path / "shared.data", "rb") as f:
        assert f.read(16) == bytes(16)


# -- FIFOs --------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_place_of_a_data_file_is_refused_without_blocking(tmp_path):
    path = tmp_path / "m.pb"
    ge.save(_graph(1.0), path, external_data_threshold=16)
    [data] = _data_files(tmp_path)
    (tmp_path / data).unlink()
    os.mkfifo(tmp_path / data)
    with pytest.raises(ge.FileFormatError, match="FIFO"):
        ge.load(path)
    os.mkfifo(tmp_path / "fifo.pb")
    with pytest.raises(ge.FileFormatError, match="FIFO"):
        ge.load(tmp_path / "fifo.pb")


def test_data_file_names_follow_the_documented_pattern(tmp_path):
    ge.save(_graph(1.0), tmp_path / "m.pb", external_data_threshold=16)
    assert re.fullmatch(r"m\.pb\.[0-9a-f]{12}\.data", _data_files(tmp_path)[0])


def test_dropping_the_cache_of_a_replaced_data_file_leaves_it_intact(tmp_path):
    # save() drops the cached pages of the data files it replaces as it writes
    # the new one; the old model must still load, bit for bit, from disk.
    from graphengine.serialize.cleanup import drop_cached_pages

    path = tmp_path / "m.pb"
    ge.save(_graph(1.0), path, external_data_threshold=16)
    [old_data] = _data_files(tmp_path)
    before = (tmp_path / old_data).read_bytes()
    fifo = tmp_path / "fifo"
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
    drop_cached_pages([tmp_path / old_data, tmp_path / "missing.data", fifo])
    drop_cached_pages([tmp_path / old_data], 4096, 8192)  # a range
    assert (tmp_path / old_data).read_bytes() == before
    assert float(ge.load(path).values["w"][0]) == 1.0


def test_a_save_over_a_model_drops_the_old_data_files_cache_while_they_still_load(
    tmp_path, monkeypatch
):
    # ge.save hands the old data file to drop_cached_pages range by range, each
    # just before it writes that range of the new one; meanwhile the old model is
    # still the one on disk, whole.
    from graphengine.serialize import cleanup, data_writes

    monkeypatch.setattr(data_writes, "PIECE_BYTES", 1024)  # 4000 bytes: 4 pieces
    path = tmp_path / "m.pb"
    ge.save(_graph(1.0), path, external_data_threshold=16)
    [old_data] = _data_files(tmp_path)
    seen = []

    def recording(paths, start=0, nbytes=0):
        seen.append((sorted(p.name for p in paths), start, nbytes))
        assert float(ge.load(path).values["w"][0]) == 1.0
        cleanup.drop_cached_pages(paths, start, nbytes)

    monkeypatch.setattr(serialize, "drop_cached_pages", recording)
    ge.save(_graph(2.0), path, external_data_threshold=16)
    assert sorted(seen) == [
        ([old_data], start, min(1024, 4000 - start)) for start in range(0, 4000, 1024)
    ]
    assert float(ge.load(path).values["w"][0]) == 2.0
    assert old_data not in _data_files(tmp_path)
