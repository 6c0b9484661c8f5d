"""tools/onnx_node_cases.py on a few cases built here: its judges and its counting.

The full run (1884 cases, minutes) gives the README's table; this checks, in
about a second, that each case is judged as the tool's docstring says and
counted in the rows it belongs to, whatever the absolute figures are.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper  # noqa: E402
from onnx.backend.test.case.test_case import TestCase  # noqa: E402

from tests.onnx_helpers import make_model  # noqa: E402

_PATH = Path(__file__).resolve().parents[2] / "tools" / "onnx_node_cases.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("onnx_node_cases", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _case(name, nodes, inputs, outputs, expected):
    model = make_model(nodes, {k: v for k, v in inputs.items()}, list(outputs))
    return TestCase(
        name=name,
        model_name=name,
        url=None,
        model_dir=None,
        model=model,
        data_sets=[(list(inputs.values()), list(expected))],
        kind="node",
        rtol=1e-3,
        atol=1e-7,
    )


X = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)


def _cases():
    relu = helper.make_node("Relu", ["x"], ["y"])
    return {
        # One node of an op both had then: every row.
        "relu": _case("relu", [relu], {"x": X}, ["y"], [np.maximum(X, 0)]),
        # A wrong expected value: both fail.
        "relu_wrong": _case("relu_wrong", [relu], {"x": X}, ["y"], [np.maximum(X, 0) + 1]),
        # Two nodes of issue-12 ops: not single-node.
        "relu_neg": _case(
            "relu_neg",
            [relu, helper.make_node("Neg", ["y"], ["z"])],
            {"x": X},
            ["z"],
            [-np.maximum(X, 0)],
        ),
        # An op imported since issue 12 (Erf): our op set, not issue 12's.
        "erf": _case(
            "erf",
            [helper.make_node("Erf", ["x"], ["y"])],
            {"x": X},
            ["y"],
            [np.array([[-0.8427008, 0.9953223], [0.9999779, -1.0]], np.float32)],
        ),
        # Refused by the importer, which the backend runs on the first run:
        # ReduceProd of run-time data (we compute it only of known values).
        "prod": _case(
            "prod",
            [helper.make_node("ReduceProd", ["x"], ["y"], keepdims=0)],
            {"x": X},
            ["y"],
            [np.array(np.prod(X), np.float32)],
        ),
        # An op with no import rule (Det): refused by us, run by onnxruntime.
        "det": _case(
            "det",
            [helper.make_node("Det", ["x"], ["y"])],
            {"x": X},
            ["y"],
            [np.array(np.linalg.det(X), np.float32)],
        ),
    }


def test_each_judge_says_pass_refused_or_fail(tool):
    cases = _cases()
    assert [tool.run_ours(cases[k]) for k in ("relu", "relu_wrong", "erf", "prod", "det")] == [
        "pass",
        "fail",
        "pass",
        "refused",
        "refused",
    ]
    assert [tool.run_onnxruntime(cases[k]) for k in ("relu", "relu_wrong", "det")] == [
        "pass",
        "fail",
        "pass",
    ]


def test_each_case_counts_in_the_rows_it_belongs_to(tool):
    cases = _cases()
    # Scripted judges, so that only the counting is under test.
    ours = {
        "relu": "pass",
        "relu_wrong": "fail",
        "relu_neg": "pass",
        "erf": "pass",
        "prod": "refused",
        "det": "refused",
    }
    theirs = {
        "relu": "pass",
        "relu_wrong": "fail",
        "relu_neg": "fail",
        "erf": "pass",
        "prod": "pass",
        "det": "pass",
    }
    rows, others = tool.count(
        cases.values(), ours=lambda c: ours[c.name], theirs=lambda c: theirs[c.name]
    )
    members = {
        "our op set": ["relu", "relu_wrong", "relu_neg", "erf", "prod"],
        "issue 12's op set": ["relu", "relu_wrong", "relu_neg"],
        "issue 12's op set, single-node": ["relu", "relu_wrong"],
        "every case": list(cases),
    }
    assert list(rows) == list(members)
    for row, names in members.items():
        expected = {"cases": len(names)}
        for name in names:
            expected[f"ge {ours[name]}"] = expected.get(f"ge {ours[name]}", 0) + 1
            expected[f"ort {theirs[name]}"] = expected.get(f"ort {theirs[name]}", 0) + 1
        assert dict(rows[row]) == expected, row
    assert others == [
        ("relu_wrong", "fail", "fail"),
        ("relu_neg", "pass", "fail"),
        ("prod", "refused", "pass"),
        ("det", "refused", "pass"),
    ]


def test_the_table_adds_up(tool):
    rows, _ = tool.count(_cases().values())
    lines = tool.table(rows)
    assert len(lines) == 2 + len(tool.ROWS)
    for line in lines[2:]:
        name, total, ge_pass, refused, fail, ort_pass, ort_fail = [
            cell.strip() for cell in line.strip("|").split("|")
        ]
        assert int(ge_pass) + int(refused) + int(fail) == int(total), line
        assert int(ort_pass) + int(ort_fail) == int(total), line
    assert re.search(r"\| every case \| 6 \| 3 \| 2 \| 1 \| 5 \| 1 \|", "\n".join(lines))


def test_the_issue_12_op_set_is_a_subset_of_ours(tool):
    from graphengine.onnx.import_rules import RULES

    assert tool.ISSUE_12_OPS <= set(RULES)
