"""Files of op set 1 (2-D pooling ops max_pool2d/avg_pool2d) still load and mean the same.

The opset-1 files are made from today's files by undoing the opset-2 change in the
proto (op names, the two new attributes, the version), which is what an older
graphengine wrote."""

import warnings

import numpy as np
import pytest

import graphengine as ge
from graphengine.proto import graphengine_pb2 as pb

_OPSET1_NAMES = {
    "max_pool": "max_pool2d",
    "avg_pool": "avg_pool2d",
    "max_pool_grad": "max_pool2d_grad",
    "avg_pool_grad": "avg_pool2d_grad",
}


def _as_opset1(path, out):
    model = pb.ModelProto.FromString(path.read_bytes())
    model.opset_version = 1
    for node in list(model.graph.nodes) + list(model.gradient.nodes):
        if node.op_type in _OPSET1_NAMES:
            node.op_type = _OPSET1_NAMES[node.op_type]
            if node.op_type in ("max_pool2d", "avg_pool2d"):
                keep = [a for a in node.attribute if a.name not in ("dilation", "ceil_mode")]
                del node.attribute[:]
                node.attribute.extend(keep)
    model.ClearField("content_crc32")  # an edited file: the old checksum no longer holds
    out.write_bytes(model.SerializeToString())
    return out


def _pool_model():
    g = ge.Graph("pools")
    x = g.placeholder("x", shape=(None, 2, 8, 6), dtype=np.float64)
    w = g.parameter("w", np.linspace(-1, 1, 2 * 3 * 3 * 3).reshape(3, 2, 3, 3))
    h = ge.conv2d(x, w, padding=1)
    y = ge.max_pool2d(h, 2) + ge.avg_pool2d(h, 2, padding=(0, 0, 0, 0))
    loss = ge.sum(y * y, name="loss")
    return g, loss


def test_opset1_forward_pools_are_read_as_the_nd_ops(tmp_path):
    g, _ = _pool_model()
    g.save(tmp_path / "new.pb")
    old = ge.load(_as_opset1(tmp_path / "new.pb", tmp_path / "old.pb"))
    assert {n.op for n in old.nodes} >= {"max_pool", "avg_pool"}
    x = np.random.default_rng(0).normal(size=(3, 2, 8, 6))
    assert ge.run(old, ["loss"], {"x": x})["loss"] == ge.run(g, ["loss"], {"x": x})["loss"]
    # Saved again, it is an opset-2 file.
    old.save(tmp_path / "again.pb")
    assert pb.ModelProto.FromString((tmp_path / "again.pb").read_bytes()).opset_version == 2


def test_opset1_gradient_section_is_built_again_with_a_warning(tmp_path):
    g, loss = _pool_model()
    tg = ge.gradients(g, loss, wrt=["w", "x"])
    tg.save(tmp_path / "new.pb")
    path = _as_opset1(tmp_path / "new.pb", tmp_path / "old.pb")
    with pytest.warns(UserWarning, match="built again from its loss and wrt"):
        old = ge.load(path)
    assert set(old.gradient.grads) == {"w", "x"}
    assert not {n.op for n in old.nodes} & {"max_pool2d_grad", "avg_pool2d_grad"}
    x = np.random.default_rng(1).normal(size=(3, 2, 8, 6))
    fetches = [tg.gradient.grads["w"], tg.gradient.grads["x"]]
    want = ge.run(tg, fetches, {"x": x})
    got = ge.run(old, [old.gradient.grads["w"], old.gradient.grads["x"]], {"x": x})
    for ref_name, got_name in zip(fetches, [old.gradient.grads["w"], old.gradient.grads["x"]]):
        np.testing.assert_allclose(got[got_name], want[ref_name], rtol=1e-12)


def test_current_files_load_without_a_warning(tmp_path):
    g, loss = _pool_model()
    ge.gradients(g, loss).save(tmp_path / "m.pb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ge.load(tmp_path / "m.pb")
