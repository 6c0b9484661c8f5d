"""Drawings: DOT text (nodes, edges, labels, clusters, gradient links, values) and
real images made by Graphviz's ``dot`` (skipped only where it is not installed)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import graphengine as ge
from graphengine.graph import Node
from graphengine.render import render_svg, style
from graphengine.render.values import format_value
from graphengine.shapes import TensorType

ROOT = Path(__file__).resolve().parents[1]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is absent")

X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], np.float32)


def mlp() -> ge.Graph:
    """x -> layer1 (x*w + b, tanh) -> head (sum) -> mean(y*y) named loss."""
    g = ge.Graph("mlp")
    x = g.placeholder("x", (None, 3))
    with g.name_scope("layer1"):
        w = g.parameter("w", np.array([0.5, -1.0, 2.0], np.float32))
        b = g.parameter("b", np.array([0.1, 0.2, 0.3], np.float32))
        h = ge.tanh(x * w + b)
    with g.name_scope("head"):
        y = ge.sum(h, axis=1)
    ge.mean(y * y, name="loss")
    return g


def bench_graph(scopes: int, nodes_per_scope: int) -> ge.Graph:
    """The MLP-like graph of tools/bench_render.py."""
    tools = ROOT / "tools"
    spec = importlib.util.spec_from_file_location("bench_render", tools / "bench_render.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(tools))  # the benchmark imports its sibling timing.py
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(tools))
    return module.build_graph(scopes, nodes_per_scope)


# -- a small DOT reader ------------------------------------------------------------

_ATTR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_NODE = re.compile(r'^\s*"([^"]+)" \[(.*)\];$')
_EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[(.*)\];$')
_CLUSTER = re.compile(r'^\s*subgraph "cluster_([^"]+)" \{$')


class Dot:
    """Nodes (name -> attrs, and the cluster path each sits in) and edges of DOT text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.nodes: dict[str, dict[str, str]] = {}
        self.cluster_of: dict[str, tuple[str, ...]] = {}
        self.edges: list[tuple[str, str, dict[str, str]]] = []
        self.clusters: list[str] = []
        stack: list[str] = []
        for line in text.splitlines():
            if m := _CLUSTER.match(line):
                stack.append(m.group(1))
                self.clusters.append(m.group(1))
            elif line.strip() == "}" and stack:
                stack.pop()
            elif m := _EDGE.match(line):
                attrs = dict(_ATTR.findall(m.group(3)))
                if attrs.get("style") != "invis":  # what hangs the columns of a long flow
                    self.edges.append((m.group(1), m.group(2), attrs))
            elif (m := _NODE.match(line)) and 'style="invis"' not in m.group(2):
                self.nodes[m.group(1)] = dict(_ATTR.findall(m.group(2)))
                if not m.group(1).startswith("#legend"):
                    self.cluster_of[m.group(1)] = tuple(stack)

    def drawn(self) -> set[str]:
        """Drawn graph nodes (legend samples left out)."""
        return {n for n in self.nodes if not n.startswith("#legend")}

    def label(self, node: str) -> list[str]:
        return self.nodes[node]["label"].split("\\n")

    def edges_of(self, kind: str) -> list[tuple[str, str, dict[str, str]]]:
        """Edges drawn with the style of ``kind`` (outside the legend)."""
        want = style.EDGE_STYLES[kind]
        return [
            e
            for e in self.edges
            if not e[0].startswith("#legend") and all(e[2].get(k) == v for k, v in want.items())
        ]

    def pairs(self, kind: str) -> set[tuple[str, str]]:
        return {(a, b) for a, b, _ in self.edges_of(kind)}


def fill(dot: Dot, node: str) -> str:
    return dot.nodes[node]["fillcolor"]


# -- the forward view ----------------------------------------------------------------


