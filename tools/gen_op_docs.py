"""Write docs/ops.md, the op reference, from the registry.

    python tools/gen_op_docs.py [--check]

Each op's entry comes from its declaration: the Python signature, inputs (with
dtypes, and whether gradients flow into them), attributes with kinds and
defaults, outputs, and the docstring with its formula and derivative.
``--check`` exits 1 when the committed page is stale (tests/test_op_docs.py).
"""

from __future__ import annotations

import argparse
import inspect
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "ops.md"

FAMILIES = [
    "elementwise",
    "reduce",
    "linalg",
    "shape",
    "indexing",
    "nn",
    "conv",
    "pool",
    "norm",
    "loss",
    "collective",
    "sources",
]


def _dtypes(names) -> str:
    return ", ".join(sorted(names))


def _entry(name: str, opdef, function) -> list[str]:
    internal = " (internal)" if opdef.internal else ""
    lines = [f"### `{name}`{internal}", ""]
    if function is not None:
        lines += [f"`ge.{name}{inspect.signature(function)}`", ""]
    doc = inspect.getdoc(type(opdef)) or ""
    lines += [doc, ""] if doc else []
    if opdef.inputs:
        lines.append("| input | dtypes | gradient |")
        lines.append("|---|---|---|")
        for spec in opdef.inputs:
            many = " (any number)" if spec.variadic else ""
            flows = "yes" if opdef.differentiable and spec.differentiable else "no"
            lines.append(f"| `{spec.name}`{many} | {_dtypes(spec.dtypes)} | {flows} |")
        lines.append("")
    if opdef.attrs:
        lines.append("| attribute | kind | default |")
        lines.append("|---|---|---|")
        for attr in opdef.attrs:
            lines.append(f"| `{attr.name}` | {attr.kind} | `{attr.default!r}` |")
        lines.append("")
    outputs = ", ".join(f"`{o}`" for o in opdef.outputs)
    grad = "has a gradient rule" if opdef.differentiable else "no gradient flows through it"
    lines += [f"Outputs: {outputs}; {grad}.", ""]
    return lines


def render() -> str:
    import graphengine as ge
    from graphengine.ops import api

    by_family: dict[str, list[str]] = {}
    for name, opdef in ge.ops.REGISTRY.items():
        family = type(opdef).__module__.rsplit(".", 1)[-1]
        by_family.setdefault(family, []).append(name)
    lines = [
        "# graphengine ops",
        "",
        "Generated from the op registry by `python tools/gen_op_docs.py`; do not edit.",
        "Internal ops are the ones gradient rules emit; they are reachable as",
        "`ge.ops.api.<name>` but not exported as `ge.<name>`.",
        "",
    ]
    for family in sorted(by_family, key=lambda f: FAMILIES.index(f) if f in FAMILIES else 99):
        module = sys.modules[f"graphengine.ops.{family}"]
        summary = (inspect.getdoc(module) or "").split("\n\n")[0].replace("\n", " ")
        lines += [f"## {family}", "", summary, ""]
        for name in sorted(by_family[family]):
            lines += _entry(name, ge.ops.REGISTRY[name], getattr(api, name, None))
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(
                f"{PAGE.relative_to(ROOT)} is stale; run python tools/gen_op_docs.py",
                file=sys.stderr,
            )
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
