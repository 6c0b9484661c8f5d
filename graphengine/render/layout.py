"""The shape of a drawing: which way the flow runs, and where a long one wraps.

``dot`` puts every unit on a rank (a row when the flow runs top to bottom), so a
deep network, a transformer layer say, becomes a strip 4 times as tall as it is
wide, whichever way it runs.  To keep the page near 4:3, a long flow is cut into
*columns* (rows when it runs left to right) at the boundaries of its top-level
scopes, never inside one: the first column starts at the top, and so does each
next one, beside it.

Two constructs do that, both of which Graphviz 2.43 ranks inside nested clusters
(it fails on ``constraint=false`` and ``weight=0``; see dot.py):

* an edge from one column into a later one is written the other way round, with
  ``dir`` flipped, so the arrow still shows the flow but ``dot`` no longer ranks
  the later column below the earlier one;
* an invisible anchor node at the top has an invisible edge into the first units
  of each later column (a few parallel edges: each counts once, so together they
  outweigh the reversed edges that pull the column down).

The estimate of a drawing's size uses longest-path ranks, as dot ranks, the
widest rank and the mean label size; it picks the direction and the number of
columns whose estimated picture is nearest 4:3.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .selection import Selection

Edge = tuple[str, str, dict[str, str]]
Statements = dict[str, tuple[dict[str, str], list[str]]]

#: Directions: forward flow top to bottom, or left to right.
DIRECTIONS = ("auto", "TB", "LR")

#: The most columns a flow is cut into.
MAX_COLUMNS = 5

#: The id of the invisible node the columns hang from.
ANCHOR = "#top"

#: How many invisible edges tie each column's first units to the anchor.
_ANCHOR_EDGES = 3

#: Inches per character of a 10-point label, and per label line.
_CHAR_WIDTH, _LINE_HEIGHT = 0.075, 0.17

#: The page shape aimed at: width over height.
_PAGE = 4 / 3

#: A flow is cut into columns only when its one-column estimate is further than
#: this factor from the page shape: a picture between 1:1.5 and 2.7:1 stays as
#: dot draws it.
_WRAP_BEYOND = 2.0

#: A drawing whose longer side is estimated at most this many inches is never
#: wrapped: it fits a page (or a screen) as it is.
_PAGE_SIDE = 16.0

#: Columns are cut only when the deepest is at most this part of the whole flow.
_SHALLOWER = 0.75

#: How much wider (across the flow) and longer (along it) dot draws than the
#: widest rank and the rank count alone say: edge labels beside edges, nodes
#: spread to uncross edges, cluster margins.  Measured on the gallery's twelve
#: views with dot 2.43 and 14.1 (across 2.3-2.6, along 1.0-1.4).
_SPREAD = (2.4, 1.25)


@dataclass
class Layout:
    """``rankdir`` for dot, the column of each unit (all 0 when not wrapped) and the
    estimated rank of each unit."""

    rankdir: str
    column: dict[str, int]
    rank: dict[str, int]

    @property
    def columns(self) -> int:
        return 1 + max(self.column.values(), default=0)


def choose_layout(
    sel: Selection, edges: list[Edge], statements: Statements, direction: str = "auto"
) -> Layout:
    """The direction (``direction`` unless ``"auto"``) and the columns whose
    estimated picture is nearest a 4:3 page."""
    units = list(statements)
    rank = _ranks(units, edges)
    if not rank:
        return Layout("TB" if direction == "auto" else direction, {}, {})
    widths = [
        max(len(line) for line in lines) * _CHAR_WIDTH + 0.3 for _, lines in statements.values()
    ]
    heights = [len(lines) * _LINE_HEIGHT + 0.2 for _, lines in statements.values()]
    unit_size = (sum(widths) / len(widths), sum(heights) / len(heights))
    groups = _top_groups(sel, units)
    settled = _settle(units, edges, rank)
    best: tuple[float, Layout] | None = None
    for rankdir in ("TB", "LR") if direction == "auto" else (direction,):
        # Rows of a left-to-right flow read badly (each row starts where the one
        # above ended): only a top-to-bottom flow wraps.
        for count in range(1, MAX_COLUMNS + 1 if rankdir == "TB" else 2):
            column = _columns(units, settled, groups, count)
            if count > 1 and max(column.values()) + 1 < count:
                break  # too few top-level scopes to cut this many columns
            if count > 1 and _deepest(settled, column) > _SHALLOWER * _deepest(settled, {}):
                break  # one scope spans most of the flow: columns would not shorten it
            size = _estimate(settled, column, unit_size, rankdir)
            off = abs(math.log(size[0] / size[1] / _PAGE))
            if best is None or off < best[0] - 1e-9:
                best = (off, Layout(rankdir, column, settled))
            if count == 1 and (off <= math.log(_WRAP_BEYOND) or max(size) <= _PAGE_SIDE):
                break  # near enough the page's shape, or small: no wrapping
    assert best is not None
    return best[1]


def wrap_edges(layout: Layout, edges: list[Edge]) -> tuple[list[Edge], list[str]]:
    """The edges with those into a later column written backwards, and the DOT
    lines of the anchor the columns hang from (none when not wrapped)."""
    if layout.columns == 1:
        return edges, []
    column = layout.column
    wrapped = []
    for a, b, attrs in edges:
        if column.get(a, 0) < column.get(b, 0):
            a, b, attrs = b, a, _reversed(attrs)
        wrapped.append((a, b, attrs))
    lines = [f'  "{ANCHOR}" [shape="point", style="invis", width="0", height="0", label=""];']
    for first in _column_tops(layout):
        lines += [f'  "{ANCHOR}" -> "{first}" [style="invis"];'] * _ANCHOR_EDGES
    return wrapped, lines


def _reversed(attrs: dict[str, str]) -> dict[str, str]:
    """Attributes of an edge written the other way round that draws the same."""
    flipped = {"back": "forward", "forward": "back", "both": "both", "none": "none"}
    out = {}
    for key, value in attrs.items():
        key = {"arrowhead": "arrowtail", "arrowtail": "arrowhead"}.get(key, key)
        out[key] = value
    out["dir"] = flipped[attrs.get("dir", "forward")]
    return out


def _column_tops(layout: Layout) -> list[str]:
    """The units on the first rank of each later column."""
    top: dict[int, int] = {}
    for unit, c in layout.column.items():
        top[c] = min(top.get(c, layout.rank[unit]), layout.rank[unit])
    return [u for u, c in layout.column.items() if c > 0 and layout.rank[u] == top[c]]


def _top_groups(sel: Selection, units: list[str]) -> dict[str, str]:
    """Each unit's top-level cluster, or the unit itself when it is at the top."""
    groups = {}
    for unit in units:
        cid = sel.cluster_of.get(unit, "")
        while cid and sel.clusters[cid].parent:
            cid = sel.clusters[cid].parent
        groups[unit] = cid or unit
    return groups


