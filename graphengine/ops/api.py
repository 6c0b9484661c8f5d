"""The public op functions, one per op, made from the registry, and the
operators of :class:`~graphengine.graph.Tensor`.

Each op gets ``ge.<op>(inputs..., attrs..., name=None)`` whose signature and
docstring come from its declaration; ops whose numpy signature differs from
their schema have a hand-written front-end in their family module.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ..errors import GraphError
from ..graph import Graph, Tensor
from .registry import FRONTENDS, REGISTRY, REQUIRED, OpDef, public_result

#: An op function: tensors, arrays and numbers in, a tensor or a tuple of them out.
OpFunction = Callable[..., Any]


def graph_of(values: Any, op: str) -> Graph:
    """The graph that the tensors among ``values`` (nested lists allowed) belong to."""
    stack = [values]
    while stack:
        value = stack.pop()
        if isinstance(value, Tensor):
            return value.graph
        if isinstance(value, (list, tuple)):
            stack.extend(reversed(value))
    raise GraphError(
        f"{op}: no input is a tensor, so there is no graph to add the op to; "
        "pass at least one tensor (make one with g.constant)"
    )


def call(
    op: str, inputs: list[Any], attrs: dict[str, Any] | None = None, name: str | None = None
) -> Tensor | tuple[Tensor, ...]:
    """Add op ``op`` to the graph of its tensor inputs."""
    return graph_of(inputs, op).apply(op, inputs, attrs or {}, name)


_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KEYWORD = inspect.Parameter.KEYWORD_ONLY
#: ``name=None``, the last parameter of every op function.
_NAME = inspect.Parameter("name", _KEYWORD, default=None)


@functools.cache
def _positional(name: str) -> inspect.Parameter:
    # Parameters are immutable, and most ops share their input names (x, y, axis):
    # one object per name makes building the op functions at import cheaper.
    return inspect.Parameter(name, _POSITIONAL)


def _make_function(opdef: OpDef) -> OpFunction:
    # numpy-style: inputs, then required attributes, then attributes with defaults,
    # all positional-or-keyword; ``name`` is keyword-only.
    input_names = [i.name for i in opdef.inputs]
    attr_names = [a.name for a in opdef.attrs]
    required = [a.name for a in opdef.attrs if a.default is REQUIRED]
    optional = {a.name: a.default for a in opdef.attrs if a.default is not REQUIRED}
    # every parameter but the keyword-only ones (the outputs flag, name)
    names = input_names + required + list(optional)
    params = [_positional(n) for n in input_names + required]
    params += [inspect.Parameter(n, _POSITIONAL, default=d) for n, d in optional.items()]
    defaults = {**optional, "name": None}
    flag = opdef.extra_outputs_flag
    if flag is not None:
        params.append(inspect.Parameter(flag, _KEYWORD, default=False))
        defaults[flag] = False
    params.append(_NAME)
    signature = inspect.Signature(params)
    known = defaults.keys() | names

    # The call gradient rules make most: every input given by position, no attributes.
    plain = not opdef.variadic and not attr_names and flag is None
    # Their next most common call: every input by position, attributes by keyword
    # (``F.broadcast_like(dy, x, axes=...)``), every required one among them.
    by_keyword = not opdef.variadic and flag is None
    attr_set = frozenset(attr_names)
    required_set = frozenset(required)

    def function(*args: Any, **kwargs: Any) -> Any:
        if plain and not kwargs and len(args) == len(names):
            first = args[0] if args else None
            if type(first) is Tensor:  # the graph_of answer, without its search
                return first.graph.apply(opdef.name, list(args), {}, None)
            return call(opdef.name, list(args), {}, None)
        if (
            by_keyword
            and len(args) == len(input_names)
            and kwargs.keys() <= attr_set
            and required_set <= kwargs.keys()
        ):
            attrs = {n: kwargs[n] if n in kwargs else defaults[n] for n in attr_names}
            first = args[0] if args else None
            if type(first) is Tensor:  # as in the plain case: graph_of's answer
                return first.graph.apply(opdef.name, list(args), attrs, None)
            return call(opdef.name, list(args), attrs, None)
        # A hand-rolled bind: inspect.Signature.bind dominated the cost of building graphs.
        values = dict(zip(names, args))
        clash = values.keys() & kwargs.keys()
        if len(args) > len(names) or clash or not kwargs.keys() <= known:
            extra = sorted(kwargs.keys() - known) or args[len(names) :]
            problem = (
                f"multiple values for {min(clash)!r}"
                if clash
                else f"unexpected argument(s) {extra}"
            )
            raise GraphError(f"{opdef.name}{signature}: {problem}")
        values.update(kwargs)
        for key, value in defaults.items():
            values.setdefault(key, value)
        missing = [n for n in names if n not in values]
        if missing:
            raise GraphError(f"{opdef.name}{signature}: missing argument {missing[0]!r}")
        inputs = [values[n] for n in input_names]
        if opdef.variadic:
            inputs = list(inputs[0]) if isinstance(inputs[0], (list, tuple)) else inputs
        attrs = {n: values[n] for n in attr_names}
        outputs = call(opdef.name, inputs, attrs, values["name"])
        return public_result(opdef, outputs, values[flag]) if flag else outputs

    function.__name__ = function.__qualname__ = opdef.name
    function.__signature__ = signature  # type: ignore[attr-defined]
    # The declaration's docstring as written: help() and inspect.getdoc clean it on
    # display, so cleaning all of them here would only slow the import down.
    function.__doc__ = type(opdef).__doc__
    return function


def _build_namespace() -> dict[str, OpFunction]:
    functions: dict[str, OpFunction] = {}
    for name, opdef in REGISTRY.items():
        if name in ("placeholder", "parameter", "constant"):
            continue  # made with Graph.placeholder / parameter / constant
        functions[name] = _make_function(opdef)
    functions.update(FRONTENDS)
    return functions


_FUNCTIONS = _build_namespace()
globals().update(_FUNCTIONS)
#: Every public op function, by name (``ge.exp``, ``ge.matmul`` ...).
__all__ = [n for n in sorted(_FUNCTIONS) if not (n in REGISTRY and REGISTRY[n].internal)]


def _binary(op: str, reflected: bool = False) -> Callable[[Tensor, Any], Any]:
    opdef = REGISTRY[op]
    if (
        op not in FRONTENDS
        and not opdef.variadic
        and not opdef.attrs
        and opdef.extra_outputs_flag is None
    ):
        # What the op function does for two positional inputs, without its frames
        # (the operators build most nodes of gradient graphs).
        if reflected:
            return lambda self, other: self.graph.apply(op, [other, self], {}, None)
        return lambda self, other: self.graph.apply(op, [self, other], {}, None)
    if reflected:
        return lambda self, other: _FUNCTIONS[op](other, self)
    return lambda self, other: _FUNCTIONS[op](self, other)


def _unary(op: str) -> Callable[[Tensor], Any]:
    return lambda self: _FUNCTIONS[op](self)


for _dunder, _op in [
    ("add", "add"),
    ("sub", "subtract"),
    ("mul", "multiply"),
    ("truediv", "divide"),
    ("matmul", "matmul"),
    ("pow", "power"),
]:
    setattr(Tensor, f"__{_dunder}__", _binary(_op))
    setattr(Tensor, f"__r{_dunder}__", _binary(_op, reflected=True))
for _dunder, _op in [
    ("eq", "equal"),
    ("ne", "not_equal"),
    ("lt", "less"),
    ("le", "less_equal"),
    ("gt", "greater"),
    ("ge", "greater_equal"),
    ("and", "logical_and"),
    ("or", "logical_or"),
]:
    setattr(Tensor, f"__{_dunder}__", _binary(_op))
for _dunder, _op in [("neg", "negative"), ("abs", "abs"), ("invert", "logical_not")]:
    setattr(Tensor, f"__{_dunder}__", _unary(_op))


#: numpy ufuncs whose graphengine op has another name (np.abs is np.absolute;
#: np.true_divide is np.divide since numpy 2, our lower bound).
_UFUNC_NAMES = {"absolute": "abs"}


def _array_ufunc(self: Tensor, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
    """numpy's hook for a ufunc given a tensor: ``np.exp(t)`` builds ``ge.exp(t)``,
    and ``array + t`` builds ``ge.add(array, t)`` (numpy calls this for its
    operators too).  The op functions are numpy-named, so a ufunc maps to the op
    of its name; one without an op, a ufunc method (``np.add.reduce``) or a
    keyword (``out=``) is refused with the way to write it."""
    name = _UFUNC_NAMES.get(ufunc.__name__, ufunc.__name__)
    call = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
    if method != "__call__" or kwargs:
        what = "keyword " + ", ".join(f"{k}=" for k in kwargs) if kwargs else "this ufunc method"
        raise GraphError(
            f"{call} cannot build a graph node for tensor '{self.name}' with {what}: "
            "write it with graphengine ops (ge.sum for np.add.reduce), without out= or where="
        )
    if name not in __all__:
        raise GraphError(
            f"{call} has no graphengine op, so it cannot take tensor '{self.name}': "
            "the ops are ge.<name>, listed in docs/ops.md"
        )
    return _FUNCTIONS[name](*inputs)


Tensor.__array_ufunc__ = _array_ufunc  # type: ignore[assignment]
