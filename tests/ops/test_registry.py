"""Every op of the registry has a forward spec, every differentiable op a
gradient spec to second order, and the declarations beside the kernel (views,
random, state updates) are true: adding an op without tests fails here."""

import importlib
import pkgutil

import numpy as np
import pytest

import graphengine as ge
import tests.ops as ops_tests

SOURCES = {"placeholder", "parameter", "constant"}  # tested in test_graph and test_serialize


def all_specs():
    specs = []
    for info in pkgutil.iter_modules(ops_tests.__path__):
        if info.name.startswith("test_"):
            module = importlib.import_module(f"tests.ops.{info.name}")
            specs += getattr(module, "SPECS", [])
    return specs


def test_every_op_has_a_forward_spec():
    covered = {s.op for s in all_specs()}
    missing = sorted(set(ge.ops.REGISTRY) - covered - SOURCES)
    assert not missing, f"ops without a spec row in tests/ops: {missing}"


def test_every_differentiable_op_has_a_gradient_spec():
    covered = {s.op for s in all_specs() if s.grad_positions()}
    differentiable = {n for n, op in ge.ops.REGISTRY.items() if op.differentiable}
    missing = sorted(differentiable - covered)
    assert not missing, f"differentiable ops without a gradient check: {missing}"


def test_specs_name_registered_ops():
    unknown = sorted({s.op for s in all_specs()} - set(ge.ops.REGISTRY))
    assert not unknown, f"spec rows for ops that do not exist: {unknown}"


def _node_values(spec):
    """Each node of the spec's graph with the arrays its kernel gets and returns."""
    from graphengine.executor import RunContext
    from tests.ops.spec import make_graph

    g, _, feeds = make_graph(spec)
    context = RunContext()
    context.training = spec.training
    for node in g.nodes:
        if not node.inputs:
            continue
        args = ge.run(g, list(node.inputs), feeds, training=spec.training)
        arrays = [args[ref] for ref in node.inputs]
        attrs = dict(node.attrs)
        if node.opdef.uses_context:
            attrs["ctx"] = context
        out = node.opdef.kernel(*arrays, **attrs)
        outs = list(out) if node.opdef.multi_output else [out]
        yield node, arrays, outs


def test_views_are_declared():
    """A kernel output that shares memory with an input must be declared in the
    op's view_map (or alias), or the executor would hand users live views."""
    undeclared = set()
    for spec in all_specs():
        for node, arrays, outs in _node_values(spec):
            for k, out in enumerate(outs):
                for i, array in enumerate(arrays):
                    if np.shares_memory(out, array) and node.opdef.view_of(k) != i:
                        undeclared.add(f"{node.op}: output {k} is a view of input {i}")
    assert not undeclared, sorted(undeclared)


def test_declarations_name_real_inputs():
    for name, op in ge.ops.REGISTRY.items():
        for k in range(len(op.outputs)):
            source = op.view_of(k)
            assert source is None or source < max(len(op.inputs), 1), name
        assert all(0 <= i < len(op.inputs) for i in op.state_inputs()), name


def test_random_ops_are_never_shared(monkeypatch):
    """Common-subexpression sharing reads the ``random`` declaration, not op names."""
    from graphengine.simplify import cse_key

    attrs = {"rate": 0.5, "seed": 0}
    assert cse_key("dropout", ["x"], attrs) is None
    assert cse_key("exp", ["x"], {}) is not None
    monkeypatch.setattr(type(ge.ops.get_op("exp")), "random", True)
    assert cse_key("exp", ["x"], {}) is None


def test_view_random_and_state_flags_are_declared_on_the_ops():
    get = ge.ops.get_op
    assert get("identity").alias and get("stop_gradient").alias
    assert get("dropout").random and not get("exp").random
    assert [get("batch_norm").inputs[i].name for i in get("batch_norm").state_inputs()] == [
        "running_mean",
        "running_var",
    ]
    assert get("sum_like").internal and not get("sum").internal
    assert get("split").multi_output and get("dropout").multi_output
    assert not get("exp").multi_output


def test_bad_declarations_are_refused_at_registration():
    from graphengine.ops.registry import Attr, Input, OpDef, StateUpdate, register

    class BadView(OpDef):
        name = "bad_view_test_op"
        inputs = (Input("x"),)
        view_map = {0: 3}
        vjp = None

    class BadState(OpDef):
        name = "bad_state_test_op"
        inputs = (Input("x"),)
        state_updates = (StateUpdate("running", "y", "momentum"),)
        vjp = None

    class BadAttrKind(OpDef):
        name = "bad_attr_kind_test_op"
        inputs = (Input("x"),)
        attrs = (Attr("axis", "integer"),)
        vjp = None

    for cls in (BadView, BadState, BadAttrKind):
        with pytest.raises(TypeError, match=cls.name):
            register(cls)
        assert cls.name not in ge.ops.REGISTRY


def test_every_differentiable_op_has_a_second_order_row():
    """Gradient rules emit differentiable nodes, so second order is checked for
    every op (OpSpec.order2 is on unless a row opts out)."""
    covered = {s.op for s in all_specs() if s.order2 and s.grad_positions()}
    differentiable = {n for n, op in ge.ops.REGISTRY.items() if op.differentiable}
    missing = sorted(differentiable - covered)
    assert not missing, f"differentiable ops without a second-order gradient row: {missing}"
