"""ONNX model -> graph.

:func:`import_model` reads the model (external data under containment rules),
checks every node against the import table and refuses the model, listing all
unsupported ops with counts and opsets, before anything is built.  It then
walks the nodes in order:

* graph inputs become placeholders (``dim_param`` dims become symbolic dims,
  dims with neither value nor name get a symbol of their own);
* initializers become parameters (trainable unless frozen, not float, or only
  read as state that an update writes, such as batch-norm running statistics) when a
  node reads them as tensors, and so do initializers nothing reads; those read
  only as static inputs (shapes, axes, pads ...) stay values.  Computing from a
  float initializer at import time is never done: training changes it;
* Constant nodes and nodes whose inputs are all known at import time (constants,
  integer initializers, folded values) are evaluated with our own kernels and
  kept as values, made constants only where a tensor is needed, so
  Shape -> Gather -> Concat -> Reshape chains fold away; with symbolic dims they
  are followed symbolically (:mod:`graphengine.onnx.import_symbolic`);
* every other node goes through its rule in :mod:`graphengine.onnx.import_rules`
  (the rules live in ``import_elementwise``, ``import_reduce``, ``import_shape``,
  ``import_linalg``, ``import_nn`` and ``import_loss``).

Naming: a placeholder, parameter or constant takes its ONNX value's name; the
node that computes an ONNX value takes that value's name; helper nodes of a
composition live under it (``y/cast``).  Names are made valid for graphengine
(``:`` and other characters become ``_``).  A graph output that could not take
its name otherwise (an input passed through, say) gets an identity node.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, NodeProto

from ..compiler import NodeRecord, build_graph
from ..errors import ExecutionError, GraphError, ShapeError
from ..executor import run
from ..graph import Graph, Tensor, fresh_name, make_ref, parse_ref
from ..ops import api as ops
from ..ops.sources import is_source
from . import (  # noqa: F401
    MIN_OPSET,
    import_elementwise,
    import_linalg,
    import_loss,
    import_nn,
    import_recurrent,
    import_reduce,
    import_resize,
    import_shape,
)
from .errors import OnnxConversionError
from .files import ModelFile, TensorReader, load_model
from .import_bounds import fold_bytes, inline_functions, over_fold_limit
from .import_rules import RULES, NodeContext, Rule
from .import_symbolic import fold as fold_symbolic
from .import_symbolic import is_symbolic
from .tensor_types import onnx_type_name, shape_of, to_numpy_dtype

#: Metadata key listing initializers to import as non-trainable (written by our exporter).
FROZEN_KEY = "graphengine.frozen"
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class ImportResult:
    """A graph and how the ONNX model's names map onto it."""

    graph: Graph
    #: ONNX graph input name -> placeholder name, in ONNX order.
    inputs: dict[str, str] = field(default_factory=dict)
    #: Our tensor reference for each ONNX graph output, in ONNX order.
    outputs: list[str] = field(default_factory=list)
    #: The ONNX graph output names, in order.
    output_names: list[str] = field(default_factory=list)


def import_model(
    source: Any,
    *,
    freeze: Iterable[str] = (),
    name: str | None = None,
    base_dir: Any = None,
    bind: dict[str, np.ndarray] | None = None,
) -> ImportResult:
    """Import an ONNX model; see :func:`graphengine.from_onnx`.

    ``bind`` gives values to some graph inputs, which then become values known
    at import time instead of placeholders (the backend binds inputs that feed
    shapes or axes this way).
    """
    file = load_model(source, base_dir)
    model = file.model
    try:
        model = upgrade_opset(model)
        opset = model_opset(model)
        if model.functions:
            # Model-local functions are compositions of ONNX ops: inline them
            # (bounded, recursion refused: see import_bounds).
            model = inline_functions(model)
        check_supported(model, opset)
        return _Importer(model, opset, file, set(freeze), name, bind or {}).build()
    except (
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
        ArithmeticError,
        RecursionError,
        MemoryError,
        UnicodeError,
    ) as exc:
        # A damaged file that protobuf still parsed (a name that is not UTF-8, a
        # field out of range) trips onnx or our rules: say so in our terms.
        raise OnnxConversionError(
            f"the model cannot be imported: {type(exc).__name__}: {str(exc)[:300]}; the file "
            "is damaged, or uses a form of ONNX that graphengine does not understand"
        ) from exc


