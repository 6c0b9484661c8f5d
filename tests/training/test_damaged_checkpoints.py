"""Damaged, wrong and hostile checkpoints and data files, and runs that share a
folder: each refused with a TrainingError that names the problem, never a raw
zipfile/numpy/KeyError, never a silent resume with other weights; a damaged
newest checkpoint gives way to the previous good one."""

import copy
import json
import os
import random
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import graphengine as ge
from graphengine.errors import TrainingError
from graphengine.training import Callback, Trainer
from graphengine.training import checkpoint as ckpt_io
from graphengine.training.data import epoch_order, load_npz

from ..train_models import assert_bitwise_equal, classifier, classifier_data

DATA = classifier_data(100)


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step(self, trainer, info):
        if info.step == self.step:
            trainer.stop()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A folder with the checkpoints of a run stopped at step 10 (epoch 1, 36 examples
    into epoch 2): ckpt-7 (epoch end), ckpt-10 (mid-epoch)."""
    folder = tmp_path_factory.mktemp("saved")
    Trainer(classifier(), DATA, checkpoint_dir=folder, callbacks=[StopAt(10)], progress=False).fit()
    assert [p.name for p in ckpt_io.list_checkpoints(folder)] == [
        "ckpt-000000007.npz",
        "ckpt-000000010.npz",
    ]
    return folder


def _resume(file: Path) -> ge.Graph:
    g = classifier()
    ge.train(g, DATA, resume=file, epochs=2, progress=False)
    return g


# -- well-formed but wrong: each field against the graph and the data ---------------------


def _edit(change):
    def make(saved: Path, out: Path) -> Path:
        ckpt = ckpt_io.read_checkpoint(saved / "ckpt-000000010.npz")
        ckpt = copy.deepcopy(ckpt)
        change(ckpt)
        return ckpt_io.write_checkpoint(out, ckpt, keep=0)

    return make


def _set(**fields):
    return _edit(lambda c: [setattr(c, k, v) for k, v in fields.items()])


def _param(name, value):
    return _edit(lambda c: c.params.__setitem__(name, value(c.params[name])))


def _slot(slot, name, value):
    def change(c):
        c.optimizer["slots"][slot][name] = value(c.optimizer["slots"][slot][name])

    return _edit(change)


def _order(value):
    return _edit(lambda c: setattr(c, "order", value(c.order)))


WRONG = [
    (
        "parameter replaced by a scalar",
        _param("hidden/w", lambda v: np.float32(1.0)),
        "parameter 'hidden/w' is float32()",
    ),
    (
        "parameter replaced by a row",
        _param("hidden/w", lambda v: v[:1]),
        "parameter 'hidden/w' is float32(1, 16)",
    ),
    ("int64 parameter", _param("out/b", lambda v: v.astype(np.int64)), "is int64(3,)"),
    ("float16 parameter", _param("out/b", lambda v: v.astype(np.float16)), "is float16(3,)"),
    ("missing parameter", _edit(lambda c: c.params.pop("out/b")), "missing: ['out/b']"),
    (
        "extra parameter",
        _edit(lambda c: c.params.__setitem__("other", np.zeros(2))),
        "not in the graph: ['other']",
    ),
    (
        "missing optimizer slot",
        _edit(lambda c: c.optimizer["slots"]["m"].pop("out/w")),
        "slot 'm' of parameter 'out/w' is missing",
    ),
    (
        "optimizer slot of the wrong shape",
        _slot("v", "out/w", lambda v: v[:, :1]),
        "slot 'v' of 'out/w' is float32(16, 1)",
    ),
    (
        "optimizer slot as float64",
        _slot("v", "out/w", lambda v: v.astype(np.float64)),
        "slot 'v' of 'out/w' is float64",
    ),
    ("slot list without v", _edit(lambda c: c.optimizer["slots"].pop("v")), "keeps slots"),
    ("negative order", _order(lambda o: -o - 1), "not a permutation"),
    ("order out of range", _order(lambda o: o + 1000), "not a permutation"),
    ("order with a repeat", _order(lambda o: np.r_[o[:-1], o[:1]]), "not a permutation"),
    ("order too short", _order(lambda o: o[:50]), "not a permutation"),
    ("float order", _order(lambda o: o.astype(np.float64)), "order"),
    ("absurd epoch", _set(epoch=10**15), "finished epochs"),
    ("absurd position", _set(position=10**6), "lies outside the data"),
    ("absurd step", _set(step=10**12), "does not fit"),
    ("step that disagrees", _set(step=11), "does not fit"),
    ("mid-epoch without order", _set(order=None), "holds no example order"),
    (
        "absurd iterations",
        _edit(lambda c: c.optimizer["scalars"].__setitem__("iterations", 10**9)),
        "iterations",
    ),
    (
        "iterations as text",
        _edit(lambda c: c.optimizer["scalars"].__setitem__("iterations", "many")),
        "iterations",
    ),
    (
        "metrics beyond the position",
        _edit(lambda c: c.metrics.__setitem__("examples", 500)),
        "running metrics",
    ),
]


def _header_edit(change):
    """A case that edits the JSON header of the mid-epoch checkpoint directly."""

    def make(saved: Path, out: Path) -> Path:
        source = saved / "ckpt-000000010.npz"
        with np.load(source) as npz:
            arrays = {k: npz[k] for k in npz.files}
        header = json.loads(arrays["header"].tobytes())
        change(header)
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
        out.mkdir(exist_ok=True)
        path = out / source.name
        np.savez(path, **arrays)
        return path

    return make


HEADER = [
    ("step -1", _header_edit(lambda h: h.__setitem__("step", -1)), "step is -1"),
    ("step as a float", _header_edit(lambda h: h.__setitem__("step", 10.5)), "step is 10.5"),
    ("params not a list", _header_edit(lambda h: h.__setitem__("params", "w")), "params"),
    ("no optimizer", _header_edit(lambda h: h.pop("optimizer")), "optimizer"),
    ("rng without seed", _header_edit(lambda h: h["rng"].pop("seed")), "rng.seed"),
    ("seed as a string", _header_edit(lambda h: h["rng"].__setitem__("seed", "7")), "rng.seed"),
    (
        "an array's checksum",
        _header_edit(lambda h: h["crc32"].__setitem__("param.0", 1)),
        "does not match its recorded crc32",
    ),
    ("no header format", _header_edit(lambda h: h.pop("format")), "not a graphengine"),
    ("a newer version", _header_edit(lambda h: h.__setitem__("version", 99)), "version 99"),
    (
        "graph hash of another graph",
        _header_edit(lambda h: h.__setitem__("graph_hash", "0")),
        "belongs to another graph",
    ),
    (
        "metrics as NaN",
        _header_edit(lambda h: h["metrics"].__setitem__("loss_sum", "nan")),
        "metrics.loss_sum",
    ),
]


@pytest.mark.parametrize(
    "make, fragment", [c[1:] for c in WRONG + HEADER], ids=[c[0] for c in WRONG + HEADER]
)
def test_a_wrong_checkpoint_is_refused_naming_the_field(saved, tmp_path, make, fragment):
    path = make(saved, tmp_path / "ckpt")
    with pytest.raises(TrainingError) as info:
        _resume(path)
    assert fragment in str(info.value)


def test_the_unedited_checkpoint_of_the_table_resumes(saved, tmp_path):
    path = _edit(lambda c: None)(saved, tmp_path / "ckpt")
    _resume(path)


# -- fuzzing: byte flips and truncations ---------------------------------------------------


def _classify(data: bytes, folder: Path, reference: dict) -> str:
    """'refused' (a TrainingError), 'resumed' (to the reference weights) or raise."""
    path = folder / "ckpt-000000010.npz"
    path.write_bytes(data)
    try:
        g = _resume(path)
    except TrainingError:
        return "refused"
    # Resumed: the weights must be those an intact checkpoint gives.
    assert_bitwise_equal({k: g.values[k] for k in reference}, reference)
    return "resumed"


def test_fuzzed_checkpoints_are_refused_or_resume_exactly(saved, tmp_path):
    original = (saved / "ckpt-000000010.npz").read_bytes()
    reference = {k: v.copy() for k, v in _resume(saved / "ckpt-000000010.npz").values.items()}
    rng = random.Random(13)
    counts = {"refused": 0, "resumed": 0}
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.choice([1, 1, 2, 8])):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        counts[_classify(bytes(data), tmp_path, reference)] += 1
    for _ in range(30):
        counts[_classify(original[: rng.randrange(len(original))], tmp_path, reference)] += 1
    assert counts["refused"] >= 150


def test_a_damaged_newest_checkpoint_gives_way_to_the_previous_good_one(saved, tmp_path, capsys):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for p in ckpt_io.list_checkpoints(saved):
        (folder / p.name).write_bytes(p.read_bytes())
    newest = folder / "ckpt-000000010.npz"
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated by a full disk
    g = classifier()
    result = ge.train(g, DATA, resume=folder, progress=False)
    err = capsys.readouterr().err
    assert "skipping damaged checkpoint" in err and "ckpt-000000010.npz" in err
    assert "resuming from" in err and "ckpt-000000007.npz', the newest good" in err
    reference = classifier()
    ge.train(reference, DATA, progress=False)
    assert result.steps == 21
    assert_bitwise_equal(dict(g.values), dict(reference.values))
    # Named explicitly, a damaged file is refused rather than replaced.
    with pytest.raises(TrainingError, match="ckpt-000000010.npz"):
        ge.train(classifier(), DATA, resume=newest, progress=False)


def test_when_every_checkpoint_is_damaged_resume_says_so(tmp_path):
    (tmp_path / "ckpt-000000001.npz").write_bytes(b"PK\x03\x04 nothing else")
    with pytest.raises(TrainingError, match="none of its 1 checkpoint"):
        ge.train(classifier(), DATA, resume=tmp_path, progress=False)


# -- one run per folder ---------------------------------------------------------------------


def test_a_fresh_run_in_a_used_folder_is_refused_and_loses_nothing(saved, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for p in saved.iterdir():
        if p.is_file():
            (folder / p.name).write_bytes(p.read_bytes())
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "step": 7}\n')
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}
    with pytest.raises(TrainingError, match="already holds 2 checkpoint.*--resume"):
        Trainer(
            classifier(), DATA, checkpoint_dir=folder, log=folder / "metrics.jsonl", progress=False
        ).fit()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"} == before


def test_a_second_trainer_on_a_folder_in_use_is_refused(tmp_path):
    holder = ckpt_io.FolderLock(tmp_path).acquire(None)  # as another run would
    try:
        with pytest.raises(TrainingError, match="in use by another training run"):
            Trainer(classifier(), DATA, checkpoint_dir=tmp_path, progress=False).fit()
    finally:
        holder.release()
    Trainer(classifier(), DATA, checkpoint_dir=tmp_path, progress=False).fit()  # now free


def test_temporary_files_of_a_running_trainer_are_kept_dead_ones_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = tmp_path / f".ckpt-000000001.npz.{dead}.00000000.tmp"
    live = tmp_path / f".ckpt-000000001.npz.{os.getppid()}.11111111.tmp"
    stale.write_bytes(b"x")
    live.write_bytes(b"x")
    Trainer(classifier(), DATA, checkpoint_dir=tmp_path, progress=False).fit()
    assert not stale.exists() and live.exists()


def test_a_non_utf8_byte_in_the_metrics_log_does_not_stop_resuming(saved, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for p in ckpt_io.list_checkpoints(saved):
        (folder / p.name).write_bytes(p.read_bytes())
    log = folder / "metrics.jsonl"
    log.write_bytes(b'{"epoch": 1, "step": 7}\n\xff\xfe garbage\n{"epoch": 2, "step": 99}\n')
    ge.train(classifier(), DATA, resume=folder, log=log, progress=False)
    lines = log.read_bytes().splitlines()
    assert lines[1] == b"\xff\xfe garbage"  # kept as it was
    steps = [json.loads(line)["step"] for line in lines if line.startswith(b"{")]
    assert steps == [7, 14, 21]


# -- hostile .npz files: data and checkpoints share one bounded reader ----------------------


def _npy_header(shape, dtype="<f4") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def test_a_header_claiming_64_gib_is_refused_without_allocating(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", _npy_header((2**33,)) + bytes(64))
    tracemalloc.start()
    with pytest.raises(TrainingError, match="is truncated: its header says"):
        load_npz(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 10 * 2**20


def test_a_zip_bomb_member_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "bomb.npz"
    size = 3 * 2**30  # 3 GiB of zeros, a few MiB compressed
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((size // 4,)))
            block = bytes(2**24)
            for _ in range(size // len(block)):
                member.write(block)
    assert path.stat().st_size < 10 * 2**20
    start = time.perf_counter()
    with pytest.raises(TrainingError, match="expands to 3,221,225,"):
        load_npz(path)
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize(
    "damage", ["truncated", "bad crc", "object array", "not a zip", "truncated member"]
)
def test_damaged_data_files_give_training_errors(tmp_path, damage):
    path = tmp_path / "d.npz"
    np.savez(path, **DATA)
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "bad crc":
        raw[200] ^= 0xFF
    elif damage == "object array":
        np.savez(path, x=np.array([None, 1], dtype=object))
        raw = bytearray(path.read_bytes())
    elif damage == "not a zip":
        raw = bytearray(b"\x93NUMPY" + bytes(100))
    elif damage == "truncated member":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", _npy_header((100, 4)) + bytes(10))
        raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(raw))
    with pytest.raises(TrainingError, match="d.npz"):
        ge.train(classifier(), str(path), progress=False)


def test_a_batch_size_of_a_billion_allocates_only_what_the_data_holds():
    tracemalloc.start()
    result = ge.train(
        classifier(), classifier_data(200), batch_size=10**9, epochs=1, progress=False
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.steps == 1 and peak < 50 * 2**20


# -- FIFOs in place of data, validation data and checkpoints ------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("where", ["data", "val", "resume file", "resume folder", "eval"])
def test_a_fifo_is_refused_without_blocking(tmp_path, where):
    fifo = tmp_path / ("ckpt-000000001.npz" if where == "resume folder" else "fifo.npz")
    os.mkfifo(fifo)
    with pytest.raises(TrainingError, match="FIFO"):
        if where == "data":
            ge.train(classifier(), str(fifo), progress=False)
        elif where == "val":
            ge.train(classifier(), DATA, val=str(fifo), progress=False)
        elif where == "resume file":
            ge.train(classifier(), DATA, resume=fifo, progress=False)
        elif where == "resume folder":
            ge.train(classifier(), DATA, resume=tmp_path, progress=False)
        else:
            from graphengine.training import evaluate

            evaluate(classifier(), str(fifo))


def test_the_order_a_checkpoint_holds_is_the_seeded_one(saved):
    ckpt = ckpt_io.read_checkpoint(saved / "ckpt-000000010.npz")
    assert np.array_equal(ckpt.order, epoch_order(7, 1, 100))


# -- every header field, replaced or removed -----------------------------------------------

#: What a hostile edit puts in a header field (the arrays and their checksums intact).
HOSTILE_VALUES = [None, -1, 0, 1, 2**63, -(2**70), 1.5, float("nan"), "x", "", [], [1, "a"], {}]
HOSTILE_VALUES += [{"a": 1}, True, "A" * 100_000, list(range(100_000)), "<delete>"]
FAST_VALUES = [None, "A" * 100_000, "<delete>"]


def _header_paths(header: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in header.items():
        out.append((*prefix, key))
        if isinstance(value, dict) and key != "crc32":
            out += _header_paths(value, (*prefix, key))
    return out


def _edit_header_field(source: Path, target: Path, path: tuple, value) -> None:
    with np.load(source) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays["header"].tobytes())
    inner = header
    for key in path[:-1]:
        inner = inner[key]
    if value == "<delete>":
        del inner[path[-1]]
    else:
        inner[path[-1]] = value
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(target, **arrays)


def _header_grid(saved: Path, tmp_path: Path, values: list) -> dict[str, int]:
    """Each header field of the mid-epoch checkpoint replaced by each value: the
    resume must refuse it in one short message or give the reference weights."""
    source = saved / "ckpt-000000010.npz"
    header = json.loads(np.load(source)["header"].tobytes())
    reference = {k: v.copy() for k, v in _resume(source).values.items()}
    target = tmp_path / "ckpt-000000010.npz"
    counts = {"refused": 0, "resumed": 0}
    for path in _header_paths(header):
        for value in values:
            _edit_header_field(source, target, path, value)
            try:
                g = _resume(target)
            except TrainingError as exc:
                assert len(str(exc)) < 1000, (path, str(exc)[:200])
                counts["refused"] += 1
                continue
            # Resumed: with the weights an intact checkpoint gives, never others.
            assert all(g.values[k].tobytes() == v.tobytes() for k, v in reference.items()), (
                path,
                repr(value)[:40],
            )
            counts["resumed"] += 1
    return counts


def test_a_hostile_value_in_any_header_field_is_refused_or_harmless(saved, tmp_path, capsys):
    counts = _header_grid(saved, tmp_path, FAST_VALUES)
    assert counts["refused"] > 50
    # Notices print each changed setting; a 100,000-character value is cut short.
    assert max(map(len, capsys.readouterr().err.splitlines())) < 1000


@pytest.mark.slow
def test_every_hostile_value_in_every_header_field(saved, tmp_path):
    counts = _header_grid(saved, tmp_path, HOSTILE_VALUES)
    assert counts["refused"] > 400


@pytest.mark.parametrize(
    "path, value, fragment",
    [
        (("optimizer", "scalars", "iterations"), 0, "iterations is 0; expected 10"),
        (("optimizer", "scalars"), {}, "iterations is None"),
        (("optimizer", "first_step"), 3, "iterations is 10; expected 7"),
        (("optimizer", "name"), "x", "optimizer.name is 'x'; expected one of sgd"),
        (("data", "fingerprint"), "not hex", "data.fingerprint"),
        (("data", "size"), -5, "data.size"),
        (("config", "batch_size"), "16", "config.batch_size"),
        (("config", "drop_last"), "yes", "config.drop_last"),
        (("graph_hash",), "A" * 100_000, "graph_hash is 'AAAA"),
    ],
)
def test_header_fields_that_resumed_with_other_weights_are_refused(
    saved, tmp_path, path, value, fragment
):
    target = tmp_path / "ckpt-000000010.npz"
    _edit_header_field(saved / "ckpt-000000010.npz", target, path, value)
    with pytest.raises(TrainingError) as info:
        _resume(target)
    assert fragment in str(info.value) and len(str(info.value)) < 1000


# -- the long fuzz of the README's table ----------------------------------------------------


@pytest.mark.slow
def test_a_thousand_bit_flips_and_two_hundred_truncations(saved, tmp_path):
    """The README's figures: 1,000 single-bit flips (seed 1) and 200 truncations of
    the mid-epoch checkpoint, each refused or resumed bit-identical."""
    original = (saved / "ckpt-000000010.npz").read_bytes()
    reference = {k: v.copy() for k, v in _resume(saved / "ckpt-000000010.npz").values.items()}
    rng = random.Random(1)
    flips = {"refused": 0, "resumed": 0}
    for _ in range(1000):
        data = bytearray(original)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        flips[_classify(bytes(data), tmp_path, reference)] += 1
    cuts = {"refused": 0, "resumed": 0}
    for _ in range(200):
        cuts[_classify(original[: rng.randrange(len(original))], tmp_path, reference)] += 1
    print(f"flips {flips}, truncations {cuts}")
    assert cuts == {"refused": 200, "resumed": 0} and flips["refused"] >= 850


def test_many_compressed_members_each_under_the_budget_are_refused_together(tmp_path):
    path = tmp_path / "bombs.npz"
    member = _npy_header((2**20,)) + bytes(2**22)  # 4 MiB of zeros: 4 KiB compressed
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(64):
            z.writestr(f"x{i}.npy", member)
    assert path.stat().st_size < 2**20
    with ge.using_limits(max_tensor_bytes=8 * 2**20, max_inflated_bytes=64 * 2**20):
        tracemalloc.start()
        with pytest.raises(TrainingError, match="would inflate to 268,443,648 bytes together"):
            load_npz(path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 2**20
        # Under the total, the same members load; stored ones are bounded by the file.
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for i in range(8):
                z.writestr(f"x{i}.npy", member)
        assert len(load_npz(path)) == 8


def test_a_checkpoint_renamed_to_a_newer_step_is_skipped_not_resumed(saved, tmp_path, capsys):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for p in ckpt_io.list_checkpoints(saved):
        (folder / p.name).write_bytes(p.read_bytes())
    # An older checkpoint copied to a newer name would have resumed step 7 as 99.
    (folder / "ckpt-000000099.npz").write_bytes((saved / "ckpt-000000007.npz").read_bytes())
    g = classifier()
    ge.train(g, DATA, resume=folder, epochs=2, progress=False)
    err = capsys.readouterr().err
    assert "records step 7, but its name says step 99" in err
    assert "resuming from" in err and "ckpt-000000010.npz', the newest good" in err
    reference = classifier()
    ge.train(reference, DATA, epochs=2, progress=False)
    assert_bitwise_equal(dict(g.values), dict(reference.values))


@pytest.mark.slow
def test_flips_and_truncations_of_a_resnet_checkpoint_with_restore_best_arrays(tmp_path):
    """The ResNet block of the gallery (batch-norm statistics, early stopping
    keeping the best parameters in the checkpoint): 300 flips and 100
    truncations (seed 5), each refused or resumed bit-identical."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    from gallery import build_resnet_block

    from graphengine.training import EarlyStopping

    rng = np.random.default_rng(0)
    data = {"images": rng.normal(size=(24, 3, 16, 16)).astype(np.float32)}
    data["labels"] = rng.integers(0, 10, 24)
    val = {"images": rng.normal(size=(8, 3, 16, 16)).astype(np.float32)}
    val["labels"] = rng.integers(0, 10, 8)
    opts = dict(batch_size=8, optimizer="adam", learning_rate=0.01, progress=False, val=val)

    def run(resume=None, callbacks=()):
        g = build_resnet_block()
        stop = EarlyStopping(patience=5, restore_best=True)
        Trainer(g, data, callbacks=[*callbacks, stop], epochs=4, **opts).fit(resume)
        return g

    Trainer(
        build_resnet_block(),
        data,
        checkpoint_dir=tmp_path / "s",
        callbacks=[StopAt(7), EarlyStopping(patience=5, restore_best=True)],
        epochs=4,
        **opts,
    ).fit()
    source = ckpt_io.latest_checkpoint(tmp_path / "s")
    assert ckpt_io.read_checkpoint(source).extra  # the best parameters travel with it
    reference = {k: v.copy() for k, v in run(source).values.items()}
    original, r = source.read_bytes(), random.Random(5)
    target = tmp_path / "c" / source.name
    target.parent.mkdir()
    counts = {"refused": 0, "resumed": 0}
    for i in range(400):
        data_bytes = bytearray(original)
        if i < 300:
            data_bytes[r.randrange(len(data_bytes))] ^= 1 << r.randrange(8)
        else:
            data_bytes = data_bytes[: r.randrange(len(data_bytes))]
        target.write_bytes(bytes(data_bytes))
        try:
            g = run(target)
        except TrainingError:
            counts["refused"] += 1
            continue
        assert_bitwise_equal({k: g.values[k] for k in reference}, reference)
        counts["resumed"] += 1
    print(f"resnet checkpoint: {counts}")
    assert counts["refused"] >= 350


