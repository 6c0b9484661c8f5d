"""graphengine and onnxruntime on onnx's own node test cases, in one run.

Usage (from the repository root, with the [onnx] extra installed)::

    python tools/onnx_node_cases.py            # the table
    python tools/onnx_node_cases.py --list     # and every case that is not a pass

Each node case of the installed onnx (``onnx.backend.test``, kind "node") is run
through graphengine's ONNX backend and through onnxruntime's CPU session, and
both are judged by the runner's own comparison (``BackendTest.
assert_similar_outputs``: shape, dtype exactly, values to the case's
tolerances).  A case counts for graphengine as

* pass: every data set matches;
* refused: graphengine refuses the model with its own error before running
  (an op or element type it does not import, an attribute it lacks), when the
  backend checks it or when it imports it on the first run;
* fail: anything else (a wrong value, dtype or shape, or any other exception);

and for onnxruntime as pass or fail (refusing to load the model counts as a fail,
as onnx's runner counts it).  Rows:

* "our op set": the cases whose ops all have a graphengine import rule now;
* "issue 12's op set": the cases whose ops all had an import rule when issue 12
  was filed (:data:`ISSUE_12_OPS`, the 103 rules at commit 8afa397), and
  "single-node" the cases of those with one node (no ``_expanded`` function
  bodies);
* "every case".

The issue's own figure (536 cases "for the ops we claim", onnxruntime passing
466) is not reproduced by any of these rows; see the README's ONNX section.

``--select TEXT`` runs only the cases whose name contains TEXT (for a quick look).
"""

from __future__ import annotations

import argparse
import collections
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx.backend.test.loader import load_model_tests  # noqa: E402
from onnx.backend.test.runner import Runner, _normalize_tensor  # noqa: E402

from graphengine.errors import GraphEngineError  # noqa: E402
from graphengine.onnx.backend import GraphEngineBackend  # noqa: E402
from graphengine.onnx.errors import OnnxConversionError  # noqa: E402
from graphengine.onnx.import_rules import RULES  # noqa: E402


def _data(case):
    for inputs, outputs in case.data_sets:
        yield [_normalize_tensor(i) for i in inputs], [_normalize_tensor(o) for o in outputs]


def run_ours(case) -> str:
    try:
        rep = GraphEngineBackend.prepare(case.model)
    except GraphEngineError:
        return "refused"
    except Exception:  # noqa: BLE001  (anything else is a failure of ours)
        return "fail"
    try:
        for inputs, expected in _data(case):
            got = rep.run(inputs)
            Runner.assert_similar_outputs(expected, list(got), case.rtol, case.atol)
    except OnnxConversionError:
        # The backend imports when it first runs (binding inputs that feed shapes):
        # a refusal of the importer is still a refusal before anything ran.
        return "refused"
    except Exception:  # noqa: BLE001
        return "fail"
    return "pass"


def run_onnxruntime(case) -> str:
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(
            case.model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in session.get_inputs()]
        for inputs, expected in _data(case):
            got = session.run(None, dict(zip(names, inputs)))
            Runner.assert_similar_outputs(expected, got, case.rtol, case.atol)
    except Exception:  # noqa: BLE001
        return "fail"
    return "pass"


#: The ONNX ops that had a graphengine import rule when issue 12 was filed: the
#: keys of ``RULES`` at commit 8afa397 (the last before the issue's work), read with
#: ``git archive 8afa397 graphengine`` and ``import graphengine.onnx.importer``.
ISSUE_12_OPS = frozenset(
    """
    Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast CastLike Ceil Celu Clip
    Concat Constant ConstantOfShape Conv Cos Cosh Div Dropout Einsum Elu Equal Exp Expand
    Flatten Floor Gather Gelu Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual
    HardSigmoid HardSwish Hardmax Identity IsInf IsNaN LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax MatMul Max MaxPool Mean Min Mish Mod Mul Neg
    NegativeLogLikelihoodLoss Not OneHot Or PRelu Pad Pow RMSNormalization Range Reciprocal
    ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceSum
    ReduceSumSquare Relu Reshape Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
    SoftmaxCrossEntropyLoss Softplus Softsign Split Sqrt Squeeze Sub Sum Swish Tan Tanh
    ThresholdedRelu Tile Transpose Unsqueeze Where Xor
    """.split()
)
assert len(ISSUE_12_OPS) == 103


def _ops(case) -> set[str]:
    return {n.op_type for n in case.model.graph.node}


#: Row name -> whether a case counts in it.
ROWS = {
    "our op set": lambda case: _ops(case) <= set(RULES),
    "issue 12's op set": lambda case: _ops(case) <= ISSUE_12_OPS,
    "issue 12's op set, single-node": lambda case: (
        len(case.model.graph.node) == 1 and _ops(case) <= ISSUE_12_OPS
    ),
    "every case": lambda case: True,
}


def count(cases, ours=run_ours, theirs=run_onnxruntime):
    """Run each case through ``ours`` and ``theirs``; return the rows (row name ->
    Counter of ``cases``, ``ge pass|refused|fail``, ``ort pass|fail``) and the
    (name, ours, theirs) of every case that is not a pass for both."""
    rows: dict[str, collections.Counter] = {name: collections.Counter() for name in ROWS}
    others = []
    for case in cases:
        mine, other = ours(case), theirs(case)
        for group in [name for name, counts_in in ROWS.items() if counts_in(case)]:
            rows[group][f"ge {mine}"] += 1
            rows[group][f"ort {other}"] += 1
            rows[group]["cases"] += 1
        if mine != "pass" or other != "pass":
            others.append((case.name, mine, other))
    return rows, others


def table(rows) -> list[str]:
    lines = [
        "| cases | count | graphengine pass | refused | fail | onnxruntime pass | fail |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in rows.items():
        lines.append(
            f"| {name} | {c['cases']} | {c['ge pass']} | {c['ge refused']} | {c['ge fail']} "
            f"| {c['ort pass']} | {c['ort fail']} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the cases that do not pass")
    parser.add_argument("--select", default="", help="run only cases whose name contains this")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    with np.errstate(all="ignore"):
        cases = [c for c in load_model_tests(kind="node") if args.select in c.name]
        rows, others = count(cases)
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, {len(cases)} node cases")
    print()
    print("\n".join(table(rows)))
    if args.list:
        print()
        for name, ours, theirs in others:
            print(f"{name}: graphengine {ours}, onnxruntime {theirs}")


if __name__ == "__main__":
    main()
