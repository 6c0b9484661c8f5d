"""The op registry: each op is declared once, in one class.

An :class:`OpDef` subclass holds the four parts of an op side by side:

* the **schema**: typed inputs (and which are differentiable), outputs, and
  attributes with their kinds and defaults;
* ``infer``: output dtypes and shapes from input types, run when the op is built;
* ``kernel``: the numpy implementation, run by the executor;
* ``vjp``: the gradient rule (vector-Jacobian product), which emits ordinary
  graph nodes through the same op functions users call, or ``None`` for an op
  through which no gradient flows.

Beside them sit the facts other passes need about an op, so that none of them
checks an op's name: which outputs may be views of an input (``view_map``,
``alias``; read by the executor), whether it draws random numbers (``random``;
common-subexpression sharing reads it), the state it updates in a training run
(``state_updates``; the trainer reads it) and whether it is an ``internal`` op
that only gradient rules build.

The serializer, compiler, executor, gradient pass, renderer and tests all read
these declarations; none keeps a copy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, TypeAlias, TypeVar

import numpy as np

from ..dtypes import ALL_TYPES, as_dtype
from ..errors import GraphError
from ..shapes import Dim

#: What :meth:`OpDef.out_kernel` knows of each input: its shape and dtype.
InputInfo: TypeAlias = "tuple[tuple[int, ...], np.dtype[Any]]"
#: A kernel called as ``f(*arrays, out=buffer)`` that fills and returns buffer.
OutKernel: TypeAlias = "Callable[..., Any]"

#: What kernels take and return: numpy arrays of any shape and dtype.
Array: TypeAlias = "np.ndarray[Any, np.dtype[Any]]"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of an attribute that every node must set.
REQUIRED: Any = _Required()

ATTR_KINDS = (
    "int",
    "float",
    "str",
    "bool",
    "ints",
    "floats",
    "strs",
    "bools",
    "tensor",
    "shape",
    "dtype",
)


# Input, Attr and StateUpdate are named tuples: immutable records, as frozen
# dataclasses would be, without a millisecond each of ``import graphengine``.


class Input(NamedTuple):
    """One input of an op.

    ``dtypes`` lists the accepted dtype names.  ``differentiable=False`` marks
    inputs no gradient flows into (indices, labels, shape references).  A
    ``variadic`` input takes any number (at least one) of tensors and must be
    the op's only input.
    """

    name: str
    dtypes: frozenset[str] = ALL_TYPES
    differentiable: bool = True
    variadic: bool = False


class Attr(NamedTuple):
    """One attribute of an op: its name, kind (one of ``ATTR_KINDS``, checked by
    :func:`register`) and default.

    A default of ``None`` means "absent" (for example ``axis=None`` reduces over
    every axis); ``REQUIRED`` means every node must set it.
    """

    name: str
    kind: str
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None

    def canonical(self, value: Any) -> Any:
        """Check ``value`` against the kind and return its canonical form.

        Canonical forms: int, float, str, bool, tuples of those, a numpy array
        (tensor), a tuple of dims (shape), a numpy dtype.  Raises TypeError or
        ValueError with a short reason; the caller names the node.
        """
        if value is None:
            if self.default is None:
                return None
            raise TypeError("None is not allowed")
        kind = self.kind
        if kind == "int":
            out: Any = _as_int(value)
        elif kind == "float":
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise TypeError(f"expected a float, got {type(value).__name__}")
            out = float(value)
        elif kind == "str":
            if not isinstance(value, str):
                raise TypeError(f"expected a string, got {type(value).__name__}")
            out = value
        elif kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"expected a bool, got {type(value).__name__}")
            out = bool(value)
        elif kind in ("ints", "floats", "strs", "bools"):
            if isinstance(value, (int, float, str, bool, np.integer, np.floating)):
                value = (value,)
            item = Attr(self.name, kind[:-1])
            out = tuple(item.canonical(v) for v in value)
        elif kind == "tensor":
            out = np.asarray(value)
            as_dtype(out.dtype)
        elif kind == "shape":
            out = tuple(_as_dim(d) for d in value)
        else:  # dtype
            out = as_dtype(value)
        if self.choices is not None and out not in self.choices:
            raise ValueError(f"{out!r} is not one of {', '.join(map(repr, self.choices))}")
        return out


def _as_int(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"expected an int, got {type(value).__name__}")
    return int(value)


def _as_dim(value: Any) -> Dim:
    if value is None or isinstance(value, str):
        return value
    return _as_int(value)


class StateUpdate(NamedTuple):
    """State an op updates after each training step, as a moving average:

        state = momentum * state + (1 - momentum) * batch

    ``state`` is the input holding it (a parameter the optimizer must not move,
    batch norm's running mean), ``batch`` the output holding this step's value
    (the batch mean) and ``momentum`` the attribute with the factor.  The trainer
    reads these declarations; the kernel itself never writes its inputs.
    """

    state: str
    batch: str
    momentum: str


class _Undeclared:
    def __repr__(self) -> str:
        return "UNDECLARED"


_UNDECLARED: Any = _Undeclared()


class OpDef:
    """Base class of op declarations.  Subclass it and decorate with :func:`register`.

    Subclasses set ``name``, ``inputs``, ``outputs``, ``attrs`` and define
    ``infer`` and ``kernel``; they must set ``vjp`` to a method or to ``None``.
    ``infer`` and ``kernel`` receive the inputs positionally and the attributes
    as keywords.

    The gradient contract: ``vjp(self, node, dy)`` receives a
    :class:`~graphengine.gradients.NodeView` and, for an op with one output, the
    gradient of that output (a tensor); for an op with several outputs (or a
    number that depends on its attributes, ``split``), always a list with one
    entry per output, ``None`` for an output no gradient reaches.  It returns a
    list with one entry per input: a gradient tensor, or ``None`` for no
    gradient.  No zeros are ever materialised for an unreached output.
    """

    name: ClassVar[str] = ""
    inputs: ClassVar[tuple[Input, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ("y",)
    attrs: ClassVar[tuple[Attr, ...]] = ()
    #: Kernels of ops with ``uses_context`` get a ``ctx`` keyword
    #: (:class:`graphengine.executor.RunContext`: training flag and RNG).
    uses_context: ClassVar[bool] = False
    #: The gradient rule, or ``None`` for an op through which no gradient flows.
    vjp: ClassVar[Callable[..., list[Any]] | None] = _UNDECLARED
    #: Outputs the kernel may return as a view of an input, as PyTensor's
    #: ``view_map``: ``{output index: input index}``.  The executor copies a
    #: fetched output that may share memory with a parameter, constant or feed,
    #: and a memory plan must not reuse an input's buffer while a view of it lives.
    view_map: ClassVar[Mapping[int, int]] = {}
    #: Output 0 is input 0 itself (``identity``, ``stop_gradient``): the executor
    #: gives it the input's slot and runs no kernel.  Implies ``view_map = {0: 0}``.
    alias: ClassVar[bool] = False
    #: The kernel draws random numbers (``dropout``): two nodes with equal inputs
    #: and attributes still differ, so common-subexpression sharing never merges them.
    random: ClassVar[bool] = False
    #: State the op updates after each training step (see :class:`StateUpdate`).
    state_updates: ClassVar[tuple[StateUpdate, ...]] = ()
    #: Built only by gradient rules and passes: left out of ``ge.__all__`` and
    #: marked as such in the op reference.
    internal: ClassVar[bool] = False
    #: The output's value is stored with the graph (a parameter's value, a
    #: constant): its bytes already exist, so the per-tensor size budget of
    #: :mod:`graphengine.limits` applies to computed results only.
    stored: ClassVar[bool] = False
    #: For a multi-output op whose later outputs are by-products (dropout's mask,
    #: batch norm's batch statistics): the keyword of the public function
    #: ``ge.<op>`` that returns every output as a tuple (``return_mask=True``).
    #: Without it the function returns output 0 alone, as Keras and PyTorch do,
    #: and unpacking that tensor says which keyword to pass.  ``None``: the
    #: function returns the tuple of every output.  Nodes and files always hold
    #: every output; only the Python front-end differs.
    extra_outputs_flag: ClassVar[str | None] = None

    # -- schema helpers -------------------------------------------------------
    @property
    def differentiable(self) -> bool:
        return self.vjp is not None

    @property
    def variadic(self) -> bool:
        return bool(self.inputs) and self.inputs[0].variadic

    def input_spec(self, index: int) -> Input:
        """The declaration of input ``index`` (every input of a variadic op shares one)."""
        return self.inputs[0] if self.variadic else self.inputs[index]

    def num_outputs(self, attrs: dict[str, Any]) -> int:
        """How many outputs a node with these attributes has."""
        return len(self.outputs)

    @property
    def multi_output(self) -> bool:
        """Whether the gradient rule gets a list of output gradients: the op
        declares several outputs, or a count that depends on its attributes."""
        return len(self.outputs) > 1 or type(self).num_outputs is not OpDef.num_outputs

    def view_of(self, output: int) -> int | None:
        """The input that output ``output`` may be a view of, or None."""
        if self.alias and output == 0:
            return 0
        return self.view_map.get(output)

    def state_inputs(self) -> list[int]:
        """Positions of the inputs this op's state updates write."""
        names = [i.name for i in self.inputs]
        return [names.index(u.state) for u in self.state_updates]

    def output_name(self, index: int) -> str:
        return self.outputs[index] if index < len(self.outputs) else f"{self.outputs[-1]}{index}"

    def canonical_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults and check every attribute; raise GraphError on a bad one.

        The result is ordered by name, so equal nodes serialise to equal bytes.
        """
        if not attrs and not self.attrs:
            return {}  # the common case of elementwise ops, on the hot path of building
        known = _attrs_by_name(self)
        if not attrs.keys() <= known.keys():
            unknown = sorted(set(attrs) - set(known))
            declared = dict.fromkeys(a.name for a in self.attrs)
            raise GraphError(
                f"op '{self.name}' has no attribute {unknown[0]!r}; its attributes are "
                f"{', '.join(declared) or 'none'}"
            )
        out = {}
        for name, spec in known.items():
            value = attrs.get(name, spec.default)
            if value is REQUIRED:
                raise GraphError(f"op '{self.name}' needs attribute {name!r} ({spec.kind})")
            try:
                out[name] = spec.canonical(value)
            except (TypeError, ValueError) as exc:
                raise GraphError(
                    f"op '{self.name}': attribute {name!r} must be of kind {spec.kind}: {exc}"
                ) from None
        return out

    def gradient_unsupported(
        self, attrs: dict[str, Any], in_types: Sequence[Any] = ()
    ) -> str | None:
        """Why a node with these attributes and input types cannot be
        differentiated, or None.

        The gradient pass asks every node on the path first and reports all
        problems at once, before it builds anything.
        """
        return None

    # -- the parts each op defines ---------------------------------------------
    def infer(self, *types: Any, **attrs: Any) -> Any:  # pragma: no cover - every op has one
        """Output types (one TensorType, or a sequence for several outputs) from
        input types; raise ValueError with the reason when they do not fit."""
        raise NotImplementedError

    def kernel(self, *arrays: Any, **attrs: Any) -> Any:  # pragma: no cover - every op has one
        """Output arrays (one, or a sequence for several outputs) from input arrays."""
        raise NotImplementedError

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        """A variant of the kernel that writes its result into a given array,
        for inputs of these (shape, dtype)s, or None (the default: the kernel
        allocates its result).

        The returned ``f(*arrays, out=buffer)`` must fill ``buffer`` (of the
        shape and dtype the kernel returns for such inputs) with exactly the
        kernel's values and return it; it never gets a buffer that overlaps an
        input.  For an op with several outputs, ``out`` is a tuple with an array
        or None per output (None: allocate that one) and ``f`` returns the
        outputs as the kernel does.  Compiled plans use it to run fixed-shape
        steps without allocating (:mod:`graphengine.memory_plan`); ufunc kernels
        need none.
        """
        return None


REGISTRY: dict[str, OpDef] = {}


def register(cls: type[OpDef]) -> type[OpDef]:
    """Class decorator that adds an op declaration to the registry."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no op name")
    if cls.name in REGISTRY:
        raise TypeError(f"op '{cls.name}' is declared twice")
    if cls.vjp is _UNDECLARED:
        raise TypeError(
            f"op '{cls.name}' does not say how it differentiates: define vjp, or set "
            "vjp = None for an op through which no gradient flows"
        )
    variadic = [i for i in cls.inputs if i.variadic]
    if variadic and len(cls.inputs) != 1:
        raise TypeError(f"op '{cls.name}': a variadic input must be the only input")
    if cls.alias and (len(cls.inputs) != 1 or len(cls.outputs) != 1):
        raise TypeError(f"op '{cls.name}': an alias op has one input and one output")
    for out, inp in cls.view_map.items():
        if not (0 <= inp < max(len(cls.inputs), 1) and out >= 0):
            raise TypeError(f"op '{cls.name}': view_map entry {out}: {inp} names no input")
    input_names = [i.name for i in cls.inputs]
    attr_names = [a.name for a in cls.attrs]
    for attr in cls.attrs:
        if attr.kind not in ATTR_KINDS:
            raise TypeError(
                f"op '{cls.name}': attribute {attr.name!r} has kind {attr.kind!r}, "
                f"not one of {', '.join(ATTR_KINDS)}"
            )
    for update in cls.state_updates:
        if (
            update.state not in input_names
            or update.batch not in cls.outputs
            or update.momentum not in attr_names
        ):
            raise TypeError(
                f"op '{cls.name}': state update {update} names an unknown "
                "input, output or attribute"
            )
    flag = cls.extra_outputs_flag
    if flag is not None and (
        len(cls.outputs) < 2 or flag in input_names or flag in attr_names or flag == "name"
    ):
        raise TypeError(
            f"op '{cls.name}': extra_outputs_flag {flag!r} needs several outputs and a "
            "keyword that is neither an input, an attribute nor 'name'"
        )
    REGISTRY[cls.name] = cls()
    return cls