def _columns(
    units: list[str], rank: dict[str, int], groups: dict[str, str], count: int
) -> dict[str, int]:
    """Cut the top-level groups, in rank order, into at most ``count`` columns, each a
    run of consecutive groups, so that the deepest column is as shallow as can be."""
    if count == 1:
        return dict.fromkeys(units, 0)
    span: dict[str, list[int]] = {}
    for unit in units:
        lo_hi = span.setdefault(groups[unit], [rank[unit], rank[unit]])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], rank[unit]), max(lo_hi[1], rank[unit])
    order = sorted(span, key=lambda g: span[g][0])  # stable: ties keep graph order
    cuts = _balanced_cuts([span[g][0] for g in order], [span[g][1] for g in order], count)
    column_of_group = {}
    for c, (start, stop) in enumerate(zip(cuts, [*cuts[1:], len(order)])):
        for group in order[start:stop]:
            column_of_group[group] = c
    return {unit: column_of_group[groups[unit]] for unit in units}


def _balanced_cuts(lo: list[int], hi: list[int], count: int) -> list[int]:
    """Start indices of at most ``count`` runs of the groups (sorted by ``lo``) that
    minimise the deepest run's depth, max(hi) - lo[start] + 1; the linear partition
    problem, by dynamic programming over (runs used, groups covered)."""
    n = len(lo)
    count = min(count, n)
    inf = float("inf")
    # best[k][j]: the least deepest run covering groups j.. with k runs; then[k][j]
    # the start of the second run.
    best = [[inf] * (n + 1) for _ in range(count + 1)]
    then = [[n] * (n + 1) for _ in range(count + 1)]
    for k in range(count + 1):
        best[k][n] = 0
    for k in range(1, count + 1):
        for j in range(n - 1, -1, -1):
            deepest = -1
            for stop in range(j + 1, n + 1):  # the run j .. stop-1
                deepest = max(deepest, hi[stop - 1])
                if stop < n and k == 1:
                    continue
                cost = max(deepest - lo[j] + 1, best[k - 1][stop])
                if cost < best[k][j]:
                    best[k][j], then[k][j] = cost, stop
    cuts, j, k = [], 0, count
    while j < n:
        cuts.append(j)
        j, k = then[k][j], k - 1
    return cuts


