"""Reading files written with an older op set.

Opset 2 replaced the 2-D pooling ops of opset 1 (``max_pool2d``, ``avg_pool2d``)
with the N-d ``max_pool`` and ``avg_pool``, which take ``dilation`` and
``ceil_mode`` and whose max pool also returns the window maxima's indices.  A
forward node of opset 1 means exactly the new op with dilation 1 and floor
rounding, so it is renamed on read.  Opset 1's pooling *gradient* nodes found
the maxima again in the backward pass; the new gradient reads the indices
instead, so no rename keeps their meaning: a gradient section holding them is
built again from its loss and wrt tensors (:func:`needs_new_gradient`), with a
warning.
"""

from __future__ import annotations

from typing import Any

from ..compiler import NodeRecord

#: Opset-1 forward ops and the opset-2 op that computes the same thing.
_RENAMED_POOLS = {"max_pool2d": "max_pool", "avg_pool2d": "avg_pool"}
#: Opset-1 gradient ops with no equivalent node in opset 2.
_RETIRED_GRADIENTS = frozenset({"max_pool2d_grad", "max_pool2d_gather", "avg_pool2d_grad"})


def needs_new_gradient(ops: list[str], opset: int) -> bool:
    """Whether a gradient section with these ops, from a file of ``opset``, must be
    built again because it uses an op that no longer exists."""
    return opset < 2 and any(op in _RETIRED_GRADIENTS for op in ops)


def upgrade_node(record: NodeRecord, opset: int) -> NodeRecord:
    """``record`` in the current op set; ``opset`` is the file's."""
    if opset >= 2 or record.op not in _RENAMED_POOLS:
        return record
    attrs: dict[str, Any] = dict(record.attrs)
    attrs.setdefault("dilation", (1, 1))
    attrs.setdefault("ceil_mode", False)
    return NodeRecord(
        record.name,
        _RENAMED_POOLS[record.op],
        record.inputs,
        attrs,
        record.scope,
        record.derived_from,
    )