def test_forward_view_draws_every_node_and_each_producer_consumer_pair_once():
    g = mlp()
    dot = Dot(ge.to_dot(g))
    assert dot.drawn() == {n.name for n in g.nodes}
    # y * y reads head/sum twice: one edge
    assert sorted(dot.pairs("forward")) == sorted(
        [
            ("x", "layer1/multiply"),
            ("layer1/w", "layer1/multiply"),
            ("layer1/multiply", "layer1/add"),
            ("layer1/b", "layer1/add"),
            ("layer1/add", "layer1/tanh"),
            ("layer1/tanh", "head/sum"),
            ("head/sum", "multiply"),
            ("multiply", "loss"),
        ]
    )
    assert len(dot.edges) == 8


def test_edges_are_labelled_with_shape_and_dtype_symbolic_dims_by_name():
    g = ge.Graph()
    x = g.placeholder("x", (None, "T", 4), dtype="float64")
    ge.sin(ge.sum(ge.exp(x), axis=2))
    labels = {(a, b): attrs["label"] for a, b, attrs in Dot(ge.to_dot(g)).edges}
    assert labels == {
        ("x", "exp"): "(N, T, 4) float64",
        ("exp", "sum"): "(N, T, 4) float64",
        ("sum", "sin"): "(N, T) float64",
    }


def test_scopes_are_nested_clusters_and_labels_use_the_name_inside_the_scope():
    g = ge.Graph()
    x = g.placeholder("x", (2,))
    with g.name_scope("encoder"):
        with g.name_scope("block0"):
            y = ge.exp(x)
        z = ge.sin(y)
    dot = Dot(ge.to_dot(g))
    assert dot.clusters == ["encoder", "encoder/block0"]
    assert dot.cluster_of == {
        "x": (),
        "encoder/block0/exp": ("encoder", "encoder/block0"),
        "encoder/sin": ("encoder",),
    }
    assert dot.label("encoder/block0/exp") == ["exp"]
    assert dot.nodes[z.node]["tooltip"] == "encoder/sin"
    assert 'subgraph "cluster_encoder/block0" {\n      label="block0";' in dot.text


def test_each_kind_of_node_has_its_own_style():
    g = mlp()
    g.constant(np.float32(2.0), name="two")
    frozen = g.parameter("frozen", np.float32(1.0), trainable=False)
    extra = ge.exp(g.tensor("layer1/tanh") * g.tensor("two") * frozen, name="extra")
    g.mark_output("loss", extra)
    assert Dot(ge.to_dot(g)).nodes["loss"]["fillcolor"] == style.NODE_STYLES["output"]["fillcolor"]
    dot = Dot(ge.to_dot(g, loss="loss"))
    expected = {
        "x": "placeholder",
        "layer1/w": "parameter",
        "frozen": "frozen parameter",
        "two": "constant",
        "layer1/add": "operation",
        "extra": "output",
        "loss": "loss",
    }
    for node, kind in expected.items():
        for key, value in style.NODE_STYLES[kind].items():
            assert dot.nodes[node][key] == value, (node, key)
    assert len({fill(dot, n) for n in expected}) == len(expected)
    assert dot.label("two") == ["two", "2"]  # small constants show their value


