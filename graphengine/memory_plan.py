"""Static memory plans: preallocated output buffers for a compiled plan.

A plan's first run with a given set of input shapes is a recording run: it
notes the shape and dtype of every value and which outputs share memory with an
input (a reshape or transpose returning a view).  :func:`build_memory_plan`
then gives every step whose kernel is a numpy ufunc (the elementwise ops and
``matmul``, which all take ``out=``) an output buffer, allocated once and reused
by every later run with the same shapes:

* **liveness**: a buffer is busy from the step that fills it to the last read of
  it or of any view of it, and is then free for a later step of the same shape
  and dtype;
* **in place**: an elementwise step may write into the buffer of an input that
  dies at that step (numpy's ufuncs handle exact overlap);
* **aliasing**: parameters, constants and feeds never get a buffer (only values
  computed by the run do), and a fetched value, or a value a fetched view reads,
  is never planned unless the plan was compiled with ``reuse_fetch_buffers``
  (then the fetched arrays are valid until the next run, which overwrites them:
  the trainer, which consumes its gradients at once, asks for that).

Steps whose kernel takes no ``out=`` allocate as before.  The buffers of
``packed`` slots (the trainer's gradients for plain SGD) are laid back to back
in one array, so that one numpy call can update them all.  A step with several
outputs (softmax cross-entropy's loss and log-probabilities) gets a tuple of
buffers, one per output, None for an output it must allocate (one that is
fetched, or a view of an input).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Larger plans than this many steps are still planned; the limit is on how many
#: shape signatures one plan keeps buffers for.
MAX_SIGNATURES = 4


@dataclass
class Recording:
    """What a recording run saw: per step, its output arrays and, per output, the
    input positions it may share memory with."""

    outputs: list[list[Any]] = field(default_factory=list)
    shares: list[list[tuple[int, ...]]] = field(default_factory=list)
    #: Per step, the (shape, dtype) of each input (None for a non-array).
    inputs: list[tuple[tuple[tuple[int, ...], np.dtype] | None, ...]] = field(default_factory=list)

    def add(self, args: Sequence[Any], results: Sequence[Any]) -> None:
        self.outputs.append(list(results))
        self.inputs.append(
            tuple((a.shape, a.dtype) if isinstance(a, np.ndarray) else None for a in args)
        )
        self.shares.append(
            [
                tuple(
                    j
                    for j, a in enumerate(args)
                    if isinstance(r, np.ndarray)
                    and isinstance(a, np.ndarray)
                    and np.may_share_memory(r, a)
                )
                for r in results
            ]
        )


def build_memory_plan(
    steps: Sequence[Any],
    recording: Recording,
    fetch_slots: Sequence[int],
    reuse_fetch_buffers: bool,
    kernels: Sequence[Any] | None = None,
    packed: Sequence[int] = (),
) -> list[Any]:
    """One entry per step: the buffer its single output is written into, or None
    for a step that allocates its own result; for a step with several outputs, a
    tuple with a buffer or None per output (None for the whole step when no
    output is planned).

    ``kernels`` gives, per step, the kernel that takes ``out=`` (a ufunc, or an
    op's :meth:`~graphengine.ops.registry.OpDef.out_kernel`), or None; by default
    the steps' own kernels that are single-output ufuncs.  Only elementwise
    ufuncs write in place into a dying input.

    ``packed`` slots get views of one array, in the order given, when every one
    of them is a planned output and they share a dtype (else each gets its own
    buffer)."""
    if kernels is None:
        kernels = [s.fn if isinstance(s.fn, np.ufunc) and s.fn.nout == 1 else None for s in steps]
    # The slot whose memory each computed slot may use, through observed views.
    root: dict[int, int] = {}
    for step, shares in zip(steps, recording.shares):
        for slot, shared in zip(step.outputs, shares):
            root[slot] = (
                root.get(step.inputs[shared[0]], step.inputs[shared[0]]) if shared else slot
            )
    never = len(steps)
    # A buffer is busy until the last read of its root or of any view of it.
    end: dict[int, int] = {}
    for i, step in enumerate(steps):
        for slot in step.outputs:
            r = root[slot]
            end[r] = max(end.get(r, i), i)
        for slot in step.inputs:
            r = root.get(slot)
            if r is not None:
                end[r] = max(end[r], i)
    fetched_roots = {root.get(s, s) for s in fetch_slots}
    for r in fetched_roots:
        end[r] = never
    # Per step, which of its outputs get a buffer.
    planned: dict[int, list[bool]] = {}
    for i, (step, outs, shares) in enumerate(zip(steps, recording.outputs, recording.shares)):
        if kernels[i] is None or len(outs) != len(step.outputs):
            continue
        wanted = [
            not shared
            and isinstance(out, np.ndarray)
            and (reuse_fetch_buffers or slot not in fetched_roots)
            for slot, out, shared in zip(step.outputs, outs, shares)
        ]
        if all(wanted) or (len(wanted) > 1 and any(wanted)):
            planned[i] = wanted

    views = _packed_views(steps, recording, planned, packed)
    buffers: list[Any] = [None] * len(steps)
    free: dict[tuple[Any, ...], list[np.ndarray]] = {}
    dying: dict[int, list[tuple[tuple[Any, ...], np.ndarray]]] = {}
    owner: dict[int, np.ndarray] = {}  # root slot -> its buffer
    for i, step in enumerate(steps):
        wanted = planned.get(i)
        if wanted is not None:
            given: list[np.ndarray | None] = []
            for k, slot in enumerate(step.outputs):
                if not wanted[k]:
                    given.append(None)
                    continue
                out = recording.outputs[i][k]
                key = (out.shape, out.dtype.str)
                buf = views.get(slot)
                if buf is None:
                    buf = _dying_input(step, kernels[i], root, owner, end, i, key)
                    if buf is not None:
                        dying[i] = [e for e in dying.get(i, []) if e[1] is not buf]
                    else:
                        pool = free.get(key)
                        buf = pool.pop() if pool else np.empty(out.shape, out.dtype)
                given.append(buf)
                owner[slot] = buf
                last = end[slot]
                if last < never:
                    dying.setdefault(last, []).append((key, buf))
            buffers[i] = given[0] if len(given) == 1 else tuple(given)
        # Buffers whose last reader was this step are free for the next ones.
        for key, buf in dying.pop(i, []):
            free.setdefault(key, []).append(buf)
    return buffers


def _packed_views(
    steps: Sequence[Any],
    recording: Recording,
    planned: dict[int, list[bool]],
    packed: Sequence[int],
) -> dict[int, np.ndarray]:
    """{slot: its buffer} for the ``packed`` slots, views of one new array laid
    out in the order given; {} unless each is a planned output, once, and all
    share a dtype."""
    if not packed or len(set(packed)) != len(packed):
        return {}
    where = {slot: (i, k) for i, step in enumerate(steps) for k, slot in enumerate(step.outputs)}
    outs = []
    for slot in packed:
        i, k = where.get(slot, (-1, 0))
        if i not in planned or not planned[i][k]:
            return {}
        outs.append(recording.outputs[i][k])
    if len({out.dtype for out in outs}) != 1:
        return {}
    views = back_to_back([out.shape for out in outs], outs[0].dtype)
    return dict(zip(packed, views))


def back_to_back(shapes: Sequence[tuple[int, ...]], dtype: Any) -> list[np.ndarray]:
    """Arrays of ``shapes``, views laid back to back in that order over one new
    1-D array of ``dtype`` (uninitialised), so that one numpy call can reach
    them all (SGD over packed parameters and gradients: optimizers._block_of)."""
    block = np.empty(sum(math.prod(shape) for shape in shapes), dtype)
    views, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        views.append(block[start : start + size].reshape(shape))
        start += size
    return views


def _dying_input(
    step: Any,
    kernel: Any,
    root: dict[int, int],
    owner: dict[int, np.ndarray],
    end: dict[int, int],
    i: int,
    key: tuple[Any, ...],
) -> np.ndarray | None:
    """The buffer of an input that dies at step ``i`` and fits ``key``, when the
    step is elementwise (numpy's ufuncs handle an output that exactly overlaps
    an input), else None."""
    if not (isinstance(kernel, np.ufunc) and kernel.signature is None):
        return None
    for slot in step.inputs:
        r = root.get(slot)
        if r in owner and end[r] == i and (owner[r].shape, owner[r].dtype.str) == key:
            return owner[r]
    return None


#: (shape, dtype, strides) of an array, in one C call.
_LAYOUT = operator.attrgetter("shape", "dtype", "strides")


def shape_signature(values: Sequence[Any], slots: Sequence[int], training: bool) -> tuple[Any, ...]:
    """What a memory plan depends on: the shapes, dtypes and layouts (strides) of
    the run's inputs, and the mode (dropout returns its input itself in inference).

    Every run computes it, so the common case, inputs that all have the three
    attributes, is two C-level maps (about 1.5 us for eight inputs instead of
    4); a value without them (None) gives None for what it lacks.
    """
    try:
        return (training, *map(_LAYOUT, map(values.__getitem__, slots)))
    except AttributeError:
        parts: list[Any] = [training]
        for s in slots:
            v = values[s]
            parts.append(
                (getattr(v, "shape", None), getattr(v, "dtype", None), getattr(v, "strides", None))
            )
        return tuple(parts)
