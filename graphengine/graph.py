"""The graph builder: nodes, tensor handles, name scopes and parameters.

A :class:`Graph` is an insertion-ordered list of immutable :class:`Node` records.
Every node is made by :meth:`Graph.apply` (or by the loader), which checks the
attributes, infers output types and names the node, so a graph in memory is
always valid and in topological order.  Users hold :class:`Tensor` handles, one
per node output, which take Python's operators.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
from collections.abc import Container, Hashable, Iterable, Iterator, KeysView, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from . import initializers, limits
from .dtypes import as_dtype, dtype_name
from .errors import FeedError, GraphError, ShapeError
from .model import GradientInfo, ModelRecord
from .ops.registry import REGISTRY, OpDef, get_op
from .shapes import Shape, TensorType, format_shape

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


def check_name(name: str, what: str = "name") -> str:
    """Refuse names that could not be printed, fetched or stored unambiguously."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise GraphError(
            f"invalid {what} {name!r}: use letters, digits, '_', '.', '-' in segments "
            "separated by '/' (no ':', spaces, control characters or empty segments)"
        )
    return name


def parse_ref(ref: str) -> tuple[str, int]:
    """Split a tensor reference ``node`` or ``node:k`` into (node, k)."""
    if ":" not in ref:  # the common case, on hot paths
        return ref, 0
    name, sep, index = ref.rpartition(":")
    if not sep:
        return ref, 0
    if not index.isdigit() or len(index) > 6:
        raise GraphError(f"invalid tensor reference {ref!r}: expected 'node' or 'node:k'")
    return name, int(index)


def make_ref(node: str, index: int) -> str:
    """The canonical reference to output ``index`` of ``node``."""
    return node if index == 0 else f"{node}:{index}"


def canonical_ref(ref: str) -> str:
    """``ref`` in canonical form: ``node:0`` becomes ``node``; others are kept."""
    return make_ref(*parse_ref(ref))


def fresh_name(base: str, taken: Container[str], first: int = 1) -> str:
    """``base`` if it is not in ``taken``, else the first free ``base_k`` from
    ``k = first`` on: the one naming scheme for generated names."""
    if base not in taken:
        return base
    k = first
    while f"{base}_{k}" in taken:
        k += 1
    return f"{base}_{k}"


def other_graph(theirs: Graph, ours: Graph) -> str:
    """How an error names ``theirs``, a graph that is not ``ours`` (two graphs
    can share a name, and most are called 'graph')."""
    if theirs.name == ours.name:
        return f"another graph (also named '{ours.name}')"
    return f"graph '{theirs.name}', not '{ours.name}'"


def require_graph(value: Any, caller: str) -> None:
    """Raise GraphError unless ``value`` is a Graph, naming what ``caller`` got
    instead and the usual way to a graph from it (the two common slips: the
    tuple that ``ge.optimize`` returns, and a file name instead of its graph).
    """
    if isinstance(value, Graph):
        return
    if isinstance(value, tuple) and value and isinstance(value[0], Graph):
        hint = "ge.optimize returns (graph, report): write `graph, report = ge.optimize(g)`"
    elif isinstance(value, str) or hasattr(value, "__fspath__"):
        hint = f"load the file first: `g = ge.load({str(value)!r})`"
    else:
        hint = "build one with ge.Graph() or load one with ge.load(path)"
    raise GraphError(f"{caller} takes a graphengine Graph, not a {type(value).__name__}: {hint}")