def test_same_graph_gives_identical_dot_text_in_separate_processes():
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, {root!r})
        import graphengine as ge
        from tests.test_render import mlp
        g = ge.gradients(mlp(), "loss")
        sys.stdout.write(ge.to_dot(g, view="both", legend=True, collapse_depth=0))
    """).format(root=str(ROOT))
    texts = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        texts.append(
            subprocess.run(
                [sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True
            ).stdout
        )
    assert texts[0] == texts[1]
    assert texts[0] == ge.to_dot(
        ge.gradients(mlp(), "loss"), view="both", legend=True, collapse_depth=0
    )


GOLDEN = r"""digraph "tiny" {
  graph [rankdir="TB", fontname="Helvetica", fontsize="12", nodesep="0.25", ranksep="0.35", style="rounded", color="#ced4da", fontcolor="#495057", labeljust="l"];
  node [fontname="Helvetica", fontsize="10", penwidth="1.2"];
  edge [fontname="Helvetica", fontsize="8", arrowsize="0.7", color="#343a40"];
  "x" [style="filled", shape="ellipse", fillcolor="#d0ebff", color="#1c7ed6", tooltip="x", label="x"];
  subgraph "cluster_f" {
    label="f"; tooltip="f";
    "f/exp" [style="filled,rounded,bold", shape="box", fillcolor="#fff3bf", color="#e67700", peripheries="2", tooltip="f/exp", label="exp"];
  }
  "x" -> "f/exp" [color="#343a40", xlabel="(N,) float32"];
  label="tiny";
  labelloc="t";
}
"""


def test_golden_dot_text_of_a_tiny_graph():
    g = ge.Graph("tiny")
    x = g.placeholder("x", (None,))
    with g.name_scope("f"):
        ge.exp(x)
    assert ge.to_dot(g, legend=False) == GOLDEN


# -- gradient views --------------------------------------------------------------------


def test_gradient_view_is_the_backward_pass_alone():
    tg = ge.gradients(mlp(), "loss")
    dot = Dot(ge.to_dot(tg, view="gradient"))
    assert dot.drawn() == set(tg.gradient.nodes)
    assert dot.pairs("reads") == set() and dot.pairs("derived") == set()


def test_reads_draws_the_forward_nodes_gradient_rules_read_and_links():
    tg = ge.gradients(mlp(), "loss")
    grad_nodes = [n for n in tg.nodes if n.derived_from]
    assert {n.name for n in grad_nodes} == set(tg.gradient.nodes)
    dot = Dot(ge.to_dot(tg, view="gradient", reads=True))
    read = {ge.graph.parse_ref(r)[0] for n in grad_nodes for r in n.inputs}
    derived = {n.derived_from for n in grad_nodes}
    context = (read | derived) - set(tg.gradient.nodes)
    assert dot.drawn() == set(tg.gradient.nodes) | context
    for name in context:
        assert fill(dot, name) == style.CONTEXT_STYLE["fillcolor"]
    assert dot.label("layer1/tanh") == ["tanh"]  # in its cluster, so its short name
    for node in grad_nodes:
        assert fill(dot, node.name) in (
            style.NODE_STYLES["gradient"]["fillcolor"],
            style.NODE_STYLES["gradient helper"]["fillcolor"],
            style.NODE_STYLES["gradient output"]["fillcolor"],
        )
    # y * y in tanh's rule holds no gradient; the product with the incoming one does
    assert (
        fill(dot, "gradients/layer1/multiply") == style.NODE_STYLES["gradient helper"]["fillcolor"]
    )
    assert fill(dot, "gradients/layer1/multiply_1") == style.NODE_STYLES["gradient"]["fillcolor"]
    # expanded groups sit in a cluster that names the forward op; only the gradient
    # outputs get a dashed link to the tensor they are the gradient for
    outputs = {ge.graph.parse_ref(g)[0]: w for w, g in tg.gradient.grads.items()}
    assert dot.pairs("derived") == {(w, g) for g, w in outputs.items()}
    assert dot.cluster_of["gradients/layer1/multiply_1"] == ("layer1", "#gradient of layer1/tanh")
    assert 'label="∂ tanh"; tooltip="gradient of layer1/tanh";' in dot.text


def test_gradient_edges_run_against_the_forward_flow():
    tg = ge.gradients(mlp(), "loss")
    dot = Dot(ge.to_dot(tg, view="both"))
    expected = set()
    flow = {tg.gradient.nodes[0]}  # the seed, and what reads it: 1 - y*y holds no gradient
    for node in tg.nodes:
        if node.derived_from:
            for ref in node.inputs:
                producer = ge.graph.parse_ref(ref)[0]
                if producer in flow:
                    flow.add(node.name)
                    expected.add((node.name, producer))  # written consumer -> producer
    gradient_edges = dot.edges_of("gradient")
    assert {(a, b) for a, b, _ in gradient_edges} == expected
    assert all(attrs["dir"] == "back" for _, _, attrs in gradient_edges)
    assert all(attrs["color"] == style.GRADIENT_COLOR for _, _, attrs in gradient_edges)
    # forward values read by rules are drawn on request; constants read by rules dotted
    assert dot.pairs("reads") == set()
    assert ("layer1/tanh", "gradients/layer1/multiply") in Dot(
        ge.to_dot(tg, view="both", reads=True)
    ).pairs("reads")
    assert ("gradients/layer1/subtract", "gradients/layer1/constant") in dot.pairs("helper")
    assert ("gradients/layer1/multiply_1", "gradients/layer1/subtract") in dot.pairs("helper")
    assert dot.drawn() == {n.name for n in tg.nodes}
    # no construct that Graphviz 2.43 cannot rank in nested clusters
    assert "constraint" not in dot.text and "weight" not in dot.text


def test_gradient_nodes_sit_in_the_cluster_of_their_forward_scope():
    tg = ge.gradients(mlp(), "loss")
    dot = Dot(ge.to_dot(tg, view="both"))
    assert "gradients" not in dot.clusters
    assert dot.cluster_of["gradients/layer1/multiply_1"] == ("layer1", "#gradient of layer1/tanh")
    assert dot.cluster_of["gradients/head/add_n"] == ("head", "#gradient of head/sum")
    collapsed = Dot(ge.to_dot(tg, view="both", expand=False))
    assert collapsed.cluster_of["#gradient of layer1/tanh"] == ("layer1",)
    assert collapsed.label("#gradient of layer1/tanh") == ["∂ tanh", "4 ops"]
    assert collapsed.label("#gradient of layer1/add") == ["∂ add", "sum_like"]
    assert ("layer1/tanh", "#gradient of layer1/tanh") in collapsed.pairs("derived")
    assert ("#gradient of layer1/add", "#gradient of layer1/tanh") in collapsed.pairs("gradient")


def test_gradient_outputs_say_which_derivative_they_hold():
    tg = ge.gradients(mlp(), "loss")
    dot = Dot(ge.to_dot(tg, view="gradient"))
    assert dot.label("gradients/layer1/w") == ["∂L/∂w", "layer1/w"]
    assert dot.text.rstrip().endswith(
        'label="mlp_grad: gradient view, L = loss";\n  labelloc="t";\n}'
    )
    assert dot.cluster_of["gradients/layer1/w"] == ("layer1",)  # beside layer1/w
    assert dot.nodes["gradients/layer1/w"]["peripheries"] == "2"


def test_gradient_view_of_a_forward_graph_differentiates_the_named_loss():
    g = mlp()
    text = ge.to_dot(g, view="gradient", loss="loss")
    assert text == ge.to_dot(ge.gradients(g, "loss"), view="gradient")
    with pytest.raises(ge.RenderError, match="--loss"):
        ge.to_dot(g, view="both")
    g.set_training("loss")  # the loss of the graph's training spec
    assert ge.to_dot(g, view="gradient") == text


def test_gradient_view_works_from_derived_from_alone():
    # a graph as another tool might write it: no GradientInfo, only derived_from
    g = ge.Graph("hand")
    x = g.placeholder("x", (3,))
    ge.exp(x, name="y")
    t = TensorType(np.float32, (3,))
    g.add_node(
        Node(
            "gradients/dy",
            "placeholder",
            (),
            {"dtype": np.dtype("float32"), "shape": (3,)},
            (t,),
            "gradients",
            "y",
        )
    )
    g.add_node(Node("gradients/dx", "multiply", ("gradients/dy", "y"), {}, (t,), "gradients", "y"))
    assert Dot(ge.to_dot(g, view="gradient")).drawn() == {"gradients/dy", "gradients/dx"}
    dot = Dot(ge.to_dot(g, view="gradient", reads=True, expand=False))
    assert dot.drawn() == {"y", "#gradient of y"}
    assert dot.pairs("derived") == {("y", "#gradient of y")}
    dot = Dot(ge.to_dot(g, view="gradient", reads=True))
    assert dot.drawn() == {"y", "gradients/dy", "gradients/dx"}
    assert dot.pairs("gradient") == {("gradients/dx", "gradients/dy")}
    assert dot.pairs("reads") == {("y", "gradients/dx")}
    assert Dot(ge.to_dot(g)).drawn() == {"x", "y"}


# -- collapse and scope ----------------------------------------------------------------


def test_collapse_depth_zero_draws_each_top_level_scope_as_one_box():
    dot = Dot(ge.to_dot(mlp(), collapse_depth=0))
    assert dot.drawn() == {"x", "#box layer1", "#box head", "multiply", "loss"}
    assert dot.clusters == []
    assert dot.label("#box layer1") == ["layer1", "5 nodes"]
    assert dot.nodes["#box layer1"]["shape"] == "box3d"
    labels = {(a, b): attrs["label"] for a, b, attrs in dot.edges}
    assert labels == {
        ("x", "#box layer1"): "(N, 3) float32",
        ("#box layer1", "#box head"): "(N, 3) float32",
        ("#box head", "multiply"): "(N,) float32",
        ("multiply", "loss"): "(N,) float32",
    }


def test_collapsed_edges_are_aggregated_and_count_their_tensors():
    g = ge.Graph()
    x = g.placeholder("x", (2,))
    with g.name_scope("a"), g.name_scope("b"):
        p, q = ge.exp(x), ge.sin(x)
        m = p > q
    ge.add(p, q, name="out")
    ge.where(m, p, q, name="pick")
    ge.negative(x, name="skip")
    dot = Dot(ge.to_dot(g, collapse_depth=2))
    assert dot.clusters == ["a"]
    assert dot.cluster_of["#box a/b"] == ("a",)
    # edges between clusters carry their label as an xlabel (see render/dot.py)
    assert {(a, b): attrs.get("label", attrs.get("xlabel")) for a, b, attrs in dot.edges} == {
        ("x", "#box a/b"): "(2,) float32",
        ("#box a/b", "out"): "2 × (2,) float32",
        ("#box a/b", "pick"): "3 tensors",
        ("x", "skip"): "(2,) float32",
    }
    assert Dot(ge.to_dot(g, collapse_depth=1)).label("#box a") == ["a", "3 nodes"]
    assert ge.to_dot(g, collapse_depth=0) == ge.to_dot(g, collapse_depth=1)


def test_collapse_keeps_forward_and_gradient_boxes_apart():
    tg = ge.gradients(mlp(), "loss")
    dot = Dot(ge.to_dot(tg, view="both", collapse_depth=0))
    assert {"#box layer1", "#gradient box layer1", "#box head", "#gradient box head"} <= dot.drawn()
    assert fill(dot, "#gradient box layer1") == style.NODE_STYLES["gradient scope box"]["fillcolor"]
    assert ("#gradient box layer1", "#gradient box head") in dot.pairs("gradient")
    assert ("#box layer1", "#gradient box layer1") in dot.pairs("derived")


def test_a_5000_node_graph_collapses_to_one_box_per_scope():
    g = bench_graph(50, 100)
    assert len(g) > 5000
    dot = Dot(ge.to_dot(g, collapse_depth=0))
    boxes = {n for n in dot.drawn() if n.startswith("#box ")}
    assert len(boxes) == 50
    assert len(dot.edges) < 60


def test_scope_draws_one_scope_alone_with_its_inputs_faded():
    dot = Dot(ge.to_dot(mlp(), scope="layer1"))
    assert dot.drawn() == {
        "x",
        "layer1/w",
        "layer1/b",
        "layer1/multiply",
        "layer1/add",
        "layer1/tanh",
    }
    assert fill(dot, "x") == style.CONTEXT_STYLE["fillcolor"]
    with pytest.raises(ge.RenderError, match="top-level scopes are head, layer1"):
        ge.to_dot(mlp(), scope="decoder")


def test_scope_of_the_gradient_view_accepts_the_gradients_prefix():
    tg = ge.gradients(mlp(), "loss")
    a = ge.to_dot(tg, view="gradient", scope="head", reads=True)
    assert a == ge.to_dot(tg, view="gradient", scope="gradients/head", reads=True)
    chosen = {
        n
        for n, attrs in Dot(a).nodes.items()
        if not n.startswith("#legend") and attrs["fillcolor"] != style.CONTEXT_STYLE["fillcolor"]
    }
    assert chosen == {"gradients/head/add_n", "gradients/head/broadcast_like"}
    # nodes outside the scope show their full name; those inside, their short one
    assert Dot(a).label("gradients/multiply") == ["gradients/multiply"]
    assert Dot(a).label("gradients/head/add_n") == ["add_n"]


def test_bad_view_and_depth_are_refused():
    with pytest.raises(ge.RenderError, match="unknown view 'backward'"):
        ge.to_dot(mlp(), view="backward")
    with pytest.raises(ge.RenderError, match="collapse depth must be 0 or more"):
        ge.to_dot(mlp(), collapse_depth=-1)


# -- values ------------------------------------------------------------------------------


def test_format_value_writes_small_tensors_in_full_and_summarises_larger_ones():
    assert format_value(np.float32(0.5)) == ["0.5"]
    assert format_value(np.arange(6).reshape(2, 3)) == ["[[0, 1, 2], [3, 4, 5]]"]
    assert format_value(np.array([True, False])) == ["[true, false]"]
    big = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert format_value(big) == ["(3, 4) mean 5.5 std 3.452", "min 0 max 11"]


def test_feeds_annotate_every_node_with_its_value():
    g = mlp()
    dot = Dot(ge.to_dot(g, feeds={"x": X}))
    values = ge.run(g, [n.name for n in g.nodes], {"x": X})
    for name, value in values.items():
        assert f"value {format_value(value)[0]}" in dot.label(name)
    assert "grad" not in dot.text


def test_grad_annotates_forward_tensors_with_d_loss_d_tensor():
    g = mlp()
    dot = Dot(ge.to_dot(g, feeds={"x": X}, grad=True, loss="loss"))
    # reference by hand: loss = mean(y^2), y = sum(tanh(x*w + b), axis=1)
    w, b = g.values["layer1/w"], g.values["layer1/b"]
    h = np.tanh(X * w + b)
    dy = 2 * h.sum(axis=1) / len(X)
    dh = np.repeat(dy[:, None], 3, axis=1)
    dz = dh * (1 - h * h)
    expected = {
        "loss": np.float32(1),
        "head/sum": dy,
        "layer1/tanh": dh,
        "layer1/add": dz,
        "layer1/b": dz.sum(axis=0),
        "layer1/w": (dz * X).sum(axis=0),
        "x": dz * w,
    }
    for name, grad in expected.items():
        line = next(line for line in dot.label(name) if line.startswith("grad "))
        got = np.array(json.loads(line[5:]), np.float64)  # 4 significant digits
        np.testing.assert_allclose(got, grad, rtol=1e-3, err_msg=name)


def test_values_from_a_run_annotate_gradients_of_a_gradient_graph():
    tg = ge.gradients(mlp(), "loss")
    values = ge.run(tg, tg.outputs, {"x": X})
    dot = Dot(ge.to_dot(tg, view="both", values=values, grad=True))
    grad_w = format_value(values["gradients/layer1/w"])[0]
    assert f"grad {grad_w}" in dot.label("layer1/w")
    assert f"value {grad_w}" in dot.label("gradients/layer1/w")


def test_grad_without_numbers_or_loss_is_refused():
    with pytest.raises(ge.RenderError, match="need a loss"):
        ge.to_dot(mlp(), feeds={"x": X}, grad=True)
    with pytest.raises(ge.RenderError, match="pass feeds"):
        ge.to_dot(mlp(), grad=True, loss="loss")


# -- files and Graphviz -------------------------------------------------------------------


@needs_dot
@pytest.mark.parametrize(
    "suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")]
)
def test_render_writes_real_images_with_dot(tmp_path, suffix, magic):
    tg = ge.gradients(mlp(), "loss")
    path = ge.render(
        tg, tmp_path / f"model{suffix}", view="both", legend=True, feeds={"x": X}, grad=True
    )
    data = path.read_bytes()
    assert data.startswith(magic) and len(data) > 1000
    if suffix == ".svg":
        assert "gradients/layer1/multiply_1" in data.decode()  # tooltips keep full names


@needs_dot
def test_render_svg_is_what_a_notebook_shows():
    svg = ge.gradients(mlp(), "loss")._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "∂L/∂w" in svg
    assert "<svg" in render_svg(mlp())
    big = render_svg(bench_graph(4, 100))  # above the node budget: one box per layer scope
    assert big.count(">5 nodes<") == 80 and ">tanh<" not in big


def test_dot_output_needs_no_graphviz_and_images_say_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("GRAPHENGINE_DOT", raising=False)
    path = ge.render(mlp(), tmp_path / "m.dot")
    assert path.read_text() == ge.to_dot(mlp())
    with pytest.raises(ge.RenderError) as info:
        ge.render(mlp(), tmp_path / "m.png")
    message = str(info.value)
    assert "apt-get install graphviz" in message and "brew install graphviz" in message
    assert "conda" in message and not (tmp_path / "m.png").exists()


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ge.RenderError, match="unknown format 'jpeg'"):
        ge.render(mlp(), tmp_path / "m.jpeg")


# -- the command line ---------------------------------------------------------------------


def test_cli_passes_every_option_to_render(tmp_path, capsys):
    from graphengine.cli.main import main

    ge.save(mlp(), tmp_path / "model.pb")
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "m.dot"
    argv = [
        "render",
        str(tmp_path / "model.pb"),
        "-o",
        str(out),
        "--view",
        "both",
        "--loss",
        "loss",
        "--feed",
        f"x={tmp_path / 'x.npy'}",
        "--grad",
        "--legend",
        "--collapse-depth",
        "1",
        "--scope",
        "layer1",
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert out.read_text() == ge.to_dot(
        mlp(),
        view="both",
        loss="loss",
        feeds={"x": X},
        grad=True,
        legend=True,
        collapse_depth=1,
        scope="layer1",
    )


def test_a_saved_gradient_graph_draws_as_it_did_in_memory(tmp_path):
    from graphengine.cli.main import main

    tg = ge.gradients(mlp(), "loss")
    ge.save(tg, tmp_path / "grad.pb")
    assert (
        main(
            [
                "render",
                str(tmp_path / "grad.pb"),
                "-o",
                str(tmp_path / "g.dot"),
                "--view",
                "gradient",
            ]
        )
        == 0
    )
    assert (tmp_path / "g.dot").read_text() == ge.to_dot(tg, view="gradient")


def test_cli_errors_are_one_line_with_exit_code_1(tmp_path, capsys):
    from graphengine.cli.main import main

    ge.save(mlp(), tmp_path / "model.pb")
    model, out = str(tmp_path / "model.pb"), str(tmp_path / "m.dot")
    cases = [
        (["--grad"], "CommandError: --grad writes gradients computed from data"),
        (["--feed", "x"], "CommandError: --feed 'x': expected NAME=FILE"),
        (["--view", "gradient"], "RenderError: graph 'mlp' holds no gradient nodes"),
        (["--scope", "nope"], "RenderError: no node to draw in scope 'nope'"),
    ]
    for extra, message in cases:
        assert main(["render", model, "-o", out, *extra]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"graphengine render: {message}") and err.count("\n") == 1
