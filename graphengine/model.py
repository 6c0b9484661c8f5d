"""The model record: what a saved model holds besides the graph's structure.

The file format keeps two things apart: a ``GraphProto`` (nodes, placeholders,
parameters, outputs) and the ``ModelProto`` around it (gradient section,
training spec, metadata, fields from newer versions).  In memory the same split
holds: :class:`~graphengine.graph.Graph` is the builder (nodes, names, scopes,
parameters) and owns one :class:`ModelRecord`, which holds

* ``values``: the current value of each parameter (training updates them);
* ``gradient``: the :class:`GradientInfo` a gradient pass left, or None;
* ``training``: the :class:`~graphengine.training_spec.TrainingSpec`, or None;
* ``metadata``: free-form string pairs stored in the file;
* ``unknown_fields``: the serialized fields of a newer minor format version,
  kept so that a load-save round trip does not lose them.

Passes that return a new graph carry the record over with
:meth:`ModelRecord.carried_to` (see :mod:`graphengine.rebuild`).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any, NamedTuple

import numpy as np


class GradientInfo(NamedTuple):
    """What :func:`graphengine.gradients` added to a graph.

    ``loss`` is the differentiated tensor; ``grads`` maps each wrt tensor to the
    tensor holding d(loss)/d(wrt); ``seed`` is the placeholder of the seed
    gradient for a non-scalar loss ("" for a scalar loss); ``nodes`` names the
    nodes the pass added (the file's gradient section); ``zero`` lists wrt
    tensors the loss does not depend on, whose gradient is zeros.
    """

    loss: str
    grads: dict[str, str]
    nodes: tuple[str, ...]
    seed: str = ""
    zero: tuple[str, ...] = ()


class ModelRecord:
    """Parameter values, gradient section, training spec, metadata and unknown
    fields of one graph (see the module docstring).

    >>> import numpy as np
    >>> r = ModelRecord(values={"w": np.ones(2)}, metadata={"author": "me"})
    >>> r.copy().metadata, r.carried_to(set()).values
    ({'author': 'me'}, {})
    """

    # A plain class (GradientInfo a named tuple), not dataclasses: their generated
    # methods would cost over a millisecond each of ``import graphengine``.
    def __init__(
        self,
        values: dict[str, np.ndarray[Any, Any]] | None = None,
        gradient: GradientInfo | None = None,
        training: Any = None,
        metadata: dict[str, str] | None = None,
        unknown_fields: bytes = b"",
    ) -> None:
        self.values: dict[str, np.ndarray[Any, Any]] = {} if values is None else values
        self.gradient = gradient
        #: A graphengine.training_spec.TrainingSpec (typed Any: this module sits below it).
        self.training: Any = training
        self.metadata: dict[str, str] = {} if metadata is None else metadata
        self.unknown_fields = unknown_fields

    def copy(self) -> ModelRecord:
        """An independent record: parameter arrays and metadata are copied."""
        return ModelRecord(
            {k: v.copy() for k, v in self.values.items()},
            self.gradient,
            self.training,
            dict(self.metadata),
            self.unknown_fields,
        )

    def carried_to(self, nodes: Container[str]) -> ModelRecord:
        """The record of a rebuilt graph holding ``nodes``: the values of the
        parameters it still has (shared, not copied) and everything else as it is.
        The gradient section is kept as it is; a pass that drops or adds gradient
        nodes sets its own."""
        return ModelRecord(
            {k: v for k, v in self.values.items() if k in nodes},
            self.gradient,
            self.training,
            dict(self.metadata),
            self.unknown_fields,
        )
