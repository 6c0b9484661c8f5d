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
  (an op or element type it does not import, an attribute it lacks);
* fail: anything else (a wrong value, dtype or shape, or any other exception);

and for onnxruntime as pass or fail (refusing to load the model counts as a fail,
as onnx's runner counts it).  Rows: the cases whose ops all have a graphengine
import rule ("our op set"), and every case.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the cases that do not pass")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with np.errstate(all="ignore"):
        cases = load_model_tests(kind="node")
    rows: dict[str, collections.Counter] = {
        "our op set": collections.Counter(),
        "every case": collections.Counter(),
    }
    others = []
    for case in cases:
        ours, theirs = run_ours(case), run_onnxruntime(case)
        ops = {n.op_type for n in case.model.graph.node}
        groups = ["every case"] + (["our op set"] if ops <= set(RULES) else [])
        for group in groups:
            rows[group][f"ge {ours}"] += 1
            rows[group][f"ort {theirs}"] += 1
            rows[group]["cases"] += 1
        if ours != "pass" or theirs != "pass":
            others.append((case.name, ours, theirs))
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, {len(cases)} node cases")
    print()
    print("| cases | count | graphengine pass | refused | fail | onnxruntime pass | fail |")
    print("|---|---|---|---|---|---|---|")
    for name, c in rows.items():
        print(
            f"| {name} | {c['cases']} | {c['ge pass']} | {c['ge refused']} | {c['ge fail']} "
            f"| {c['ort pass']} | {c['ort fail']} |"
        )
    if args.list:
        print()
        for name, ours, theirs in others:
            print(f"{name}: graphengine {ours}, onnxruntime {theirs}")


if __name__ == "__main__":
    main()
