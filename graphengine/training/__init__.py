"""Training graphs from data: optimizers, schedules, data, checkpoints, the loop.

``ge.train(graph, data, ...)`` and :class:`Trainer` run the loop in Python; the
``graphengine train`` and ``graphengine eval`` commands run it from files.
"""

from .checkpoint import Checkpoint, graph_fingerprint, latest_checkpoint, read_checkpoint
from .data import Dataset, load_npz
from .evaluate import Evaluator, evaluate
from .optimizers import OPTIMIZERS, SGD, Adam, AdamW, Optimizer
from .schedules import Constant, Cosine, Step
from .trainer import Callback, StepInfo, Trainer, TrainResult, train

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "Callback", "Checkpoint", "Constant", "Cosine",
           "Dataset", "Evaluator", "Optimizer", "Step", "StepInfo", "TrainResult", "Trainer",
           "evaluate", "graph_fingerprint", "latest_checkpoint", "load_npz", "read_checkpoint",
           "train"]
