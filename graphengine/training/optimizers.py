"""Optimizers that update parameter arrays in place: SGD (momentum, Nesterov),
Adam and AdamW, with weight decay and a gradient scale for clipping.

Each optimizer owns its state (momentum buffers, moment estimates, the step
count) and two scratch buffers per parameter, all allocated once by
:meth:`Optimizer.setup`, so a training step allocates nothing here.  Gradients
are read only: they may be views the executor shares with other values (a
broadcast, a feed), so clipping is passed in as ``grad_scale`` and folded into
the update instead of rescaling the gradient arrays.

The update rules follow PyTorch's ``torch.optim`` (``dampening=0``), so
hyperparameters mean the same thing as there:

* SGD: ``g = s*grad + wd*p``; with momentum ``b = mu*b + g`` and the step is
  ``b`` (or ``g + mu*b`` with Nesterov); ``p -= lr * step``.
* Adam: ``g = s*grad + wd*p`` (L2 decay, coupled); ``m = b1*m + (1-b1)*g``;
  ``v = b2*v + (1-b2)*g**2``; ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` with the
  bias corrections ``m_hat = m/(1-b1**t)``, ``v_hat = v/(1-b2**t)``.
* AdamW: as Adam with ``g = s*grad``, and ``p *= 1 - lr*wd`` first (decoupled decay,
  Loshchilov and Hutter, 2019).

>>> import numpy as np
>>> p = {"w": np.array([1.0, 2.0], np.float32)}
>>> opt = SGD(momentum=0.9)
>>> opt.setup(p)
>>> opt.step(p, {"w": np.array([0.5, -1.0], np.float32)}, lr=0.1)
>>> p["w"].tolist()
[0.949999988079071, 2.0999999046325684]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from operator import is_
from typing import Any, ClassVar

import numpy as np

from ..errors import TrainingError
from ..training_spec import OptimizerSpec, ScheduleSpec


class Optimizer:
    """Base class: per-parameter state arrays (``slots``), a step count, and an
    in-place update rule (``_update``) that subclasses define."""

    name: ClassVar[str] = ""
    #: Names of the per-parameter state arrays, saved in checkpoints.
    slot_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, weight_decay: float = 0.0) -> None:
        if weight_decay < 0:
            raise TrainingError(f"{self.name}: weight_decay must be >= 0, got {weight_decay}")
        self.weight_decay = float(weight_decay)
        #: Number of updates applied so far (Adam's bias corrections use it).
        self.iterations = 0
        self.slots: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slot_names}
        self._scratch: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def hyperparameters(self) -> dict[str, Any]:
        """The settings that define the update (compared on resume)."""
        return {"weight_decay": self.weight_decay}

    def setup(self, params: Mapping[str, np.ndarray]) -> None:
        """Allocate zeroed state and scratch buffers for ``params`` (name -> array)."""
        for name, p in params.items():
            for slot in self.slot_names:
                self.slots[slot][name] = np.zeros_like(p)
            self._scratch[name] = (np.empty_like(p), np.empty_like(p))

    def step(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        lr: float,
        grad_scale: float = 1.0,
    ) -> None:
        """Apply one update to every parameter in ``params``, in place.

        ``grad_scale`` multiplies every gradient first (clipping by global norm).
        """
        self.iterations += 1
        for name, p in params.items():
            self._update(name, p, grads[name], float(lr), float(grad_scale))

    def _update(
        self, name: str, p: np.ndarray, grad: np.ndarray, lr: float, scale: float
    ) -> None:  # pragma: no cover - every optimizer overrides it
        raise NotImplementedError

    def _scaled_grad(
        self,
        p: np.ndarray,
        grad: np.ndarray,
        scale: float,
        out: np.ndarray,
        spare: np.ndarray,
        weight_decay: float,
    ) -> np.ndarray:
        """``scale*grad + weight_decay*p`` in ``out`` (or ``grad`` itself when that is it)."""
        if scale == 1.0 and not weight_decay:
            return grad
        np.multiply(grad, scale, out=out)
        if weight_decay:
            np.multiply(p, weight_decay, out=spare)
            out += spare
        return out

    # -- checkpoints -------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
        """(scalars, slots): what a checkpoint stores to resume this optimizer."""
        return {"iterations": self.iterations}, self.slots

    def load_state(
        self, scalars: Mapping[str, Any], slots: Mapping[str, Mapping[str, np.ndarray]]
    ) -> None:
        """Restore :meth:`state` output into the buffers made by :meth:`setup`.

        Parameters missing from ``slots`` keep fresh (zero) state.
        """
        self.iterations = int(scalars.get("iterations", 0))
        for slot, arrays in self.slots.items():
            for name, buffer in arrays.items():
                saved = slots.get(slot, {}).get(name)
                if saved is not None:
                    if saved.shape != buffer.shape:
                        raise TrainingError(
                            f"optimizer state '{slot}' of parameter '{name}' "
                            f"has shape {saved.shape}, the parameter has "
                            f"{buffer.shape}"
                        )
                    buffer[...] = saved


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    name = "sgd"

    def __init__(
        self, *, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
    ) -> None:
        if not 0.0 <= momentum < 1.0:
            raise TrainingError(f"sgd: momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise TrainingError("sgd: nesterov needs a momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.slot_names = ("momentum",) if momentum else ()
        super().__init__(weight_decay=weight_decay)
        #: The last parameters and gradients found packed (see _packed), and
        #: (parameter block, gradient block, scratch) for them.
        self._packed_key: tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]] | None = None
        self._packed_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov, **super().hyperparameters()}

    def set_momentum(self, value: float) -> None:
        """Set the momentum of the next updates (a one-cycle schedule cycles it).
        An SGD made without momentum keeps no buffer, so it cannot take one."""
        if not self.slot_names:
            raise TrainingError("sgd: made without momentum, so it cannot cycle one")
        self.momentum = float(value)

    def step(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        lr: float,
        grad_scale: float = 1.0,
    ) -> None:
        if self.momentum or self.weight_decay or grad_scale != 1.0:
            super().step(params, grads, lr, grad_scale)
            return
        # Plain SGD, the common case: the same two in-place passes as _update
        # (so the same bits), without its per-parameter calls and branches,
        # which cost as much as the update itself on small layers.
        self.iterations += 1
        lr = float(lr)
        packed = self._packed(params, grads)
        if packed is not None:
            # Every parameter and gradient a view of one array each, in one order
            # (the trainer lays them out so): the same two passes over all at once.
            values, gradients, tmp = packed
            np.multiply(gradients, lr, out=tmp)
            values -= tmp
            return
        scratch = self._scratch
        for name, p in params.items():
            tmp = scratch[name][0]
            np.multiply(grads[name], lr, out=tmp)
            p -= tmp

    def _packed(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(parameter block, gradient block, scratch) when the parameters and their
        gradients are views laid back to back over one array each, in the order
        of ``params``; else None.  The arrays of the last such step are checked by
        identity, so a training loop pays for the layout check once."""
        key = self._packed_key
        # map(is_, ...) rather than generators: the check runs on every step, and
        # at six parameters it took 1.9-2.1 against 3.6 us.
        if (
            key is not None
            and len(key[0]) == len(params)
            and all(map(is_, params.values(), key[0]))
            and all(map(is_, map(grads.__getitem__, params), key[1]))
        ):
            return self._packed_arrays
        values = _block_of(list(params.values()))
        gradients = _block_of([grads[name] for name in params]) if values is not None else None
        if values is None or gradients is None or gradients.dtype != values.dtype:
            return None
        self._packed_key = (tuple(params.values()), tuple(grads[name] for name in params))
        self._packed_arrays = (values, gradients, np.empty_like(values))
        return self._packed_arrays

    def _update(self, name, p, grad, lr, scale):
        tmp, spare = self._scratch[name]
        g = self._scaled_grad(p, grad, scale, tmp, spare, self.weight_decay)
        if self.momentum:
            buf = self.slots["momentum"][name]
            buf *= self.momentum
            buf += g
            if self.nesterov:
                # step = g + mu*b, built in ``spare`` (``g`` may live in ``tmp``).
                np.multiply(buf, self.momentum, out=spare)
                spare += g
                g = spare
            else:
                g = buf
        np.multiply(g, lr, out=tmp)
        p -= tmp


