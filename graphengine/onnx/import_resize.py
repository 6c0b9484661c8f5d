"""Import rule for ONNX's Resize (opsets 13, 18 and 19): our ``resize``.

roi, scales and sizes must be known at import time (PyTorch writes constant
scales for ``interpolate(scale_factor=...)``).  A ``sizes`` value computed from a
symbolic shape (PyTorch's ``interpolate(size=...)`` on a dynamic batch) works
where the symbolic entries are the input's own dims, left unchanged.  ``axes``
and ``keep_aspect_ratio_policy`` are resolved here into one size and one scale
per axis, as ONNX's reference does.  Integer inputs are resized in float64 and
cast back for ``nearest`` (exact: it only selects); other modes need floats.
"""

from __future__ import annotations

import numpy as np

from ..ops import api as ops
from .import_rules import NodeContext, normalize_axes, rule


def _given(ctx: NodeContext, index: int, what: str, symbolic: bool = False):
    """A static input's values, or None when absent or empty."""
    if not ctx.has(index):
        return None
    value = ctx.require_static(index, what, symbolic=symbolic)
    return None if value.size == 0 else value.reshape(-1)


@rule("Resize", versions=(13, 18, 19), static=(1, 2, 3))
def _resize(ctx: NodeContext):
    x = ctx.input(0)
    rank = x.ndim
    axes = normalize_axes(ctx, list(ctx.attr("axes", range(rank))), rank)
    roi = _given(ctx, 1, "roi")
    scales = _given(ctx, 2, "scales")
    sizes = _given(ctx, 3, "sizes", symbolic=True)
    if (scales is None) == (sizes is None):
        raise ctx.fail("give exactly one of scales and sizes (a non-empty tensor)")
    given = scales if scales is not None else sizes
    if len(given) != len(axes):
        raise ctx.fail(
            f"{'scales' if scales is not None else 'sizes'} has {len(given)} "
            f"values for {len(axes)} axes"
        )
    full_scales = [1.0] * rank
    full_sizes = [-1] * rank
    if scales is not None:
        for axis, s in zip(axes, scales):
            full_scales[axis] = float(s)
    else:
        for axis, s in zip(axes, sizes):
            dim = x.shape[axis]
            if not isinstance(s, (int, np.integer)):
                if s != dim:
                    raise ctx.fail(
                        f"sizes entry {s} for axis {axis} is symbolic and not the "
                        f"input's own dim ({dim}); graphengine needs it known"
                    )
                continue  # the input's own symbolic dim: unchanged
            if not isinstance(dim, int):
                raise ctx.fail(
                    f"resizing axis {axis} of symbolic size {dim} to {int(s)} needs "
                    "a static input size there"
                )
            full_sizes[axis] = int(s)
            full_scales[axis] = int(s) / dim
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            if policy not in ("not_larger", "not_smaller"):
                raise ctx.fail(
                    f"keep_aspect_ratio_policy {policy!r} is not one of stretch, "
                    "not_larger, not_smaller"
                )
            chosen = [full_scales[a] for a in axes]
            scale = min(chosen) if policy == "not_larger" else max(chosen)
            for axis in axes:
                full_scales[axis] = scale
                full_sizes[axis] = int(scale * x.shape[axis] + 0.5)  # round half up
    mode = ctx.attr("mode", "nearest")
    coordinate_mode = ctx.attr("coordinate_transformation_mode", "half_pixel")
    full_roi = None
    if coordinate_mode == "tf_crop_and_resize":
        if roi is None:
            raise ctx.fail("coordinate_transformation_mode tf_crop_and_resize needs roi")
        if len(roi) != 2 * len(axes):
            raise ctx.fail(
                f"roi has {len(roi)} values; {2 * len(axes)} expected (starts, then "
                "ends, one per axis)"
            )
        full_roi = [0.0] * rank + [1.0] * rank
        for i, axis in enumerate(axes):
            full_roi[axis] = float(roi[i])
            full_roi[rank + axis] = float(roi[len(axes) + i])
    attrs = dict(
        sizes=full_sizes,
        scales=full_scales,
        mode=mode,
        coordinate_transformation_mode=coordinate_mode,
        nearest_mode=ctx.attr("nearest_mode", "round_prefer_floor"),
        cubic_coeff_a=float(ctx.attr("cubic_coeff_a", -0.75)),
        exclude_outside=bool(ctx.attr("exclude_outside", 0)),
        antialias=bool(ctx.attr("antialias", 0)),
        roi=full_roi,
        extrapolation_value=float(ctx.attr("extrapolation_value", 0.0)),
    )
    if x.dtype.kind != "f":
        if mode != "nearest":
            raise ctx.fail(
                f"mode {mode!r} on {x.dtype.name} input is not supported: "
                "graphengine interpolates floats (nearest works on integers)"
            )
        return ops.cast(ops.resize(ops.cast(x, dtype="float64"), **attrs), dtype=x.dtype)
    return ops.resize(x, **attrs)