def _estimate(
    rank: dict[str, int], column: dict[str, int], unit: tuple[float, float], rankdir: str
) -> tuple[float, float]:
    """Estimated width and height (inches) of the drawing: ranks times the mean unit
    and gap along the flow, the widest rank across it, each scaled by what dot
    makes of it on the gallery (see ``_SPREAD``; left to right, unscaled)."""
    w, h = unit
    across, along = 0.0, 0.0
    for c in set(column.values()) or {0}:
        ranks = [r for u, r in rank.items() if column.get(u, 0) == c]
        depth = max(ranks) - min(ranks) + 1
        breadth = max(_counts(ranks))
        if rankdir == "TB":
            across += breadth * (w + 0.25) * _SPREAD[0] + 0.3
            along = max(along, depth * (h + 0.5) * _SPREAD[1])
        else:
            across += breadth * (h + 0.25) + 0.3
            along = max(along, depth * (w + 0.35 + 0.9))  # + an edge label
    return (across, along) if rankdir == "TB" else (along, across)


def _deepest(rank: dict[str, int], column: dict[str, int]) -> int:
    """The most ranks one column spans."""
    spans: dict[int, list[int]] = {}
    for unit, r in rank.items():
        lo_hi = spans.setdefault(column.get(unit, 0), [r, r])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], r), max(lo_hi[1], r)
    return max(hi - lo + 1 for lo, hi in spans.values())


def _counts(values: Iterable[int]) -> list[int]:
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return list(counts.values())


def _ranks(units: list[str], edges: list[Edge]) -> dict[str, int]:
    """Longest-path ranks (Kahn's order; units left on a cycle keep rank 0)."""
    succ: dict[str, list[str]] = {u: [] for u in units}
    indegree = dict.fromkeys(units, 0)
    for a, b, _ in edges:
        if a in succ and b in indegree:
            succ[a].append(b)
            indegree[b] += 1
    rank = dict.fromkeys(units, 0)
    ready = [u for u in units if indegree[u] == 0]
    while ready:
        u = ready.pop()
        for v in succ[u]:
            rank[v] = max(rank[v], rank[u] + 1)
            indegree[v] -= 1
            if indegree[v] == 0:
                ready.append(v)
    return rank


def _settle(units: list[str], edges: list[Edge], rank: dict[str, int]) -> dict[str, int]:
    """Ranks as dot tends to draw them: each unit as late as its readers allow (so a
    source sits just above its first reader: the labels that the loss alone reads
    belong at the bottom, not at the top of the first column, and so does the
    gradient output of a bias, which is a source of the drawing's edges, drawn
    against the flow), and then each sink just below its last writer.  Readers
    that are sinks do not hold a unit up, unless it has no other."""
    succ: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for a, b, _ in edges:
        if a in rank and b in rank:
            succ.setdefault(a, []).append(b)
            pred.setdefault(b, []).append(a)
    late = dict(rank)
    for unit in sorted(units, key=lambda u: -rank[u]):  # readers first
        if unit in succ:
            held = [r for r in succ[unit] if r in succ] or succ[unit]
            late[unit] = max(0, min(late[r] for r in held) - 1)
    for unit in sorted(units, key=lambda u: rank[u]):
        if unit in pred and unit not in succ:
            late[unit] = max(late[w] for w in pred[unit]) + 1
    return late