def static_inputs(model: ModelProto) -> list[str]:
    """Graph inputs whose values some node needs at import time: those that reach a
    static input slot (axes, shapes ...) directly or through other nodes."""
    graph = model.graph
    needed: set[str] = set()
    for node in reversed(graph.node):
        rule = RULES.get(node.op_type)
        if rule is None:
            continue
        if any(o in needed for o in node.output if o):
            needed.update(i for i in node.input if i)
        needed.update(i for slot, i in enumerate(node.input) if i and slot in rule.static)
    inits = {t.name for t in graph.initializer}
    return [v.name for v in graph.input if v.name in needed and v.name not in inits]


def _declared_opset(model: ModelProto) -> int | None:
    versions = {o.domain: o.version for o in model.opset_import}
    return next((versions[d] for d in _DEFAULT_DOMAINS if d in versions), None)


def upgrade_opset(model: ModelProto) -> ModelProto:
    """``model`` itself at opset 13 or newer; an older model converted to opset 13
    with onnx's version converter (``onnx.version_converter.convert_version``).

    The converter rewrites each node with the adapters ONNX ships (Upsample
    becomes Resize, attribute axes become inputs ...).  Raises
    OnnxConversionError, with the converter's reason, when it cannot convert.
    """
    opset = _declared_opset(model)
    if opset is None or opset >= MIN_OPSET:
        return model
    import onnx.version_converter

    unknown = sorted(
        {
            n.op_type
            for n in model.graph.node
            if (n.domain or "") in _DEFAULT_DOMAINS and schema_version(n.op_type, opset) is None
        }
    )
    if unknown:
        raise OnnxConversionError(
            f"the model uses opset {opset}, older than the {MIN_OPSET} graphengine imports, and "
            f"onnx's version converter cannot convert it: {', '.join(unknown)} "
            f"{'is' if len(unknown) == 1 else 'are'} not defined at opset {opset}"
        )
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises RuntimeError, ValueError, its own types
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise OnnxConversionError(
            f"the model uses opset {opset}; graphengine imports opsets {MIN_OPSET} and newer "
            f"and converts older ones with onnx's version converter, which failed: {reason}. "
            f"Export the model at opset {MIN_OPSET} or newer instead"
        ) from exc


def model_opset(model: ModelProto) -> int:
    """The model's opset for the default ONNX domain, checked against our range."""
    opset = _declared_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        raise OnnxConversionError("the model imports no opset of the default ONNX domain")
    if opset < MIN_OPSET:
        raise OnnxConversionError(
            f"the model uses opset {opset}; graphengine imports opsets {MIN_OPSET} to {newest}. "
            f"Convert it first: onnx.version_converter.convert_version(model, {MIN_OPSET}) "
            "(graphengine.onnx.importer.upgrade_opset does)"
        )
    if opset > newest:
        raise OnnxConversionError(
            f"the model uses opset {opset}, newer than the installed onnx knows ({newest}); "
            "upgrade onnx"
        )
    return opset


def schema_version(op_type: str, opset: int) -> int | None:
    """The ``since_version`` of ``op_type``'s schema at ``opset``, or None if unknown."""
    try:
        return onnx.defs.get_schema(op_type, opset, "").since_version
    except onnx.defs.SchemaError:
        return None


