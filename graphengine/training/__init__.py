"""Training graphs from data: optimizers, schedules, metrics, callbacks, data,
checkpoints, the loop.

``ge.train(graph, data, ...)`` and :class:`Trainer` run the loop in Python; the
``graphengine train`` and ``graphengine eval`` commands run it from files.
``ge.add_loss`` gives a graph without a loss (an imported model) one.
"""

from .callbacks import BestCheckpoint, Callback, EarlyStopping
from .checkpoint import Checkpoint, graph_fingerprint, latest_checkpoint, read_checkpoint
from .data import Dataset, load_npz
from .evaluate import Evaluator, evaluate
from .losses import add_loss
from .optimizers import OPTIMIZERS, SGD, Adam, AdamW, Optimizer
from .schedules import (
    Constant,
    Cosine,
    Exponential,
    OneCycle,
    Piecewise,
    Polynomial,
    ReduceOnPlateau,
    Step,
)
from .selection import select_parameters
from .trainer import StepInfo, Trainer, TrainResult, train

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "BestCheckpoint",
    "Callback",
    "Checkpoint",
    "Constant",
    "Cosine",
    "Dataset",
    "EarlyStopping",
    "Evaluator",
    "Exponential",
    "OneCycle",
    "Optimizer",
    "Piecewise",
    "Polynomial",
    "ReduceOnPlateau",
    "Step",
    "StepInfo",
    "TrainResult",
    "Trainer",
    "add_loss",
    "evaluate",
    "graph_fingerprint",
    "latest_checkpoint",
    "load_npz",
    "read_checkpoint",
    "select_parameters",
    "train",
]
