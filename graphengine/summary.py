"""A Keras-like table of a graph's parameters: ``print(g.summary())`` and
``graphengine inspect FILE --params``.

One row per parameter, in graph order: its scope, its name within the scope,
shape, dtype, number of values and whether training updates it; then the
totals.  Scopes are the part of the name before the last ``/`` (or, for names
imported from PyTorch such as ``fc1.weight``, before the last ``.``).

>>> import numpy as np, graphengine as ge
>>> g = ge.Graph("tiny")
>>> x = g.placeholder("x", (None, 4))
>>> y = ge.nn.dense(x, 3)
>>> print(g.summary())
graph 'tiny': 2 parameters
scope  parameter  shape   dtype    count  trainable
-----  ---------  ------  -------  -----  ---------
dense  kernel     (4, 3)  float32     12  yes
dense  bias       (3,)    float32      3  yes
-----  ---------  ------  -------  -----  ---------
total: 15 values (15 trainable, 0 not), 60 B
"""

from __future__ import annotations

from typing import Any

from .graph import Graph


def parameter_rows(graph: Graph) -> list[dict[str, Any]]:
    """One dict per parameter: scope, parameter, shape, dtype, count, trainable."""
    rows = []
    for node in graph.parameters():
        value = graph.values[node.name]
        scope, sep, base = node.name.rpartition("/")
        if not sep:
            scope, sep, base = node.name.rpartition(".")
        rows.append(
            {
                "name": node.name,
                "scope": scope,
                "parameter": base,
                "shape": list(value.shape),
                "dtype": value.dtype.name,
                "count": int(value.size),
                "bytes": int(value.nbytes),
                "trainable": bool(node.attrs["trainable"]),
            }
        )
    return rows


def format_parameters(graph: Graph) -> str:
    """The table as text (see the module docstring)."""
    rows = parameter_rows(graph)
    header = ["scope", "parameter", "shape", "dtype", "count", "trainable"]
    cells = [
        [
            r["scope"] or "-",
            r["parameter"],
            str(tuple(r["shape"])),
            r["dtype"],
            f"{r['count']:,}",
            "yes" if r["trainable"] else "no",
        ]
        for r in rows
    ]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if i == 4 else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))
        ]
        return "  ".join(parts).rstrip()

    rule = line(["-" * w for w in widths])
    total = sum(r["count"] for r in rows)
    trained = sum(r["count"] for r in rows if r["trainable"])
    size = sum(r["bytes"] for r in rows)
    out = [f"graph '{graph.name}': {len(rows)} parameters", line(header), rule]
    out += [line(c) for c in cells]
    out += [
        rule,
        f"total: {total:,} values ({trained:,} trainable, {total - trained:,} not), "
        f"{_format_bytes(size)}",
    ]
    return "\n".join(out)


def _format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