def check_supported(model: ModelProto, opset: int) -> None:
    """Refuse a model that uses ops or dtypes we cannot import, listing all of them."""
    graph = model.graph
    ops_seen: collections.Counter = collections.Counter()
    for node in graph.node:
        domain = node.domain or ""
        version = schema_version(node.op_type, opset) if domain in _DEFAULT_DOMAINS else None
        rule = RULES.get(node.op_type) if domain in _DEFAULT_DOMAINS else None
        if rule is None or version not in rule.versions:
            ops_seen[(domain, node.op_type, version)] += 1
    problems = []
    for (domain, op_type, version), count in sorted(
        ops_seen.items(), key=lambda kv: (kv[0][1], kv[0][0])
    ):
        where = f"domain '{domain}'" if domain not in _DEFAULT_DOMAINS else f"opset {opset}"
        rule = RULES.get(op_type) if domain in _DEFAULT_DOMAINS else None
        if rule is not None and version is not None:
            why = (
                f"schema version {op_type}-{version} is not one we read (we read "
                f"{', '.join(f'{op_type}-{v}' for v in rule.versions)})"
            )
        elif domain in _DEFAULT_DOMAINS and version is None:
            why = (
                f"not defined until opset {_first_opset(op_type)}"
                if onnx.defs.has(op_type)
                else "not an ONNX op"
            )
        else:
            why = "no graphengine equivalent"
        problems.append(f"{op_type} x{count} ({where}: {why})")
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for v in values:
            kind_of_type = v.type.WhichOneof("value")
            if kind_of_type is None and kind == "output":
                continue  # an output of undeclared type: we infer it
            if kind_of_type != "tensor_type":
                problems.append(
                    f"graph {kind} '{v.name}' is not a tensor (sequences, maps and "
                    "optionals are not supported)"
                )
            elif to_numpy_dtype(v.type.tensor_type.elem_type) is None:
                problems.append(
                    f"graph {kind} '{v.name}' has element type "
                    f"{onnx_type_name(v.type.tensor_type.elem_type)}"
                )
    for t in graph.initializer:
        if to_numpy_dtype(t.data_type) is None:
            problems.append(
                f"initializer '{t.name}' has element type {onnx_type_name(t.data_type)}"
            )
    if graph.sparse_initializer:
        problems.append(f"{len(graph.sparse_initializer)} sparse initializer(s)")
    for node in graph.node:
        for a in node.attribute:
            if a.name in ("to",) and node.op_type == "Cast" and to_numpy_dtype(a.i) is None:
                problems.append(
                    f"node '{node.name or node.output[0]}' (Cast) casts to {onnx_type_name(a.i)}"
                )
            if a.type == onnx.AttributeProto.TENSOR and to_numpy_dtype(a.t.data_type) is None:
                problems.append(
                    f"node '{node.name or node.output[0]}' ({node.op_type}) has a "
                    f"{onnx_type_name(a.t.data_type)} tensor attribute '{a.name}'"
                )
    if problems:
        raise OnnxConversionError(
            "cannot import this model; graphengine does not support: "
            + "; ".join(problems)
            + f". Supported ONNX ops: {', '.join(sorted(RULES))}"
        )


def _first_opset(op_type: str) -> int:
    return min(
        s.since_version
        for s in onnx.defs.get_all_schemas_with_history()
        if s.name == op_type and s.domain == ""
    )


_INVALID = re.compile(r"[^A-Za-z0-9_.\-/]")


def sanitize(name: str, fallback: str = "value") -> str:
    """A valid graphengine name for an ONNX name: other characters become ``_``
    and empty ``/`` segments are dropped."""
    segments = [s for s in _INVALID.sub("_", name).split("/") if s]
    return "/".join(segments) or fallback


