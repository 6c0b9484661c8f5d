"""Shape checks shared by the 2-D convolutions (:mod:`.conv`) and the N-d ones
(:mod:`.conv_nd`): groups, channel counts, and the output sizes of a transposed
convolution.  Each takes the weight layout it names in its errors, so that the
2-D ops can say ``kh, kw`` where the N-d ones say ``*kernel``."""

from __future__ import annotations

from collections.abc import Sequence

from ..shapes import Dim, TensorType, format_shape
from .window import Ints


def check_groups(channels: Dim, groups: int, what: str) -> None:
    if groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups}")
    if isinstance(channels, int) and channels % groups:
        raise ValueError(f"{what} {channels} is not divisible by groups={groups}")


def check_conv_channels(x: TensorType, w: TensorType, groups: int, w_layout: str) -> None:
    """Check that conv's x (N, C, ...) and w (O, C/groups, ...) agree on the
    channels and that groups divides both channel counts; ``w_layout`` is the
    weights' layout, as written in the error."""
    c, ci, o = x.shape[1], w.shape[1], w.shape[0]
    check_groups(c, groups, "the input channel count")
    check_groups(o, groups, "the output channel count (w's axis 0)")
    if isinstance(c, int) and isinstance(ci, int) and c != ci * groups:
        per_group = f" / groups={groups} = {c // groups}" if groups > 1 else ""
        raise ValueError(
            f"x has {c} channels (axis 1 of {format_shape(x.shape)}) but w expects "
            f"{ci * groups} (w is {w_layout} = {format_shape(w.shape)}); the weight's "
            f"axis 1 must be {c}{per_group}"
        )


def check_transpose(
    x: TensorType,
    w: TensorType,
    stride: Ints,
    output_padding: Ints,
    groups: int,
    rank: int,
    w_layout: str,
) -> Dim:
    """Check conv_transpose's output_padding and channels (x (N, C, ...), w (C,
    O/groups, ...), laid out as ``w_layout`` says in the error); returns O."""
    if len(output_padding) != rank or any(not 0 <= p < s for p, s in zip(output_padding, stride)):
        raise ValueError(
            f"output_padding must be {rank} ints, each >= 0 and smaller than the "
            f"stride {stride}; got {output_padding}"
        )
    c, wc = x.shape[1], w.shape[0]
    check_groups(wc, groups, "the input channel count (w's axis 0)")
    if isinstance(c, int) and isinstance(wc, int) and c != wc:
        raise ValueError(
            f"x has {c} channels (axis 1 of {format_shape(x.shape)}) but w "
            f"{w_layout} = {format_shape(w.shape)} expects {wc}"
        )
    return w.shape[1] * groups if isinstance(w.shape[1], int) else None


def transpose_sizes(
    x_shape: Sequence[Dim],
    w_shape: Sequence[Dim],
    stride: Ints,
    dilation: Ints,
    padding: Ints,
    output_padding: Ints,
) -> tuple[Dim, ...]:
    """The spatial output sizes of conv_transpose (shape rule and kernel alike)."""
    rank = len(x_shape) - 2
    return tuple(
        _transpose_size(
            x_shape[2 + i],
            w_shape[2 + i],
            stride[i],
            dilation[i],
            padding[i],
            padding[rank + i],
            output_padding[i],
        )
        for i in range(rank)
    )


def _transpose_size(
    size: Dim, k: Dim, stride: int, dilation: int, begin: int, end: int, extra: int
) -> Dim:
    if not isinstance(size, int) or not isinstance(k, int):
        return None
    out = (size - 1) * stride + dilation * (k - 1) + 1 - begin - end + extra
    if out < 1:
        raise ValueError(
            f"the padding {begin}+{end} leaves no output (size {out}); use less padding"
        )
    return out