def public_result(opdef: OpDef, outputs: Any, all_outputs: bool) -> Any:
    """What ``ge.<op>`` returns for ``outputs`` (the node's handles): output 0
    alone unless the op declares no :attr:`OpDef.extra_outputs_flag` or the
    caller passed it."""
    if opdef.extra_outputs_flag is None:
        return outputs
    if not isinstance(all_outputs, (bool, np.bool_)):
        raise GraphError(
            f"{opdef.name}: {opdef.extra_outputs_flag} must be True or False, got {all_outputs!r}"
        )
    return outputs if all_outputs else outputs[0]


@functools.cache
def _attrs_by_name(opdef: OpDef) -> dict[str, Attr]:
    """``opdef``'s attribute declarations by name, in sorted order (the order
    nodes store them); made once per op, as every node built with attributes asks."""
    by_name = {a.name: a for a in opdef.attrs}
    return {name: by_name[name] for name in sorted(by_name)}


def get_op(name: str) -> OpDef:
    """The declaration of op ``name``; raise GraphError for an unknown op."""
    try:
        return REGISTRY[name]
    except KeyError:
        close = sorted(n for n in REGISTRY if n[:3] == name[:3])[:5]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise GraphError(f"unknown op {name!r}.{hint}") from None


def size_of(shape: Sequence[int]) -> int:
    """Number of elements of a concrete shape."""
    return math.prod(shape)


#: Hand-written Python front-ends, by function name, for ops whose numpy-style
#: signature differs from their schema (``split``, slicing) and for helpers
#: that compose ops.  Ops without one get a generated function.
FRONTENDS: dict[str, Callable[..., Any]] = {}

_Function = TypeVar("_Function", bound=Callable[..., Any])


def frontend(name: str) -> Callable[[_Function], _Function]:
    """Register ``fn`` as the public function ``ge.<name>``."""

    def decorate(fn: _Function) -> _Function:
        if name in FRONTENDS:
            raise TypeError(f"front-end {name!r} is defined twice")
        FRONTENDS[name] = fn
        return fn

    return decorate


class _OpFunctions:
    """The public op functions (:mod:`graphengine.ops.api`), for gradient rules.

    Looked up on use, because the op families are imported before ``api`` is.
    """

    def __getattr__(self, name: str) -> Callable[..., Any]:
        from . import api

        function = getattr(api, name)
        setattr(self, name, function)  # later lookups find it without this hook
        return function


#: ``F.multiply(a, b)`` and friends, as used inside gradient rules.
F = _OpFunctions()