@pytest.mark.parametrize("kind", ["nested 100,000 deep", "a header past the cap"])
def test_a_header_that_json_would_choke_on_is_refused_quickly(saved, tmp_path, monkeypatch, kind):
    source = saved / "ckpt-000000010.npz"
    with np.load(source) as npz:
        arrays = {k: npz[k] for k in npz.files}
    text = arrays["header"].tobytes().decode()[:-1]
    if kind.startswith("nested"):  # RecursionError in json.loads, raw before
        text += ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    else:  # a 2 GiB "[0,0,..." compresses to 2 MB and took half an hour to parse
        monkeypatch.setattr(ckpt_io, "MAX_HEADER_BYTES", 2**20)
        text += ', "x": [' + "0," * 2**20 + "0]}"
    arrays["header"] = np.frombuffer(text.encode(), np.uint8)
    target = tmp_path / source.name
    np.savez_compressed(target, **arrays)
    start = time.perf_counter()
    with pytest.raises(TrainingError, match="recursion depth|has a header of 2,099,"):
        _resume(target)
    assert time.perf_counter() - start < 5


@pytest.fixture(scope="module")
def watched(tmp_path_factory) -> Path:
    """The mid-epoch checkpoint of a run with early stopping keeping its best parameters."""
    folder = tmp_path_factory.mktemp("watched")
    stop = ge.training.EarlyStopping(patience=3, restore_best=True)
    Trainer(
        classifier(), DATA, val=classifier_data(30, seed=3), checkpoint_dir=folder,
        callbacks=[StopAt(10), stop], progress=False,
    ).fit()  # fmt: skip
    return ckpt_io.latest_checkpoint(folder)