class Node:
    """One operation of a graph.  Nodes never change once added; passes build new graphs.

    ``inputs`` are tensor references (``node`` or ``node:k``); ``attrs`` are in
    canonical form, ordered by name; ``types`` are the inferred output types;
    ``derived_from`` names the forward node a gradient node was built for.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any]
    types: tuple[TensorType, ...]
    scope: str = ""
    derived_from: str = ""

    def __init__(
        self,
        name: str,
        op: str,
        inputs: tuple[str, ...],
        attrs: dict[str, Any],
        types: tuple[TensorType, ...],
        scope: str = "",
        derived_from: str = "",
    ) -> None:
        # The fields in one write, past __setattr__: setting each through
        # object.__setattr__ costs twice as much, and graphs are built a node at
        # a time (gradient graphs of 10**5 nodes).  (Not a frozen dataclass: its
        # generated methods would cost a millisecond of ``import graphengine``.)
        self.__dict__.update(
            name=name,
            op=op,
            inputs=inputs,
            attrs=attrs,
            types=types,
            scope=scope,
            derived_from=derived_from,
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: nodes never change")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: nodes never change")

    def __repr__(self) -> str:
        return (
            f"Node(name={self.name!r}, op={self.op!r}, inputs={self.inputs!r}, "
            f"attrs={self.attrs!r}, types={self.types!r}, scope={self.scope!r}, "
            f"derived_from={self.derived_from!r})"
        )

    @property
    def opdef(self) -> OpDef:
        return get_op(self.op)

    def output_refs(self) -> list[str]:
        return [make_ref(self.name, i) for i in range(len(self.types))]


class Tensor:
    """A handle to one output of a node: the thing ops take and return.

    It carries its static type and takes Python's operators
    (``+ - * / @ ** -x``, comparisons, ``x[1:3, ::2]`` slicing), which build nodes.
    """

    # numpy's ufunc hook, __array_ufunc__, is graphengine.ops.api's: np.exp(t) builds ge.exp.

    def __init__(self, graph: Graph, node: str, index: int = 0) -> None:
        self.graph = graph
        self.node = node
        self.index = index

    @property
    def name(self) -> str:
        """The reference used to fetch this tensor (``node`` or ``node:k``)."""
        return make_ref(self.node, self.index)

    @property
    def type(self) -> TensorType:
        return self.graph.node(self.node).types[self.index]

    @property
    def shape(self) -> Shape:
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        op = self.graph.node(self.node).op
        return f"<Tensor '{self.name}' {op} {self.dtype.name}{format_shape(self.shape)}>"

    __hash__ = object.__hash__

    def __pos__(self) -> Tensor:
        return self  # +x builds no node

    def __bool__(self) -> bool:
        raise GraphError(
            f"the truth value of tensor '{self.name}' is not known when the graph is built; "
            "use ge.where or a comparison op instead of Python's if/and/or"
        )

    def __len__(self) -> int:
        dim = self.shape[0] if self.shape else None
        if not isinstance(dim, int):
            raise ShapeError(
                f"tensor '{self.name}' has no static length (shape {format_shape(self.shape)})"
            )
        return dim

    # Operators are attached in graphengine.ops.api, next to the op functions, and
    # the methods in graphengine.ops.shape and .indexing; these declarations tell
    # type checkers and editors what they are.
    if TYPE_CHECKING:  # pragma: no cover

        def __add__(self, other: TensorLike) -> Tensor: ...
        def __radd__(self, other: TensorLike) -> Tensor: ...
        def __sub__(self, other: TensorLike) -> Tensor: ...
        def __rsub__(self, other: TensorLike) -> Tensor: ...
        def __mul__(self, other: TensorLike) -> Tensor: ...
        def __rmul__(self, other: TensorLike) -> Tensor: ...
        def __truediv__(self, other: TensorLike) -> Tensor: ...
        def __rtruediv__(self, other: TensorLike) -> Tensor: ...
        def __matmul__(self, other: TensorLike) -> Tensor: ...
        def __rmatmul__(self, other: TensorLike) -> Tensor: ...
        def __pow__(self, other: TensorLike) -> Tensor: ...
        def __rpow__(self, other: TensorLike) -> Tensor: ...
        def __eq__(self, other: TensorLike) -> Tensor: ...  # type: ignore[override]
        def __ne__(self, other: TensorLike) -> Tensor: ...  # type: ignore[override]
        # mypy sees numpy's reflected comparisons in TensorLike as overlapping.
        def __lt__(self, other: TensorLike) -> Tensor: ...  # type: ignore[misc]
        def __le__(self, other: TensorLike) -> Tensor: ...  # type: ignore[misc]
        def __gt__(self, other: TensorLike) -> Tensor: ...  # type: ignore[misc]
        def __ge__(self, other: TensorLike) -> Tensor: ...  # type: ignore[misc]
        def __and__(self, other: TensorLike) -> Tensor: ...
        def __or__(self, other: TensorLike) -> Tensor: ...
        def __neg__(self) -> Tensor: ...
        def __abs__(self) -> Tensor: ...
        def __invert__(self) -> Tensor: ...
        def __getitem__(self, key: Any) -> Tensor: ...
        def __iter__(self) -> Iterator[Tensor]: ...
        @property
        def T(self) -> Tensor: ...  # noqa: N802
        def reshape(self, *shape: Any) -> Tensor: ...
        def transpose(self, *axes: int) -> Tensor: ...
        def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor: ...
        def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor: ...
        def max(self, axis: Any = None, keepdims: bool = False) -> Tensor: ...
        def min(self, axis: Any = None, keepdims: bool = False) -> Tensor: ...
        def astype(self, dtype: Any) -> Tensor: ...


#: What an op input accepts: a tensor, or an array or number made a constant.
TensorLike = Union[Tensor, "np.ndarray[Any, Any]", float, int, bool]


if TYPE_CHECKING:  # pragma: no cover
    from .simplify import EmissionContext, EmitTemplate


class Graph:
    """A static computation graph under construction.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph("demo")
    >>> x = g.placeholder("x", shape=(None, 2))
    >>> y = ge.sum(x * 2.0, axis=1)
    >>> ge.run(g, y, {"x": np.ones((3, 2), np.float32)}).tolist()
    [4.0, 4.0, 4.0]
    """

    def __init__(self, name: str = "graph") -> None:
        self.name = check_name(name, "graph name")
        self._nodes: dict[str, Node] = {}
        self._counters: dict[str, int] = {}
        self._scopes: list[str] = []
        #: Set while a pass emits gradient-style nodes (see emitting_gradients).
        self._grad_ctx: EmissionContext | None = None
        #: Tensors marked as graph outputs; empty means "every tensor nobody consumes".
        self._outputs: list[str] = []
        #: Everything the file holds besides the structure: parameter values,
        #: gradient section, training spec, metadata, unknown fields.
        self.record = ModelRecord()
        self._version = 0  # bumped on every change; keys the executor's plan cache

    # -- the model record ------------------------------------------------------
    # The record's fields, as attributes of the graph (the names users know).
    @property
    def values(self) -> dict[str, np.ndarray]:
        """Current values of parameters, by node name (training updates them)."""
        return self.record.values

    @values.setter
    def values(self, values: dict[str, np.ndarray]) -> None:
        self.record.values = values

    @property
    def gradient(self) -> GradientInfo | None:
        """Set by ge.gradients: the loss, the wrt tensors and their gradient outputs."""
        return self.record.gradient

    @gradient.setter
    def gradient(self, info: GradientInfo | None) -> None:
        self.record.gradient = info

    @property
    def training(self) -> Any:
        """The TrainingSpec set by :meth:`set_training` or read from the file, or None."""
        return self.record.training

    @training.setter
    def training(self, spec: Any) -> None:
        self.record.training = spec

    @property
    def metadata(self) -> dict[str, str]:
        """Free-form string metadata stored in the file."""
        return self.record.metadata

    @metadata.setter
    def metadata(self, metadata: dict[str, str]) -> None:
        self.record.metadata = metadata

    # -- reading ---------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        """Every node, in topological (insertion) order."""
        return list(self._nodes.values())

    def node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise GraphError(f"graph '{self.name}' has no node {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def get(self, name: str) -> Node | None:
        """The node called ``name``, or None (for passes that probe names)."""
        return self._nodes.get(name)

    def names(self) -> KeysView[str]:
        """The node names in order, as a live read-only view (cheap: no copy)."""
        return self._nodes.keys()

    def tensor(self, ref: str | Tensor) -> Tensor:
        """The handle of tensor ``ref`` (``node`` or ``node:k``); FeedError if absent."""
        if isinstance(ref, Tensor):
            if ref.graph is not self and ref.node not in self._nodes:
                raise FeedError(f"tensor '{ref.name}' belongs to another graph")
            ref = ref.name
        elif not isinstance(ref, str):
            raise FeedError(_not_a_tensor_message(ref))
        name, index = parse_ref(ref)
        node = self._nodes.get(name)
        if node is None or index >= len(node.types):
            raise FeedError(f"graph '{self.name}' has no tensor {ref!r}{self._suggest(name)}")
        return Tensor(self, name, index)

    def type_of(self, ref: str) -> TensorType:
        """The type of tensor ``ref``, without making a handle (for hot loops)."""
        if ":" not in ref:  # output 0, the common case
            return self._nodes[ref].types[0]
        name, index = parse_ref(ref)
        return self._nodes[name].types[index]

    def _suggest(self, name: str) -> str:
        import difflib

        close = difflib.get_close_matches(name, list(self._nodes), n=3)
        return f"; did you mean {', '.join(map(repr, close))}?" if close else ""

    def placeholders(self) -> list[Node]:
        return [n for n in self._nodes.values() if n.op == "placeholder"]

    def parameters(self, trainable: bool | None = None) -> list[Node]:
        """Parameter nodes; ``trainable=True`` keeps only those that training updates."""
        return [
            n
            for n in self._nodes.values()
            if n.op == "parameter" and (trainable is None or n.attrs["trainable"] == trainable)
        ]

    @property
    def outputs(self) -> list[str]:
        """Marked outputs, or (when none are marked) every tensor no node consumes."""
        if self._outputs:
            return list(self._outputs)
        consumed = {ref for n in self._nodes.values() for ref in n.inputs}
        return [
            ref
            for n in self._nodes.values()
            if n.op not in ("placeholder", "parameter", "constant")
            for ref in n.output_refs()
            if ref not in consumed
        ]

    @property
    def marked_outputs(self) -> list[str]:
        """The outputs marked with :meth:`mark_output` (or set by a pass), in order."""
        return list(self._outputs)

    def set_outputs(self, refs: Iterable[str]) -> None:
        """Replace the marked outputs by ``refs``, tensor references the caller has
        checked (passes and loaders; users call :meth:`mark_output`)."""
        self._outputs = list(refs)
        self._changed()

    def mark_output(self, *tensors: Tensor | str) -> None:
        """Declare graph outputs (stored in the file and listed by ``inspect``)."""
        for t in tensors:
            ref = self.tensor(t).name
            if ref not in self._outputs:
                self._outputs.append(ref)
        self._changed()

    # -- naming ----------------------------------------------------------------
    @contextlib.contextmanager
    def name_scope(self, name: str) -> Iterator[str]:
        """Prefix names of nodes built inside with ``name/`` (scopes nest)."""
        check_name(name, "name scope")
        self._scopes.append(name)
        try:
            yield self.current_scope
        finally:
            self._scopes.pop()

    @property
    def current_scope(self) -> str:
        if self._grad_ctx is not None:
            return self._grad_ctx.scope
        return "/".join(self._scopes)

    def _qualify(self, base: str) -> str:
        scope = self.current_scope
        return f"{scope}/{base}" if scope else base

    def _unique_name(self, base: str) -> str:
        ctx = self._grad_ctx
        reserved: Container[str] = ()
        if ctx is not None:
            scope, reserved = ctx.scope, ctx.reserved
        else:
            scope = "/".join(self._scopes)
        name = f"{scope}/{base}" if scope else base
        if name not in self._nodes and name not in reserved:
            return name
        return self._next_free(name, reserved)

    def _next_free(self, name: str, reserved: Container[str]) -> str:
        """The first free ``name_k``, for a taken ``name``."""
        # fresh_name's scheme, inline (this runs for most nodes built): the
        # counter remembers the last suffix used, so naming n nodes alike is O(n).
        nodes = self._nodes
        k = self._counters.get(name, 0) + 1
        fresh = f"{name}_{k}"
        while fresh in nodes or fresh in reserved:
            k += 1
            fresh = f"{name}_{k}"
        self._counters[name] = k
        return fresh

    def _explicit_name(self, name: str) -> str:
        full = self._qualify(check_name(name))
        if full in self._nodes:
            other = self._nodes[full]
            raise GraphError(
                f"name {full!r} is already used by a node of op '{other.op}'; choose another name"
            )
        return full

    # -- building --------------------------------------------------------------
    def placeholder(
        self, name: str, shape: Sequence[int | str | None] = (), dtype: Any = "float32"
    ) -> Tensor:
        """A value fed at run time.  ``None`` in ``shape`` is the symbolic batch
        dimension ``N`` (shared by every placeholder); a string names another
        symbolic dimension.

        >>> import graphengine as ge
        >>> ge.Graph().placeholder("x", shape=(None, 3)).shape
        ('N', 3)
        """
        dims: list[int | str] = []
        for d in shape:
            if d is None:
                dims.append("N")
            elif isinstance(d, str):
                check_name(d, "dimension name")
                dims.append(d)
            else:
                dims.append(_as_size(d, name))
        return self._apply_one("placeholder", {"shape": tuple(dims), "dtype": dtype}, name)

    def parameter(
        self,
        name: str,
        value: Any = None,
        *,
        shape: Sequence[int] | None = None,
        dtype: Any = "float32",
        init: Any = "glorot_uniform",
        seed: int | None = None,
        trainable: bool = True,
    ) -> Tensor:
        """A named value that training updates (unless ``trainable=False``).

        Give ``value`` (an array) or a ``shape`` and an initializer: a name from
        :mod:`graphengine.initializers` or a callable ``(shape, dtype, rng) -> array``.
        Without ``seed`` the initializer is seeded from the parameter's name, so
        building a graph twice gives the same values.
        """
        if value is None:
            if shape is None:
                raise GraphError(f"parameter {name!r}: give a value or a shape")
            dims = tuple(_as_size(d, name) for d in shape)
            full = self._qualify(name)
            import zlib  # here, not at `import graphengine`: only initializers need it

            rng = np.random.default_rng(zlib.crc32(full.encode()) if seed is None else seed)
            value = initializers.initialize(init, dims, as_dtype(dtype), rng)
        value = np.array(value, copy=True)  # an explicit array keeps its own dtype
        as_dtype(value.dtype)
        tensor = self._apply_one(
            "parameter", {"shape": value.shape, "dtype": value.dtype, "trainable": trainable}, name
        )
        self.values[tensor.node] = value
        return tensor

    def constant(self, value: Any, name: str | None = None, dtype: Any = None) -> Tensor:
        """A fixed value stored in the graph."""
        array = np.asarray(value, dtype=None if dtype is None else as_dtype(dtype))
        if array.dtype.kind in "fc" and array.dtype.name not in ("float16", "float32", "float64"):
            array = array.astype(np.float64)
        return self._apply_one("constant", {"value": array}, name)

    def _apply_one(self, op: str, attrs: dict[str, Any], name: str | None) -> Tensor:
        """A source node (no inputs, one output)."""
        tensor = self.apply(op, [], attrs, name=name)
        assert isinstance(tensor, Tensor)
        return tensor

    def apply(
        self,
        op: str,
        inputs: Sequence[Any],
        attrs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        """Add a node of op ``op`` and return its output handle(s).

        Inputs may be tensors of this graph, arrays or Python numbers (which become
        constants; a Python number takes the dtype of the op's first tensor input).
        Raises ShapeError when the input types do not fit, GraphError for bad
        attributes or names.
        """
        ctx = self._grad_ctx
        template_key = None
        if ctx is not None:
            # A gradient node whose (op, attributes) was built before, from
            # tensors of this graph: its template holds what the checks below
            # would find again (see EmitTemplate).
            template_key = op if not attrs else ctx.template_key(op, attrs)
            template = ctx.template_of.get(template_key)
            if template is not None:
                refs = self._handle_refs(ctx, inputs, template.arity)
                if refs is not None:
                    return self._emit_templated(ctx, template, refs, name)
        opdef = REGISTRY.get(op) or get_op(op)
        if attrs:
            attrs = opdef.canonical_attrs(attrs)
        else:
            # Most ops built (elementwise, by operators and gradient rules) are
            # given no attributes: their defaults, checked once per op.
            attrs = dict(_default_attrs(opdef)) if opdef.attrs else {}
        refs = self._input_refs(opdef, inputs)
        if ctx is not None:
            return self._emit(ctx, opdef, name, refs, attrs, template_key)
        node_name = self._explicit_name(name) if name is not None else self._unique_name(op)
        types = self._infer(opdef, node_name, refs, attrs)
        node = Node(node_name, op, tuple(refs), attrs, types, "/".join(self._scopes))
        self.add_node(node)
        return self._handles(node)

    def _emit(
        self,
        ctx: EmissionContext,
        opdef: OpDef,
        name: str | None,
        refs: list[str],
        attrs: dict[str, Any],
        template_key: Hashable | None,
    ) -> Tensor | tuple[Tensor, ...]:
        """The end of :meth:`apply` while a pass emits gradient-style nodes, for
        checked attributes: the node's name, the context's rewrites and
        sharing.  A shareable node goes through its (op, attributes) template,
        which is noted under ``template_key`` for the next such node."""
        key = ctx.key(opdef, refs, attrs)
        if key is None:  # never shared (random ops, sources): no template either
            node_name = (
                self._explicit_name(name)
                if name is not None
                else self._gradient_name(ctx, opdef.name)
            )
            types = self._infer(opdef, node_name, refs, attrs)
            node = Node(
                node_name, opdef.name, tuple(refs), attrs, types, ctx.scope, ctx.derived_from
            )
            self._nodes[node_name] = node  # the name is fresh
            self._version += 1
            return self._handles(node)
        template = ctx.template(opdef, attrs, key[2])
        if template_key is not None:
            ctx.template_of[template_key] = template
        return self._emit_templated(ctx, template, refs, name)

    def _gradient_name(self, ctx: EmissionContext, op: str) -> str:
        """:meth:`_unique_name` in the context's scope, avoiding its reserved names."""
        scope, reserved = ctx.scope, ctx.reserved
        node_name = f"{scope}/{op}" if scope else op
        if node_name in self._nodes or node_name in reserved:
            node_name = self._next_free(node_name, reserved)
        return node_name

    def _emit_templated(
        self, ctx: EmissionContext, template: EmitTemplate, refs: list[str], name: str | None
    ) -> Tensor | tuple[Tensor, ...]:
        """Name, type, rewrite or share, and add a node of ``template`` on ``refs``."""
        op = template.op
        nodes = self._nodes
        if name is not None:
            node_name = self._explicit_name(name)
        else:
            # _gradient_name, inline: every gradient node is named here.  (Named
            # before the sharing look-up, as a shared node's name still counts.)
            scope, reserved = ctx.scope, ctx.reserved
            node_name = f"{scope}/{op}" if scope else op
            if node_name in nodes or node_name in reserved:
                node_name = self._next_free(node_name, reserved)
        # Output types by the inputs' dtypes and shapes, which is what
        # TensorType equality compares.  The one- and two-input cases (most
        # nodes) are spelt out, without a comprehension's frame.
        if len(refs) == 2:
            a, b = refs
            x = nodes[a].types[0] if ":" not in a else self.type_of(a)
            y = nodes[b].types[0] if ":" not in b else self.type_of(b)
            in_types = [x, y]
            types_key: tuple[Any, ...] = (x.dtype, x.shape, y.dtype, y.shape)
        elif len(refs) == 1:
            a = refs[0]
            x = nodes[a].types[0] if ":" not in a else self.type_of(a)
            in_types = [x]
            types_key = (x.dtype, x.shape)
        else:
            in_types = [nodes[r].types[0] if ":" not in r else self.type_of(r) for r in refs]
            types_key = tuple([p for t in in_types for p in (t.dtype, t.shape)])
        types = template.inferred.get(types_key)
        if types is None:
            types = template.inferred[types_key] = infer_types(
                template.opdef, node_name, in_types, template.attrs, refs
            )
        if template.rewritten:
            shortcut = ctx.shortcut(self, op, refs, types)
            if shortcut is not None:
                return Tensor(self, *parse_ref(shortcut))
        inputs = tuple(refs)
        key = (op, inputs, template.items)
        shared = ctx.cse.get(key)
        if shared is not None:
            return self._handles(nodes[shared])
        attrs = dict(template.attrs) if template.attrs else {}
        node = Node(node_name, op, inputs, attrs, types, ctx.scope, ctx.derived_from)
        # The name is fresh (_gradient_name or _explicit_name checked it).
        nodes[node_name] = node
        self._version += 1
        ctx.cse[key] = node_name
        return Tensor(self, node_name, 0) if len(types) == 1 else self._handles(node)

    def _handle_refs(
        self, ctx: EmissionContext, inputs: Sequence[Any], arity: int | None
    ) -> list[str] | None:
        """The references of ``inputs`` when they are ``arity`` (any number for
        None, at least one) handles of this graph or Python floats made
        constants before in the pass (``1.0 - y * y``), else None: then
        :meth:`_input_refs` handles them, new literals and errors included."""
        if len(inputs) != arity and (arity is not None or not inputs):
            return None
        refs = []
        for value in inputs:
            if type(value) is Tensor and value.graph is self:
                refs.append(value.node if value.index == 0 else f"{value.node}:{value.index}")
            elif type(value) is float and value != 0.0:
                # What _literal would find (its cache's key, its exclusion of 0.0).
                known = ctx.literals.get((value, _dtype_for_literals(inputs)))
                if known is None:
                    return None
                refs.append(known)
            else:
                return None
        return refs

    def _handles(self, node: Node) -> Tensor | tuple[Tensor, ...]:
        if len(node.types) == 1:
            return Tensor(self, node.name, 0)
        handles = tuple(Tensor(self, node.name, i) for i in range(len(node.types)))
        return handles[0] if len(handles) == 1 else handles

    def _input_refs(self, opdef: OpDef, inputs: Sequence[Any]) -> list[str]:
        specs = opdef.inputs
        if specs and specs[0].variadic:
            if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
                inputs = list(inputs[0])
            if not inputs:
                raise GraphError(f"op '{opdef.name}' needs at least one input")
        elif len(inputs) != len(specs):
            names = ", ".join(i.name for i in opdef.inputs) or "none"
            raise GraphError(
                f"op '{opdef.name}' takes {len(opdef.inputs)} inputs ({names}), got {len(inputs)}"
            )
        refs = []
        for value in inputs:
            # The common case first: a handle of this graph (its reference inline).
            if type(value) is Tensor and value.graph is self:
                refs.append(value.node if value.index == 0 else f"{value.node}:{value.index}")
            else:
                break
        else:
            return refs
        like = _dtype_for_literals(inputs)
        for i in range(len(refs), len(inputs)):
            value = inputs[i]
            if isinstance(value, tuple) and value and all(isinstance(v, Tensor) for v in value):
                raise GraphError(_tuple_input_message(opdef.name, i, value))
            if isinstance(value, Tensor):
                if value.graph is not self:
                    raise GraphError(
                        f"op '{opdef.name}': input {i} ('{value.name}') belongs to "
                        f"{other_graph(value.graph, self)}: an op's tensors must all "
                        "come from the graph it is built in"
                    )
                refs.append(value.name)
            else:
                refs.append(self._literal(value, like, opdef, i).name)
        return refs

    def _literal(self, value: Any, like: np.dtype | None, opdef: OpDef, index: int) -> Tensor:
        ctx = self._grad_ctx
        if ctx is not None and type(value) is float and value != 0.0:
            # A rule's float (``1.0 - y * y``) made a constant of this dtype
            # before in the pass: that constant, without building its array.
            # (Not 0.0, which equals -0.0 as a key but not as a constant.)
            known = ctx.literals.get((value, like))
            if known is not None:
                return Tensor(self, known)
            tensor = self._literal_constant(value, like, opdef, index)
            ctx.literals[(value, like)] = tensor.node
            return tensor
        return self._literal_constant(value, like, opdef, index)

    def _literal_constant(
        self, value: Any, like: np.dtype | None, opdef: OpDef, index: int
    ) -> Tensor:
        if isinstance(value, (bool, int, float, np.number, np.bool_)) and not isinstance(
            value, np.ndarray
        ):
            dtype: np.dtype
            if isinstance(value, (bool, np.bool_)):
                dtype = np.dtype(bool)
            elif like is not None and (
                like.kind == "f"
                or like.name == "bfloat16"  # ml_dtypes' kind is "V"
                or not isinstance(value, (float, np.floating))
            ):
                dtype = like
            elif like is not None:
                dtype = np.dtype("float64")  # a float with an int tensor: numpy's promotion
            else:
                dtype = np.dtype("float32" if isinstance(value, float) else "int64")
            array = np.asarray(value, dtype=dtype)
        else:
            try:
                array = np.asarray(value)
            except Exception as exc:  # ragged lists and the like
                raise GraphError(
                    f"op '{opdef.name}': input {index} cannot be made a tensor: {exc}"
                ) from None
            if array.dtype.kind not in "biuf" and array.dtype.name != "bfloat16":
                raise GraphError(
                    f"op '{opdef.name}': input {index} of type "
                    f"{type(value).__name__} is not a tensor or a number"
                )
        ctx = self._grad_ctx
        key = ("constant", array.dtype.str, array.shape, array.tobytes())
        if ctx is not None and key in ctx.cse:
            return Tensor(self, ctx.cse[key])
        tensor = self._apply_one("constant", {"value": array}, None)
        if ctx is not None:
            ctx.cse[key] = tensor.node
        return tensor

    def _infer(
        self, opdef: OpDef, node_name: str, refs: list[str], attrs: dict[str, Any]
    ) -> tuple[TensorType, ...]:
        nodes = self._nodes
        in_types = [nodes[r].types[0] if ":" not in r else self.type_of(r) for r in refs]
        return infer_types(opdef, node_name, in_types, attrs, refs)

    def add_node(self, node: Node) -> None:
        """Append a node whose inputs exist and whose types are already inferred
        (loaders and passes, which have checked it; users call :meth:`apply`).
        Raises GraphError when the name is taken."""
        if node.name in self._nodes:
            raise GraphError(f"duplicate node name {node.name!r}")
        self._nodes[node.name] = node
        self._changed()

    def retain(self, names: Container[str]) -> None:
        """Keep only the nodes named in ``names``, in their order.  The caller keeps
        the graph closed: every input of a kept node must be kept."""
        self._nodes = {k: n for k, n in self._nodes.items() if k in names}
        self._changed()

    @contextlib.contextmanager
    def emitting_gradients(self, ctx: EmissionContext) -> Iterator[EmissionContext]:
        """The one hook through which a pass emits gradient-style nodes: while the
        block runs, Graph.apply names nodes in ``ctx.scope`` (avoiding
        ``ctx.reserved``), links them to ``ctx.derived_from``, applies the
        context's rewrites (``ctx.shortcut``, the simplify.py rules) and shares
        identical nodes through ``ctx.cse`` (see
        :class:`graphengine.simplify.EmissionContext`)."""
        previous = self._grad_ctx
        self._grad_ctx = ctx
        try:
            yield ctx
        finally:
            self._grad_ctx = previous

    def _changed(self) -> None:
        self._version += 1

    @property
    def version(self) -> int:
        """A counter bumped by every change to the graph's structure (nodes,
        outputs); what was derived from the graph (the executor's compiled
        plans) is valid while it stays the same."""
        return self._version

    # -- files, drawings, training: done by the modules above this one ------------
    def save(self, path: Any, format: str | None = None, **options: Any) -> None:
        """Write the graph to ``path`` atomically; see :func:`graphengine.save`."""
        _upper("save")(self, path, format=format, **options)

    def copy(self, name: str | None = None, *, record: bool = True) -> Graph:
        """A new graph with the same nodes, outputs and (unless ``record=False``,
        which leaves it empty) a copy of the model record: parameter values,
        gradient section, training spec, metadata."""
        g = Graph(name or self.name)
        g._nodes = dict(self._nodes)
        g._counters = dict(self._counters)
        g._outputs = list(self._outputs)
        if record:
            g.record = self.record.copy()
        return g

    def __repr__(self) -> str:
        return f"<Graph '{self.name}': {len(self._nodes)} nodes>"

    def _repr_svg_(self) -> str:  # pragma: no cover - exercised in notebooks
        return str(_upper("render_svg")(self))

    def summary(self) -> str:
        """A Keras-like table of the parameters (scope, name, shape, dtype, count,
        trainable) with totals; see :mod:`graphengine.summary`."""
        return str(_upper("summary")(self))

    def set_training(self, loss: Tensor | str, **settings: Any) -> None:
        """Say how this graph is trained; the spec is saved with the graph, so
        ``graphengine train model.pb --data ...`` needs nothing else.

        ``settings`` are the fields of :class:`~graphengine.training_spec.TrainingSpec`,
        with the optimizer's and the schedule's given flat (``optimizer="adam"``,
        ``learning_rate=1e-3``, ``schedule="cosine"``, ``warmup_steps=100``,
        ``batch_size=64``, ``epochs=10``, ``metrics=["loss", "accuracy"]`` ...).
        Raises TrainingError for an unknown setting or a value out of range.

        >>> import graphengine as ge
        >>> g = ge.Graph()
        >>> x = g.placeholder("x", (None,))
        >>> w = g.parameter("w", shape=())
        >>> g.set_training(ge.mean(x * w), optimizer="adam", learning_rate=1e-3)
        >>> g.training.optimizer.name, g.training.loss
        ('adam', 'mean')
        """
        self.training = _upper("set_training")(self, loss, **settings)


#: Graph methods whose work belongs to a module above the builder (files need
#: protobuf, drawings Graphviz, training its settings).  graph.py names each
#: function here instead of importing its module, so the builder depends only on
#: ops, shapes, dtypes and the model record, and the module is imported on first
#: use (``import graphengine`` stays light).  tests/test_graph.py resolves each.
UPPER_HOOKS = {
    "save": ("graphengine.serialize", "save"),
    "render_svg": ("graphengine.render", "render_svg"),
    "summary": ("graphengine.summary", "format_parameters"),
    "set_training": ("graphengine.training.settings", "build_spec"),
}


def _upper(hook: str) -> Any:
    module, function = UPPER_HOOKS[hook]
    return getattr(importlib.import_module(module), function)


def infer_types(
    opdef: OpDef,
    node_name: str,
    in_types: Sequence[TensorType],
    attrs: dict[str, Any],
    refs: Sequence[str] | None = None,
) -> tuple[TensorType, ...]:
    """Check input dtypes against the schema and run the op's inference rule.

    Errors name the node, the op and every operand's type.
    """
    refs = refs or [f"input {i}" for i in range(len(in_types))]
    where = f"node '{node_name}' ({opdef.name})"
    accepted = _accepted_dtypes(opdef)
    variadic = opdef.variadic
    for i, t in enumerate(in_types):
        if dtype_name(t.dtype) not in accepted[0 if variadic else i]:
            spec = opdef.input_spec(i)
            allowed = ", ".join(sorted(spec.dtypes))
            raise ShapeError(
                f"{where}: input '{spec.name}' ('{refs[i]}') has dtype "
                f"{t.dtype.name}, expected one of {allowed}; convert it with "
                "ge.cast"
            )
    # Bounds first (graphengine.limits): a split into 10**9 pieces is refused
    # before its output types are built.
    limits.check_output_count(opdef.num_outputs(attrs), where)
    try:
        out = opdef.infer(*in_types, **attrs)
    except (ShapeError, ValueError):
        out = None
    if out is None:
        # Run the rule again on types labelled with the operands' names, so its
        # message names them; labelling only on failure keeps building fast.
        labelled = [TensorType(t.dtype, t.shape, f"'{r}'") for t, r in zip(in_types, refs)]
        try:
            out = opdef.infer(*labelled, **attrs)
        except (ShapeError, ValueError) as exc:
            operands = ", ".join(
                f"{opdef.input_spec(i).name}='{r}' {t}"
                for i, (r, t) in enumerate(zip(refs, in_types))
            )
            raise ShapeError(_shorten(f"{where}: {exc} (operands: {operands or 'none'})")) from None
    out = (out,) if isinstance(out, TensorType) else tuple(out)
    assert len(out) == opdef.num_outputs(attrs), opdef.name
    for t in out:
        limits.check_rank(len(t.shape), where)
        if not opdef.stored:
            limits.check_result_size(t.shape, t.dtype.itemsize, where)
    return out


@functools.cache
def _default_attrs(opdef: OpDef) -> dict[str, Any]:
    """The canonical attributes of a node of ``opdef`` given none (read-only:
    :meth:`Graph.apply` copies it); GraphError when one is required."""
    return opdef.canonical_attrs({})


@functools.cache
def _accepted_dtypes(opdef: OpDef) -> tuple[frozenset[str], ...]:
    """Per input of ``opdef``, the dtype names its schema accepts (looked up once
    per op: the check runs for every node built)."""
    return tuple(spec.dtypes for spec in opdef.inputs)


def _shorten(message: str, limit: int = 600) -> str:
    """A message cut to ``limit`` characters, so one line never prints 10**5 axes."""
    if len(message) <= limit:
        return message
    return f"{message[: limit - 80]} ... ({len(message):,} characters in all)"


def _as_size(d: Any, name: str) -> int:
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 0:
        raise ShapeError(f"{name!r}: dimension {d!r} must be a non-negative int, a name or None")
    return int(d)


def _dtype_for_literals(inputs: Iterable[Any]) -> np.dtype | None:
    """The dtype a Python number takes: that of the first non-bool tensor input."""
    for value in inputs:
        # (The dtype's kind, 'b' for bool alone: comparing it with np.bool_
        # converts np.bool_ to a dtype on every call.)
        if isinstance(value, Tensor) and value.dtype.kind != "b":
            return value.dtype
    return None


def _not_a_tensor_message(value: Any) -> str:
    """What to say when a tensor name or handle was expected and ``value`` came."""
    if isinstance(value, tuple) and value and all(isinstance(t, Tensor) for t in value):
        return _tuple_input_message("this", 0, value).replace(
            "op 'this': input 0 is", "expected one tensor, got", 1
        )
    return f"expected a tensor (a handle or a name such as 'node:0'), got {type(value).__name__}"


def _tuple_input_message(op: str, index: int, outputs: tuple[Tensor, ...]) -> str:
    """What to say when an op gets the whole tuple of a multi-output op (``h =
    ge.dropout(x, 0.5); ge.relu(h)``): which outputs it holds and how to take one."""
    node = outputs[0].graph.node(outputs[0].node)
    names = [node.opdef.output_name(t.index) for t in outputs]
    problem = (
        f"op '{op}': input {index} is the tuple of {len(outputs)} outputs of '{node.name}' "
        f"({node.op}: {', '.join(names)}), not one tensor; "
    )
    flag = node.opdef.extra_outputs_flag
    if flag is not None:
        return problem + (
            f"unpack it ({', '.join(names)} = ge.{node.op}(..., {flag}=True)), or leave "
            f"out {flag} to get {names[0]} alone"
        )
    return problem + (
        f"take the one you want, e.g. {', '.join(names)} = ge.{node.op}(...), or "
        f"ge.{node.op}(...)[0] for {names[0]}"
    )
