"""Every op of the registry has a forward spec, and every differentiable op a
gradient spec: adding an op without tests fails here."""

import importlib
import pkgutil

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