@pytest.mark.parametrize(
    "key, value",
    [
        ("state/EarlyStopping/wait", 1e9),
        ("state/EarlyStopping/best_step", -1.0),
        ("state/BestCheckpoint/best_step", 2.5),
    ],  # fmt: skip
)
def test_monitor_counters_beyond_the_step_are_refused(watched, tmp_path, key, value):
    ckpt = ckpt_io.read_checkpoint(watched)
    ckpt.metrics[key] = value
    path = ckpt_io.write_checkpoint(tmp_path, ckpt, keep=0)
    with pytest.raises(TrainingError, match=f"metrics.{key} is"):
        ckpt_io.check_against(
            ckpt_io.read_checkpoint(path), path, graph=classifier(), trained=[],
            optimizer_name="", slot_names=[], data_size=100, data_fingerprint="",
            batch_size=16, steps_per_epoch=lambda b, d: 7,
        )  # fmt: skip


def test_nan_in_the_best_parameters_a_checkpoint_keeps_is_refused(watched, tmp_path):
    ckpt = ckpt_io.read_checkpoint(watched)
    key = next(iter(ckpt.extra))
    ckpt.extra[key] = np.full_like(ckpt.extra[key], np.nan)  # restore_best would put it back
    ckpt_io.write_checkpoint(tmp_path, ckpt, keep=0)
    with pytest.raises(TrainingError, match=f"callback array '{key}' holds inf or nan"):
        ge.train(classifier(), DATA, resume=tmp_path, progress=False)
