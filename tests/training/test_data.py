"""Training data: matching arrays to placeholders, refusing what does not fit (naming
the array and the placeholder), deterministic shuffling and the last partial batch."""

import numpy as np
import pytest

import graphengine as ge
from graphengine.errors import TrainingError
from graphengine.training.data import (
    BatchFeeder,
    as_dataset,
    batch_bounds,
    bind_data,
    epoch_order,
    fixed_batch_size,
    iterate,
    load_npz,
)


def placeholders(batch=None):
    g = ge.Graph()
    g.placeholder("x", (batch, 3, 2))
    g.placeholder("labels", (batch,), "int64")
    return g.placeholders()


def arrays(n=10):
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(n, 3, 2)).astype(np.float32),
        "labels": np.arange(n, dtype=np.int64),
    }


def test_arrays_bind_by_name_and_by_map():
    data = bind_data(arrays(), placeholders())
    assert data.size == 10 and set(data.arrays) == {"x", "labels"}
    renamed = {"images": arrays()["x"], "labels": arrays()["labels"]}
    data = bind_data(renamed, placeholders(), {"x": "images"})
    assert np.array_equal(data.arrays["x"], renamed["images"])


def test_placeholder_names_fit_when_the_mapped_array_is_absent():
    # A spec mapping x to train_x still accepts data keyed by placeholder names.
    data = bind_data(arrays(), placeholders(), {"x": "train_x"})
    assert data.size == 10


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda a: a.pop("x"),
            "no array 'x' for placeholder 'x' float32(N, 3, 2); its arrays are labels",
        ),
        (
            lambda a: a.update(x=a["x"].astype(np.float64)),
            "array 'x' for placeholder 'x' has dtype float64, the placeholder is float32",
        ),
        (
            lambda a: a.update(labels=a["labels"].astype(np.float32)),
            "array 'labels' for placeholder 'labels' has dtype float32, the placeholder is int64",
        ),
        (
            lambda a: a.update(x=a["x"][:, :, :1]),
            (
                "array 'x' for placeholder 'x' has shape (10, 3, 1), "
                "the placeholder needs (N, 3, 2): "
                "axis 2 is 1, expected 2"
            ),
        ),
        (
            lambda a: a.update(x=a["x"].reshape(10, 6)),
            (
                "array 'x' for placeholder 'x' has shape (10, 6), "
                "the placeholder has shape (N, 3, 2): "
                "ranks differ"
            ),
        ),
        (
            lambda a: a.update(labels=a["labels"][:7]),
            "array 'labels' (placeholder 'labels') has 7 examples, array 'x' has 10",
        ),
    ],
)
def test_data_that_does_not_fit_is_refused_naming_array_and_placeholder(change, message):
    data = arrays()
    change(data)
    with pytest.raises(TrainingError) as info:
        bind_data(data, placeholders(), source="train.npz")
    assert message in str(info.value)
    assert str(info.value).startswith("train.npz")


def test_exact_casts_are_made_once():
    data = arrays()
    data["labels"] = data["labels"].astype(np.uint8)  # uint8 -> int64 is exact
    bound = bind_data(data, placeholders())
    assert bound.arrays["labels"].dtype == np.int64


def test_a_map_to_an_unknown_placeholder_is_refused():
    with pytest.raises(TrainingError, match="no placeholder 'y' that training feeds"):
        bind_data(arrays(), placeholders(), {"y": "labels"})


def test_npz_files_load_without_pickle(tmp_path):
    np.savez(tmp_path / "ok.npz", **arrays())
    assert set(load_npz(tmp_path / "ok.npz")) == {"x", "labels"}
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(TrainingError, match="needs pickle"):
        load_npz(tmp_path / "objects.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(TrainingError, match="not a readable .npz file"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(TrainingError, match="does not exist"):
        as_dataset(tmp_path / "missing.npz", placeholders())


def test_shuffling_depends_only_on_seed_and_epoch():
    a = epoch_order(seed=3, epoch=0, size=50)
    assert np.array_equal(a, epoch_order(3, 0, 50))
    assert sorted(a.tolist()) == list(range(50))
    assert not np.array_equal(a, epoch_order(3, 1, 50))
    assert not np.array_equal(a, epoch_order(4, 0, 50))


def test_partial_batch_kept_or_dropped():
    assert batch_bounds(10, 4, drop_last=False) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(10, 4, drop_last=True) == [(0, 4), (4, 8)]
    assert batch_bounds(8, 4, drop_last=False) == [(0, 4), (4, 8)]
    sizes = [len(f["x"]) for f in iterate(bind_data(arrays(), placeholders()), 4)]
    assert sizes == [4, 4, 2]


def test_batches_gather_the_right_rows():
    data = bind_data(arrays(), placeholders())
    feeder = BatchFeeder(data, 4)
    order = epoch_order(0, 0, 10)
    batch = feeder.feeds(order[:4])
    assert np.array_equal(batch["labels"], order[:4])
    assert np.array_equal(batch["x"], data.arrays["x"][order[:4]])
    last = feeder.feeds(order[8:])
    assert np.array_equal(last["labels"], order[8:])


def test_fixed_batch_dims():
    assert fixed_batch_size(placeholders()) is None
    assert fixed_batch_size(placeholders(batch=4)) == 4
    g = ge.Graph()
    g.placeholder("a", (4, 2))
    g.placeholder("b", (5,))
    with pytest.raises(TrainingError, match="different batch sizes"):
        fixed_batch_size(g.placeholders())
