"""Executing graphs on numpy: compiled plans, feeds and fetches.

:func:`compile_plan` does all graph work once per (graph version, fetches, feed
names): it prunes to the fetched tensors, orders the nodes, binds each
kernel to its attributes, assigns every tensor a slot in a flat list and works
out when each slot can be released.  :meth:`Plan.run` then only checks feeds
and calls kernels.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .compiler import prune_to
from .errors import ExecutionError, FeedError
from .graph import Graph, Node, Tensor, canonical_ref, other_graph, require_graph
from .memory_plan import MAX_SIGNATURES, Recording, build_memory_plan, shape_signature
from .run_budget import check_bound_sizes
from .shapes import format_shape, match_dims


class RunContext:
    """What context-using kernels (dropout, batch norm) see: the mode and an RNG.

    ``rng(node)`` gives a generator seeded from the run seed and the node's own
    seed, so a run with the same seed draws the same numbers.
    """

    def __init__(self) -> None:
        self.training = False
        self.seed = 0

    def rng(self, node_seed: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, node_seed))


@dataclass
class _Step:
    node: Node
    fn: Callable[..., Any]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    release: tuple[int, ...]
    #: The kernel returns one array, not a sequence (OpDef.multi_output is off;
    #: a split into one section still returns a list).
    single: bool = True
    #: For a ParameterUpdate, the parameter whose value (the first input) the
    #: kernel changes in place, returning nothing; such steps come last.  Empty
    #: for every other step.
    update: str = ""


@dataclass(frozen=True)
class ParameterUpdate:
    """A change that a plan makes to a parameter's value in place on every run:
    ``kernel(value, *inputs)``, with ``inputs`` tensor references of the plan's
    graph.  Updates run after every other step of the run, so after every read
    of the parameter, in the order given; the kernel's result is ignored.  The
    trainer folds plain SGD steps into the products that would compute their
    gradients this way (:mod:`graphengine.training.folded_sgd`).

    ``node`` names the node the update stands for (it appears in errors and
    profiles): the gradient it computes instead of fetching it."""

    parameter: str
    inputs: tuple[str, ...]
    kernel: Callable[..., object]
    node: str


@dataclass
class Plan:
    """A compiled execution plan; reuse it by calling :func:`run` with the same
    fetches and feed names (:func:`graphengine.run` keeps the plans it compiles
    in a :class:`PlanCache`)."""

    #: How the plan reaches its graph (for the parameter values, read at each
    #: run): the graph itself behind a closure, or a weak reference for cached
    #: plans, so that a cache never keeps a graph alive (see graph).
    _graph_ref: Callable[[], Graph | None]
    fetches: tuple[str, ...]
    placeholders: tuple[Node, ...]  # the placeholders these fetches need
    feed_slots: dict[str, int]
    param_slots: tuple[tuple[str, int], ...]
    fetch_slots: tuple[int, ...]
    steps: list[_Step]
    num_slots: int
    template: list[Any]  # constants pre-filled
    context: RunContext = field(default_factory=RunContext)
    #: For each fetch, whether it is returned as a copy: when it may share memory
    #: with a parameter, constant or feed, or with an earlier fetch (see _view_roots).
    fetch_copies: tuple[bool, ...] = ()

    #: Fetched arrays may live in the plan's buffers, valid until the next run
    #: (see :mod:`graphengine.memory_plan`); off by default.
    reuse_fetch_buffers: bool = False
    #: Slots whose planned buffers are views of one array, back to back (see
    #: compile_plan's packed_fetches).
    packed_slots: tuple[int, ...] = ()
    #: Output buffers per shape signature (None: the signature could not be planned).
    _memory: dict[tuple[Any, ...], list[np.ndarray | None] | None] = field(default_factory=dict)
    #: The steps of each planned signature as one function (see _program).
    _programs: dict[tuple[Any, ...], Callable[[list[Any]], list[Any]]] = field(default_factory=dict)
    #: Signatures whose feeds passed check_feeds.
    _checked: set[tuple[Any, ...]] = field(default_factory=set)

    @property
    def updates(self) -> tuple[str, ...]:
        """The parameters this plan changes in place on each run (ParameterUpdate)."""
        return tuple(s.update for s in self.steps if s.update)

    @property
    def graph(self) -> Graph:
        """The graph this plan was compiled from."""
        graph = self._graph_ref()
        if graph is None:
            raise ExecutionError(
                f"the graph of the plan computing {', '.join(self.fetches)} no longer "
                "exists; compile the plan again from a graph you keep"
            )
        return graph

    def run(
        self, feeds: Mapping[str, Any], *, training: bool = False, seed: int = 0
    ) -> list[np.ndarray]:
        values = self.template.copy()
        arrays = True
        for name, slot in self._feed_items:
            value = feeds[name]
            if type(value) is not np.ndarray:
                arrays = False
                break
            values[slot] = value
        params = self.graph.values
        for name, slot in self.param_slots:
            values[slot] = params[name]
        self.context.training = training
        self.context.seed = seed
        if arrays:
            key = shape_signature(values, self._input_slots, training)
            program = self._programs.get(key)
            # Feeds are valid or not by their dtypes and shapes alone, which the
            # key holds: a signature checked once (a planned one was) needs no
            # second check.
            if program is None and key not in self._checked:
                check_feeds(self.placeholders, feeds)
                if len(self._checked) >= _MAX_CHECKED:
                    self._checked.clear()
                self._checked.add(key)
        else:
            for name, array in check_feeds(self.placeholders, feeds).items():
                values[self.feed_slots[name]] = array
            key = shape_signature(values, self._input_slots, training)
            program = self._programs.get(key)
        if program is None and key not in self._memory:
            # A signature not seen yet (graphengine.run_budget).
            check_bound_sizes(self.steps, values, self.feed_slots)
        if program is not None:
            try:
                return self._run_program(values, program)
            except _UpdateFailed as failed:
                # Earlier updates of this run are applied: running again would
                # apply them twice.
                step = self.steps[failed.index]
                cause = failed.__cause__
                raise ExecutionError(
                    f"the update of parameter '{step.update}' (node "
                    f"'{step.node.name}') failed: {type(cause).__name__}: {cause}"
                ) from cause
            except Exception:
                # The plain run reports a real failure (naming the node), and the
                # plan stays; if it succeeds, some shape depends on input values:
                # this signature runs unplanned from now on.
                result = self._execute(values)
                self._memory[key] = None
                del self._programs[key]
                return result
        elif key not in self._memory and len(self._memory) < MAX_SIGNATURES:
            recording = Recording()
            result = self._execute(values, recording)
            kernels = [out_kernel(step, recording, i) for i, step in enumerate(self.steps)]
            buffers = build_memory_plan(
                self.steps,
                recording,
                self.fetch_slots,
                self.reuse_fetch_buffers,
                kernels,
                self.packed_slots,
            )
            self._memory[key] = buffers
            self._programs[key] = self._program(buffers, kernels)
            return result
        return self._execute(values)

    @functools.cached_property
    def _input_slots(self) -> tuple[int, ...]:
        return tuple(self.feed_slots.values()) + tuple(s for _, s in self.param_slots)

    @functools.cached_property
    def _feed_items(self) -> tuple[tuple[str, int], ...]:
        return tuple((n.name, self.feed_slots[n.name]) for n in self.placeholders)

    def _program(
        self, buffers: Sequence[Any], kernels: Sequence[Callable[..., Any] | None]
    ) -> Callable[[list[Any]], list[Any]]:
        """The planned steps as one Python function (:func:`step_source`): each
        step one call on local variables, with its buffer and kernel bound."""
        namespace: dict[str, Any] = {
            "_array": np.array,
            "_asarray": np.asarray,
            "_ndarray": np.ndarray,
            "_UpdateFailed": _UpdateFailed,
        }
        for i, (step, buf, planned) in enumerate(zip(self.steps, buffers, kernels)):
            namespace[f"k{i}"] = planned if buf is not None else step.fn
            namespace[f"b{i}"] = buf
        source = step_source(
            self.steps, [b is not None for b in buffers], self.fetch_slots, self.fetch_copies
        )
        exec(compile(source, f"<plan of {', '.join(self.fetches)[:200]}>", "exec"), namespace)
        program: Callable[[list[Any]], list[Any]] = namespace["run_steps"]
        return program

    def _run_program(
        self, values: list[Any], program: Callable[[list[Any]], list[Any]]
    ) -> list[Any]:
        # The program returns the fetches as users get them (see step_source).
        token = _FLOAT_STATE.set(_ignoring_float_errors())
        try:
            return program(values)
        finally:
            _FLOAT_STATE.reset(token)

    def _execute(self, values: list[Any], recording: Recording | None = None) -> list[np.ndarray]:
        """Run every step, each kernel allocating its result (a first run records
        what it saw, for the memory plan)."""
        step = None
        try:
            with np.errstate(all="ignore"):
                for step in self.steps:
                    args = [values[j] for j in step.inputs]
                    if step.update:
                        step.fn(*args)
                        if recording is not None:
                            recording.add(args, [])
                    elif step.single:
                        values[step.outputs[0]] = result = step.fn(*args)
                        if recording is not None:
                            recording.add(args, [result])
                    else:
                        results = list(step.fn(*args))
                        for slot, value in zip(step.outputs, results):
                            values[slot] = value
                        if recording is not None:
                            recording.add(args, results)
                    for slot in step.release:
                        values[slot] = None
        except Exception as exc:
            if step is None:
                raise
            raise _kernel_error(step, values, exc) from exc
        return self._fetched(values)

    def _fetched(self, values: list[Any]) -> list[np.ndarray]:
        # Kernels may return numpy scalars for 0-d results; users get arrays.
        # Fetches that may share memory with the graph or another fetch are copied
        # (see fetch_copies), so that changing a result cannot change the graph.
        return [
            np.array(values[i]) if copy else np.asarray(values[i])
            for i, copy in zip(self.fetch_slots, self.fetch_copies)
        ]


def _ignoring_float_errors() -> Any:
    """numpy's error state as ``np.errstate(all="ignore")`` would make it from the
    current one, for a run to set in numpy's context variable (kernels overflow
    or divide by zero by design: exp of large logits, log of 0).

    np.errstate builds that state anew on each entry (1.3-3 us, a tenth of a small
    plan's overhead per run); setting and resetting the variable with a state
    derived once costs 0.2 us.  The state is derived again whenever the current
    one is another object (np.setbufsize, an enclosing np.errstate), so a run sees
    what np.errstate would give it, threads and nesting included.
    """
    global _derived_state
    current = _FLOAT_STATE.get()
    derived = _derived_state  # read once: another thread may replace it
    if derived[0] is not current:
        derived = _derived_state = (current, _make_extobj(all="ignore"))
    return derived[1]


class _ErrstateVariable:
    """Where numpy keeps its error state elsewhere: ``set`` enters
    np.errstate(all="ignore") and returns it as the token ``reset`` exits."""

    def get(self) -> None:
        return None

    def set(self, state: Any) -> Any:
        errstate = np.errstate(all="ignore")
        errstate.__enter__()
        return errstate

    def reset(self, token: Any) -> None:
        token.__exit__(None, None, None)


#: (the state it was derived from, the ignoring state), replaced as one tuple.
_derived_state: tuple[Any, Any] = (object(), None)


def _numpy_float_state() -> tuple[Any, Callable[..., Any]]:
    """numpy's context variable for its error state and the function deriving a
    state from the current one (numpy >= 2.0); else a stand-in using np.errstate."""
    try:
        from numpy._core import _ufunc_config

        names = vars(_ufunc_config)
        return names["_extobj_contextvar"], names["_make_extobj"]
    except (ImportError, KeyError):  # another numpy layout
        return _ErrstateVariable(), lambda **_: None


_FLOAT_STATE, _make_extobj = _numpy_float_state()


def step_source(
    steps: Sequence[_Step],
    planned: Sequence[bool],
    fetch_slots: Sequence[int],
    fetch_copies: Sequence[bool] = (),
) -> str:
    """Python source of a function ``run_steps(values)`` that runs ``steps`` once
    and returns the fetched values: slot ``s`` is the local variable ``vs`` (read
    from ``values`` when no step computes it), step ``i`` calls ``ki`` (with
    ``out=bi`` where ``planned[i]``), and a slot is set to None after its last
    use, as in an unplanned run.  A plan's per-step cost is then the kernel call
    alone: no dispatch on the call's shape, no list indexing.

    With ``fetch_copies`` (see :class:`Plan`), the function also converts the
    fetches as :meth:`Plan._fetched` does, inline: ``_array(v)`` for a copy,
    ``_asarray(v)`` for a kernel's numpy scalar, and an ndarray as it is.

    >>> import graphengine as ge
    >>> g = Graph()
    >>> x = g.placeholder("x", (3,))
    >>> plan = compile_plan(g, [ge.exp(x * 2.0).name], ["x"])
    >>> print(step_source(plan.steps, [True, True], plan.fetch_slots))
    def run_steps(values):
        v0 = values[0]
        v1 = values[1]
        v2 = k0(v0, v1, out=b0)
        v3 = k1(v2, out=b1)
        v2 = None
        return [v3]
    """
    computed = {slot for step in steps for slot in step.outputs}
    read = [s for s in dict.fromkeys(j for step in steps for j in step.inputs) if s not in computed]
    read += [s for s in fetch_slots if s not in computed and s not in read]
    lines = ["def run_steps(values):"]
    lines += [f"    v{s} = values[{s}]" for s in read]
    for i, (step, out) in enumerate(zip(steps, planned)):
        args = [f"v{j}" for j in step.inputs] + ([f"out=b{i}"] if out else [])
        call = f"k{i}({', '.join(args)})"
        if step.update:
            # A failed update is reported, not retried (see Plan.run).
            lines += [
                "    try:",
                f"        {call}",
                "    except Exception as exc:",
                f"        raise _UpdateFailed({i}) from exc",
            ]
        elif step.single:
            lines.append(f"    v{step.outputs[0]} = {call}")
        else:
            lines.append(f"    ({''.join(f'v{s}, ' for s in step.outputs)}) = {call}")
        if step.release:
            lines.append(f"    {' = '.join(f'v{s}' for s in step.release)} = None")
    if fetch_copies:
        returned = [
            f"_array(v{s})" if copy else f"(v{s} if type(v{s}) is _ndarray else _asarray(v{s}))"
            for s, copy in zip(fetch_slots, fetch_copies, strict=True)
        ]
    else:
        returned = [f"v{s}" for s in fetch_slots]
    lines.append(f"    return [{', '.join(returned)}]")
    return "\n".join(lines)


#: Feed signatures a plan remembers as checked (cleared when full).
_MAX_CHECKED = 64


def out_kernel(step: _Step, recording: Recording, index: int) -> Callable[..., Any] | None:
    """A kernel for ``step`` that writes its result into a given ``out=`` array
    (a tuple of arrays or None for a kernel with several outputs), for the shapes
    the recording run saw, or None: the numpy ufunc itself for elementwise ops
    and ``matmul``, else what the op declares (:meth:`OpDef.out_kernel`)."""
    if step.single and len(step.outputs) != 1:
        return None
    if isinstance(step.fn, np.ufunc):
        return step.fn if step.fn.nout == 1 else None
    inputs = [i for i in recording.inputs[index] if i is not None]
    if len(inputs) != len(step.inputs):
        return None
    return step.node.opdef.out_kernel(dict(step.node.attrs), inputs)


def _kernel_error(step: _Step, values: list[Any], exc: Exception) -> ExecutionError:
    shapes = ", ".join(
        f"{ref} {getattr(values[i], 'dtype', '?')}{getattr(values[i], 'shape', '')}"
        for ref, i in zip(step.node.inputs, step.inputs)
    )
    return ExecutionError(
        f"node '{step.node.name}' ({step.node.op}) failed on inputs "
        f"[{shapes}]: {type(exc).__name__}: {exc}"
    )


def bind_kernel(node: Node, context: RunContext) -> Callable[..., Any]:
    """The node's kernel with its attributes (and context) bound, ready to call."""
    opdef = node.opdef
    attrs = dict(node.attrs)
    if opdef.uses_context:
        attrs["ctx"] = context
    return functools.partial(opdef.kernel, **attrs) if attrs else opdef.kernel


def compile_plan(
    graph: Graph,
    fetches: Sequence[str],
    feed_names: Sequence[str],
    *,
    reuse_fetch_buffers: bool = False,
    updates: Sequence[ParameterUpdate] = (),
    packed_fetches: Sequence[str] = (),
) -> Plan:
    """Compile a plan computing ``fetches`` (tensor references) from feeds, and
    applying ``updates`` to parameters in place on each run (see ParameterUpdate).

    Runs reuse preallocated output buffers (:mod:`graphengine.memory_plan`);
    with ``reuse_fetch_buffers`` the fetched arrays may be such buffers too, so
    each run overwrites the previous run's results (for loops that consume them
    at once, as the trainer does).  With it, the buffers of ``packed_fetches``
    (fetched tensor references) are laid back to back in one array, in the order
    given, where each is a planned output and all share a dtype: the trainer's
    gradients, which plain SGD then updates from in one numpy call.

    Raises FeedError for a bad feed name or a missing feed, a packed tensor that
    is not fetched, and for an update of
    something other than a parameter, a parameter updated twice, or one that a
    fetch returns (or views)."""
    fetch_refs = tuple(graph.tensor(f).name for f in fetches)
    update_refs = tuple(graph.tensor(r).name for u in updates for r in (u.parameter, *u.inputs))
    _check_updates(graph, updates)
    packed = tuple(graph.tensor(r).name for r in packed_fetches)
    if any(r not in fetch_refs for r in packed):
        raise FeedError(
            f"packed fetches {[r for r in packed if r not in fetch_refs]} are not "
            "fetched; pack only fetched tensors"
        )
    nodes = prune_to(graph, fetch_refs + update_refs)
    feed_set = set(feed_names)
    for name in feed_names:
        node = graph.get(name)
        if node is None or node.op != "placeholder":
            what = "no placeholder" if node is None else f"a {node.op} node, not a placeholder"
            raise FeedError(
                f"feed {name!r} names {what}; placeholders are "
                f"{', '.join(n.name for n in graph.placeholders()) or 'none'}"
            )
    placeholders = tuple(n for n in nodes if n.op == "placeholder")
    missing = [n.name for n in placeholders if n.name not in feed_set]
    if missing:
        raise FeedError(
            "missing feed for placeholder(s) "
            + ", ".join(f"'{n}' {graph.node(n).types[0]}" for n in missing)
            + f" needed to compute {', '.join(fetch_refs)}"
        )

    slot_of: dict[str, int] = {}
    for node in nodes:
        for ref in node.output_refs():
            slot_of[ref] = len(slot_of)
    template: list[Any] = [None] * len(slot_of)
    context = RunContext()
    steps: list[_Step] = []
    feed_slots, param_slots = {}, []
    for node in nodes:
        if node.op == "placeholder":
            feed_slots[node.name] = slot_of[node.name]
        elif node.op == "parameter":
            param_slots.append((node.name, slot_of[node.name]))
        elif node.op == "constant":
            template[slot_of[node.name]] = node.attrs["value"]
        elif node.opdef.alias:
            # The output is the input: share its slot instead of running a kernel.
            slot_of[node.name] = slot_of[canonical_ref(node.inputs[0])]
        else:
            steps.append(
                _Step(
                    node,
                    bind_kernel(node, context),
                    tuple(slot_of[canonical_ref(r)] for r in node.inputs),
                    tuple(slot_of[r] for r in node.output_refs()),
                    (),
                    not node.opdef.multi_output,
                )
            )
    for update in updates:
        refs = (update.parameter, *update.inputs)
        steps.append(
            _Step(
                graph.node(update.node),
                update.kernel,
                tuple(slot_of[graph.tensor(r).name] for r in refs),
                (),
                (),
                update=update.parameter,
            )
        )
    # Release each computed value after its last use, unless it is fetched, so
    # peak memory follows the largest live set.
    keep = {slot_of[r] for r in fetch_refs}
    last_use: dict[int, int] = {}
    for i, step in enumerate(steps):
        for slot in step.inputs:
            last_use[slot] = i
    computed = {s for step in steps for s in step.outputs}
    releases: dict[int, list[int]] = {}
    for slot, i in last_use.items():
        if slot in computed and slot not in keep:
            releases.setdefault(i, []).append(slot)
    for i, step in enumerate(steps):
        # An output nobody reads is dropped at once.
        unused = [s for s in step.outputs if s not in last_use and s not in keep]
        step.release = tuple(sorted(releases.get(i, []) + unused))
    fetch_slots = tuple(slot_of[r] for r in fetch_refs)
    stored = (
        {s for _, s in param_slots}
        | set(feed_slots.values())
        | {i for i, v in enumerate(template) if v is not None}
    )
    roots = _view_roots(steps)
    seen: set[int] = set()
    copies = []
    for slot in fetch_slots:
        root = roots.get(slot, slot)
        copies.append(root in stored or root in seen)
        seen.add(root)
    updated = {slot_of[u.parameter] for u in updates}
    for ref, slot in zip(fetch_refs, fetch_slots):
        if roots.get(slot, slot) in updated:
            raise FeedError(
                f"fetch {ref!r} returns the memory of a parameter that the plan "
                "updates in place, which the updates would change before it is "
                "returned; fetch a copy, or leave that parameter's update out"
            )
    return Plan(
        functools.partial(_identity, graph),
        fetch_refs,
        placeholders,
        feed_slots,
        tuple(param_slots),
        fetch_slots,
        steps,
        len(slot_of),
        template,
        context,
        tuple(copies),
        reuse_fetch_buffers,
        tuple(slot_of[r] for r in packed) if reuse_fetch_buffers else (),
    )


def _identity(graph: Graph) -> Graph:
    return graph


class _UpdateFailed(Exception):
    """A ParameterUpdate's kernel failed in a planned run (the cause is chained)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def _check_updates(graph: Graph, updates: Sequence[ParameterUpdate]) -> None:
    seen: set[str] = set()
    for update in updates:
        node = graph.get(update.parameter)
        if node is None or node.op != "parameter":
            what = "no node" if node is None else f"a {node.op} node"
            raise FeedError(f"an update names {update.parameter!r}, {what}, not a parameter")
        if update.parameter in seen:
            raise FeedError(f"parameter {update.parameter!r} has two updates; give it one")
        seen.add(update.parameter)
        if graph.get(update.node) is None:
            raise FeedError(f"the update of {update.parameter!r} names no node {update.node!r}")


def _view_roots(steps: list[_Step]) -> dict[int, int]:
    """For each slot a kernel may fill with a view (its op's ``view_map``), the
    slot whose memory it may share, followed through chains of views."""
    roots: dict[int, int] = {}
    for step in steps:
        opdef = step.node.opdef
        for k, slot in enumerate(step.outputs):
            source = opdef.view_of(k)
            if source is not None:
                viewed = step.inputs[source]
                roots[slot] = roots.get(viewed, viewed)
    return roots


def check_feeds(placeholders: Sequence[Node], feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check fed values against placeholders: dtype exactly, shape dim by dim,
    each symbolic dim bound to one size across all feeds.  Returns the arrays."""
    bound: dict[str, tuple[int, str]] = {}
    out = {}
    for node in placeholders:
        declared = node.types[0]
        value = feeds[node.name]
        if isinstance(value, np.ndarray):
            array = value
        else:
            try:
                array = np.asarray(value, dtype=declared.dtype)
            except (TypeError, ValueError) as exc:
                raise FeedError(
                    f"feed '{node.name}': cannot make a {declared.dtype.name} array "
                    f"from {type(value).__name__}: {exc}"
                ) from None
        if array.dtype != declared.dtype:
            raise FeedError(
                f"feed '{node.name}' has dtype {array.dtype}, but placeholder "
                f"'{node.name}' is {declared.dtype.name}; convert it with "
                f".astype(np.{declared.dtype.name})"
            )
        if array.ndim != len(declared.shape):
            raise FeedError(
                f"feed '{node.name}' has shape {array.shape} (rank {array.ndim}), "
                f"but placeholder '{node.name}' has shape "
                f"{format_shape(declared.shape)} (rank {len(declared.shape)})"
            )
        bad = match_dims(declared.shape, array.shape, node.name, bound)
        if bad is not None and bad.bound_by:
            raise FeedError(
                f"feed '{node.name}' has {bad.expected}={bad.size} on axis "
                f"{bad.axis}, but feed '{bad.bound_by}' set {bad.expected}="
                f"{bad.bound_size}; every feed must agree on the size of "
                f"{bad.expected}"
            )
        if bad is not None:
            raise FeedError(
                f"feed '{node.name}' has shape {array.shape}, but placeholder "
                f"'{node.name}' needs {format_shape(declared.shape)}: "
                f"axis {bad.axis} is {bad.size}, expected {bad.expected}"
            )
        out[node.name] = array
    return out


def run(
    graph: Graph,
    fetches: str | Tensor | Sequence[str | Tensor],
    feeds: Mapping[str, Any] | None = None,
    *,
    training: bool = False,
    seed: int = 0,
) -> Any:
    """Run ``graph`` and return the fetched values.

    ``fetches`` is one tensor (name or handle), giving one array, or a list,
    giving a dict from each fetch's name to its array.  ``feeds`` maps
    placeholder names to arrays; only placeholders the fetches depend on are
    needed.  ``training`` switches dropout and batch normalization to their
    training behaviour; ``seed`` seeds random ops for this run.

    Raises FeedError for bad feeds or fetches, ExecutionError when a kernel fails.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None,))
    >>> ge.run(g, ge.exp(x), {"x": np.zeros(2, np.float32)})
    array([1., 1.], dtype=float32)
    """
    require_graph(graph, "ge.run")
    single = isinstance(fetches, (str, Tensor))
    try:
        fetch_list: list[str | Tensor] = [fetches] if single else list(fetches)  # type: ignore[list-item]
    except TypeError:
        fetch_list = [fetches]  # type: ignore[list-item]
    if not all(isinstance(f, (str, Tensor)) for f in fetch_list):
        raise FeedError(
            "fetches must be a tensor (its name or its Tensor) or a list of them, "
            f"not {fetches!r:.80}"
        )
    if not fetch_list:
        raise FeedError("nothing to fetch: give at least one tensor name")
    names = [f.name if isinstance(f, Tensor) else f for f in fetch_list]
    if feeds is None:
        feeds = {}
    elif isinstance(feeds, Mapping):
        feeds = dict(feeds)
    else:
        raise FeedError(
            "feeds must be a dict from placeholder names to arrays, "
            f"like {{'x': array}}, not a {type(feeds).__name__}"
        )
    for f in fetch_list:
        if isinstance(f, Tensor) and f.graph is not graph:
            raise FeedError(
                f"fetch '{f.name}' belongs to {other_graph(f.graph, graph)}: "
                f"fetch by name ('{f.name}') for the tensor of that name in the graph you run"
            )
    feeds = {(k.name if isinstance(k, Tensor) else k): v for k, v in feeds.items()}
    plan = _default_cache.get(graph, names, feeds)
    results = plan.run(feeds, training=training, seed=seed)
    return results[0] if single else dict(zip(names, results))


class PlanCache:
    """Compiled plans by graph, kept while the graph's :attr:`~Graph.version` stays
    the same: a change to the graph drops its plans on the next lookup.

    Graphs are held weakly (a graph nobody else holds is freed with its plans),
    and each graph keeps at most ``max_plans`` plans, dropping the least
    recently used.  :func:`run` uses one module-wide cache.
    """

    def __init__(self, max_plans: int = 64) -> None:
        self.max_plans = max_plans
        self._entries: weakref.WeakKeyDictionary[Graph, _CacheEntry] = weakref.WeakKeyDictionary()

    def get(self, graph: Graph, fetches: Sequence[str], feed_names: Iterable[str]) -> Plan:
        """The plan computing ``fetches`` from feeds named ``feed_names``,
        compiled on first use (raising what :func:`compile_plan` raises)."""
        entry = self._entries.get(graph)
        if entry is None or entry.version != graph.version:
            entry = self._entries[graph] = _CacheEntry(graph.version)
        key = (tuple(fetches), tuple(sorted(feed_names)))
        plan = entry.plans.pop(key, None)
        if plan is None:
            plan = compile_plan(graph, key[0], key[1])
            # Weakly: the cache must not keep the graph alive through its plans.
            plan._graph_ref = weakref.ref(graph)
            if len(entry.plans) >= self.max_plans:
                del entry.plans[next(iter(entry.plans))]
        entry.plans[key] = plan  # most recently used last
        return plan

    def plans(self, graph: Graph) -> list[Plan]:
        """The plans held for ``graph`` at its current version."""
        entry = self._entries.get(graph)
        if entry is None or entry.version != graph.version:
            return []
        return list(entry.plans.values())

    def clear(self) -> None:
        self._entries.clear()


@dataclass
class _CacheEntry:
    version: int
    plans: dict[tuple[tuple[str, ...], tuple[str, ...]], Plan] = field(default_factory=dict)


_default_cache = PlanCache()