class _Importer:
    def __init__(
        self,
        model: ModelProto,
        opset: int,
        file: ModelFile,
        freeze: set[str],
        name: str | None,
        bind: dict[str, np.ndarray],
    ) -> None:
        self.model = model
        self.bind = bind
        self.opset = opset
        self.tensors = TensorReader(file)
        self.freeze = freeze
        meta = {p.key: p.value for p in model.metadata_props}
        self.freeze |= {n for n in meta.get(FROZEN_KEY, "").split(",") if n}
        self.graph = Graph(sanitize(name or model.graph.name, "onnx_model"))
        self.graph.metadata.update(meta)
        #: ONNX value name -> tensor (in self.graph) or array (known at import time).
        self.values: dict[str, Tensor | np.ndarray] = {}
        #: Initializer name -> array (read as a value by static input slots).
        self.initializers: dict[str, np.ndarray] = {}
        #: Value name -> its array, for known values that some node needed as a
        #: tensor (``values`` then holds the constant): still known to the nodes
        #: that fold or read it as a shape.
        self.known: dict[str, np.ndarray] = {}
        #: Our tensor name -> its dims with products of symbols where our shape
        #: has unknown dims (NodeContext.note_shape).
        self.shapes: dict[str, tuple] = {}
        #: Node name -> the ONNX value name it should take.
        self.rename: dict[str, str] = {}
        self.result = ImportResult(self.graph)

    # -- naming ------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        return fresh_name(base, self.graph)

    # -- values ------------------------------------------------------------------
    def read_tensor(self, proto: onnx.TensorProto, what: str) -> np.ndarray:
        return self.tensors.read(proto, what)

    def fetch(self, name: str, static: bool) -> Any:
        """Value ``name`` as a tensor (``static=False``) or its value known at
        import time (``static=True``: an array, or None)."""
        if static:
            value = self.values.get(name)
            if isinstance(value, np.ndarray):
                return value
            if name in self.known:
                return self.known[name]
            return self.initializers.get(name)
        value = self.values.get(name)
        if value is None:
            if name in self.initializers:
                return self.parameter(name)
            raise OnnxConversionError(
                f"value {name!r} is used before any node, input or "
                "initializer defines it (nodes must be in topological "
                "order)"
            )
        if isinstance(value, np.ndarray):
            if is_symbolic(value):
                raise OnnxConversionError(
                    f"value {name!r} is a shape with symbolic dims {value.tolist()}, which "
                    "graphengine can use only as the shape of Reshape, Expand or "
                    "ConstantOfShape; give the "
                    "model's inputs static dims there"
                )
            value = self.materialize(name, value)
        return value

    def materialize(self, name: str, array: np.ndarray) -> Tensor:
        """Make a constant node for a value known at import time (once)."""
        tensor = self.graph.constant(array, name=self.fresh(sanitize(name)))
        self.values[name] = tensor
        self.known[name] = array
        return tensor

    # -- building ------------------------------------------------------------------
    def build(self) -> ImportResult:
        g = self.model.graph
        for t in g.initializer:
            self.initializers[t.name] = self.read_tensor(t, f"initializer '{t.name}'")
        try:
            self._add_placeholders()
        except (ShapeError, GraphError) as exc:
            raise OnnxConversionError(f"graph inputs: {exc}") from None
        try:
            self._add_parameters()
        except (ShapeError, GraphError) as exc:
            raise OnnxConversionError(f"initializers: {exc}") from None
        for node in g.node:
            try:
                self._convert(node)
            except (ShapeError, GraphError, ExecutionError) as exc:
                # Our own checks (shape inference, the size limits) and the kernels
                # folding known values name our node; the user needs the ONNX node.
                raise OnnxConversionError(
                    f"node '{node.name or node.output[0]}' ({node.op_type}): {exc}"
                ) from None
        try:
            self._add_outputs()
            return self._finish()
        except (ShapeError, GraphError) as exc:
            raise OnnxConversionError(f"graph outputs: {exc}") from None

    def _add_placeholders(self) -> None:
        for v in self.model.graph.input:
            if v.name in self.initializers:
                continue  # an input with a default value: a parameter
            dtype = to_numpy_dtype(v.type.tensor_type.elem_type)
            if v.name in self.bind:
                value = np.asarray(self.bind[v.name])
                if value.dtype != dtype:
                    raise OnnxConversionError(
                        f"value bound to input '{v.name}' has dtype "
                        f"{value.dtype}, the input is {dtype.name}"
                    )
                self.values[v.name] = value
                continue
            shape = shape_of(v.type)
            if shape is None:
                raise OnnxConversionError(
                    f"graph input '{v.name}' has no shape; give it one "
                    "(dims may be named, e.g. 'N')"
                )
            base = sanitize(v.name, "input")
            dims = [sanitize(d) if isinstance(d, str) else d for d in shape]
            dims = [f"{base}_dim{axis}" if d is None else d for axis, d in enumerate(dims)]
            placeholder = self.graph.placeholder(self.fresh(base), dims, dtype)
            self.values[v.name] = placeholder
            self.result.inputs[v.name] = placeholder.node

    def _add_parameters(self) -> None:
        """Check the names to freeze, and make parameters of the initializers that no
        node reads (kept, so that no trained value is dropped) or that are graph
        outputs.  The others become parameters when a node first reads them as a
        tensor (:meth:`parameter`), or stay values when nodes read them only as
        shapes, axes and the like."""
        unknown = sorted(
            self.freeze - set(self.initializers) - {sanitize(n) for n in self.initializers}
        )
        if unknown:
            raise OnnxConversionError(
                f"cannot freeze {', '.join(map(repr, unknown))}: the model has no such "
                f"initializer; its initializers are "
                f"{', '.join(map(repr, self.initializers)) or 'none'}"
            )
        read = {name for node in self.model.graph.node for name in node.input}
        outputs = {o.name for o in self.model.graph.output}
        for name in self.initializers:
            if name not in read or name in outputs:
                self.parameter(name)

    def parameter(self, name: str) -> Tensor:
        """The parameter of initializer ``name`` (made on first use)."""
        value = self.values.get(name)
        if value is None:
            array = self.initializers[name]
            trainable = (
                array.dtype.kind == "f"
                and name not in self.freeze
                and sanitize(name) not in self.freeze
            )
            value = self.graph.parameter(
                self.fresh(sanitize(name, "parameter")), array, trainable=trainable
            )
            self.values[name] = value
        return value

    def _convert(self, node: NodeProto) -> None:
        rule = RULES[node.op_type]
        version = schema_version(node.op_type, self.opset)
        for name in node.input:
            if name and name not in self.values and name not in self.initializers:
                raise OnnxConversionError(
                    f"node '{node.name or node.output[0]}' ({node.op_type}) reads {name!r}, "
                    "which no earlier node, graph input or initializer defines (nodes must be "
                    "in topological order)"
                )
        if self._copies_initializer(node):
            # PyTorch's exporter merges initializers that happen to be equal (a fresh
            # batch norm's weight and running_var are both ones) and reads the copy
            # through Identity.  They are different tensors that training moves
            # apart, so each becomes its own initializer again.
            self.initializers[node.output[0]] = self.initializers[node.input[0]].copy()
            return
        if self._can_fold(rule, node):
            outputs = self._fold(rule, node, version)
        else:
            outputs = self._apply(rule, node, version)
        for k, out_name in enumerate(node.output):
            if not out_name:
                continue
            value = outputs[k] if k < len(outputs) else None
            if value is None:
                raise OnnxConversionError(
                    f"node '{node.name or out_name}' ({node.op_type}): output {k} "
                    f"('{out_name}') is not supported by graphengine's import"
                )
            if isinstance(value, Tensor):
                self._claim(value, out_name)
            self.values[out_name] = value

    def _copies_initializer(self, node: NodeProto) -> bool:
        """An Identity of a float initializer into a new name (see _convert)."""
        return (
            node.op_type == "Identity"
            and len(node.input) == 1
            and len(node.output) == 1
            and node.input[0] in self.initializers
            and self.initializers[node.input[0]].dtype.kind == "f"
            and node.output[0] not in self.initializers
            and node.output[0] not in {o.name for o in self.model.graph.output}
        )

    def _can_fold(self, rule: Rule, node: NodeProto) -> bool:
        """Whether every input is known at import time.  A float initializer counts
        only where it is read as a value: elsewhere it is a parameter, which
        training changes, so nothing may be computed from its initial value."""
        if not rule.foldable:
            return False
        for slot, name in enumerate(node.input):
            if not name:
                continue
            value = self.values.get(name)
            if isinstance(value, np.ndarray) or name in self.known:
                continue
            if (
                value is None
                and name in self.initializers
                and (slot in rule.static or self.initializers[name].dtype.kind != "f")
            ):
                continue
            return False
        return True

    def _context(self, graph: Graph, node: NodeProto, version: int, fetch) -> NodeContext:
        shapes = self.shapes if graph is self.graph else None
        return NodeContext(graph, node, version, self.opset, fetch, self.read_tensor, shapes)

    def _apply(self, rule: Rule, node: NodeProto, version: int) -> list:
        # Tensors of known values and of initializers get their nodes (named after
        # their ONNX value) before the node's own scope is entered.
        for slot, name in enumerate(node.input):
            if name and slot not in rule.static:
                self.fetch(name, False)
        scope = sanitize(next((o for o in node.output if o), node.name or node.op_type))
        ctx = self._context(self.graph, node, version, self.fetch)
        with self.graph.name_scope(scope):
            return _as_list(rule.convert(ctx))

    def _fold(self, rule: Rule, node: NodeProto, version: int) -> list:
        """Evaluate a node whose inputs are all known, with our own kernels (or, for
        shapes with symbolic dims, in :mod:`.import_symbolic`)."""
        if any(is_symbolic(self.values.get(n)) for n in node.input if n):
            inputs = [self.fetch(n, True) if n else None for n in node.input]
            outputs = fold_symbolic(node, inputs)
            if outputs is None:
                # Not computable at import time: the rule builds nodes if it can take
                # a symbolic shape (ConstantOfShape, Reshape, Expand) and refuses,
                # naming the node or the value, if it cannot.
                return self._apply(rule, node, version)
            return outputs
        scratch = Graph("fold")
        constants: dict[str, Tensor] = {}

        def fetch(name: str, static: bool) -> Any:
            if static:
                return self.fetch(name, True)
            if name not in constants:
                constants[name] = scratch.constant(self.fetch(name, True))
            return constants[name]

        outputs = _as_list(rule.convert(self._context(scratch, node, version, fetch)))
        tensors = [v for v in outputs if isinstance(v, Tensor)]
        if any(
            over_fold_limit(fold_bytes(t.shape, t.dtype))
            for t in tensors
            if all(isinstance(d, int) for d in t.shape)
        ):
            # Too large to store in the model: the node is computed at run time.
            return self._apply(rule, node, version)
        if tensors:
            computed = run(scratch, [t.name for t in tensors])
            outputs = [computed[v.name] if isinstance(v, Tensor) else v for v in outputs]
        return [None if v is None else np.asarray(v) for v in outputs]

    def _claim(self, tensor: Tensor, onnx_name: str) -> None:
        node = self.graph.node(tensor.node)
        if tensor.index == 0 and not is_source(node.op) and node.name not in self.rename:
            self.rename[node.name] = onnx_name

    def _add_outputs(self) -> None:
        for v in self.model.graph.output:
            value = self.values.get(v.name)
            if value is None:
                raise OnnxConversionError(f"graph output '{v.name}' is not computed by any node")
            if isinstance(value, np.ndarray):
                value = self.materialize(v.name, value)
            named = self.rename.get(value.node) == v.name or (
                value.node == sanitize(v.name) and v.name not in self.result.output_names
            )
            if not named or value.index != 0:
                value = ops.identity(value)
                self.rename[value.node] = v.name
            self.result.output_names.append(v.name)
            self.result.outputs.append(value.name)

    def _finish(self) -> ImportResult:
        """Give each node that computes an ONNX value that value's name."""
        graph = self.graph
        new_names = {}
        taken = {n.name for n in graph.nodes if n.name not in self.rename}
        for node in graph.nodes:
            if node.name in self.rename:
                base = sanitize(self.rename[node.name])
                name, k = base, 0
                while name in taken:
                    k += 1
                    name = f"{base}_{k}"
                taken.add(name)
                new_names[node.name] = name

        def ref(r: str) -> str:
            node, index = parse_ref(r)
            return make_ref(new_names.get(node, node), index)

        # Values only an update writes (batch-norm running statistics) are not
        # learned: imported as non-trainable, so the optimizer leaves them alone.
        from ..training.selection import state_parameters

        state = set(state_parameters(graph))
        records = []
        for node in graph.nodes:
            name = new_names.get(node.name, node.name)
            scope = name.rpartition("/")[0] if node.name in new_names else node.scope
            attrs = dict(node.attrs)
            if node.name in state:
                attrs["trainable"] = False
            records.append(
                NodeRecord(
                    name, node.op, [ref(r) for r in node.inputs], attrs, scope, node.derived_from
                )
            )
        out = build_graph(graph.name, records, graph.values)
        out.metadata.update(graph.metadata)
        self.result.outputs = [ref(r) for r in self.result.outputs]
        out.mark_output(*self.result.outputs)
        self.result.graph = out
        return self.result


def _as_list(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]