def _block_of(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The 1-D array that ``arrays`` are contiguous views of, laid back to back in
    order from its start to its end; None when they are not."""
    if not arrays:
        return None
    block = arrays[0].base
    if (
        not isinstance(block, np.ndarray)
        or block.ndim != 1
        or not block.flags.c_contiguous
        or not block.flags.writeable
    ):
        return None
    address = block.ctypes.data
    for a in arrays:
        if (
            a.base is not block
            or a.dtype != block.dtype
            or not a.flags.c_contiguous
            or a.ctypes.data != address
        ):
            return None
        address += a.nbytes
    return block if address == block.ctypes.data + block.nbytes else None


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015) with L2 weight decay added to the gradient."""

    name = "adam"
    slot_names = ("m", "v")
    #: Adam adds weight decay to the gradient; AdamW applies it to the weights.
    decoupled = False

    def __init__(
        self,
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise TrainingError(f"{self.name}: {label} must be in [0, 1), got {beta}")
        if eps <= 0:
            raise TrainingError(f"{self.name}: eps must be > 0, got {eps}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        super().__init__(weight_decay=weight_decay)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            **super().hyperparameters(),
        }

    def set_momentum(self, value: float) -> None:
        """Set beta1 of the next updates (a one-cycle schedule cycles it, as
        PyTorch's OneCycleLR cycles Adam's first beta); the bias correction
        uses the current beta1, as PyTorch's."""
        self.beta1 = float(value)

    def _update(self, name, p, grad, lr, scale):
        tmp, spare = self._scratch[name]
        m, v = self.slots["m"][name], self.slots["v"][name]
        if self.decoupled and self.weight_decay:
            p *= 1.0 - lr * self.weight_decay
        coupled = 0.0 if self.decoupled else self.weight_decay
        g = self._scaled_grad(p, grad, scale, tmp, spare, coupled)
        # v first: it needs g squared, and updating m may overwrite g when g is tmp.
        np.multiply(g, g, out=spare)
        spare *= 1.0 - self.beta2
        v *= self.beta2
        v += spare
        np.multiply(g, 1.0 - self.beta1, out=tmp)
        m *= self.beta1
        m += tmp
        t = self.iterations
        bias1 = 1.0 - self.beta1**t
        bias2 = 1.0 - self.beta2**t
        # lr * m_hat / (sqrt(v_hat) + eps), computed as PyTorch does.
        np.sqrt(v, out=spare)
        spare /= math.sqrt(bias2)
        spare += self.eps
        np.divide(m, spare, out=tmp)
        tmp *= lr / bias1
        p -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr*wd`` before the Adam step)."""

    name = "adamw"
    decoupled = True

    def __init__(
        self,
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)


#: Optimizers by the name used in training specs and on the command line.
OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def make_optimizer(name: str, **hyperparameters: Any) -> Optimizer:
    """The optimizer called ``name`` with ``hyperparameters``; TrainingError names
    the known optimizers or the settings a given one takes.

    >>> make_optimizer("adam", beta1=0.8).hyperparameters()["beta1"]
    0.8
    """
    try:
        cls = OPTIMIZERS[name.lower()]
    except KeyError:
        raise TrainingError(
            f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}"
        ) from None
    try:
        return cls(**hyperparameters)
    except TypeError:
        import inspect

        known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = sorted(set(hyperparameters) - set(known))
        raise TrainingError(
            f"optimizer {name!r} takes no setting {', '.join(unknown)}; its "
            f"settings are {', '.join(known)}"
        ) from None


def cycled_momentum(schedule: ScheduleSpec) -> float | None:
    """The first momentum of a schedule that cycles it (one-cycle with
    cycle_momentum: max_momentum), else None."""
    if schedule.kind == "one_cycle" and schedule.cycle_momentum:
        return schedule.max_momentum
    return None


def optimizer_from_spec(spec: OptimizerSpec, momentum: float | None = None) -> Optimizer:
    """The optimizer an :class:`~graphengine.training_spec.OptimizerSpec` describes
    (its learning rate and clipping are applied by the trainer).  ``momentum``,
    from a schedule that cycles it, replaces SGD's momentum and Adam's beta1 (an
    SGD spec without momentum gets a momentum buffer, as PyTorch's SGD under
    OneCycleLR does)."""
    if spec.name == "sgd":
        return SGD(
            momentum=spec.momentum if momentum is None else momentum,
            nesterov=spec.nesterov,
            weight_decay=spec.weight_decay,
        )
    return make_optimizer(
        spec.name,
        beta1=spec.beta1 if momentum is None else momentum,
        beta2=spec.beta2,
        eps=spec.epsilon,
        weight_decay=spec.weight_decay,
    )


def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """sqrt of the sum of squares of every gradient element (accumulated in float64)."""
    total = 0.0
    for g in grads.values():
        flat = g.reshape(-1)
        if flat.dtype == np.float64:
            total += float(np.dot(flat, flat))
            continue
        # np.dot of float32 accumulates in float32 (relative error ~1e-5 on 10**7
        # elements); square and sum in float64, a block at a time so the copy stays small.
        for start in range(0, flat.size, _NORM_BLOCK):
            block = flat[start : start + _NORM_BLOCK].astype(np.float64)
            total += float(np.dot(block, block))
    return math.sqrt(total)


#: Elements converted to float64 at a time by global_norm.
_NORM_BLOCK = 2**16


def clip_scale(norm: float, max_norm: float) -> float:
    """The factor that brings a gradient of global norm ``norm`` to at most
    ``max_norm`` (1 when it is already within; 1e-6 guards a zero norm, as PyTorch)."""
    return min(1.0, max_norm / (norm + 1e-6))
