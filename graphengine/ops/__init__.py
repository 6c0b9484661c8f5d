"""The op set.  Importing this package registers every op family."""

from . import elementwise, linalg, loss, nn, reduce, shape, sources  # noqa: F401  (registers ops)
from . import api  # noqa: F401  (must come last: it reads the full registry)
from .registry import REGISTRY, OpDef, get_op

__all__ = ["REGISTRY", "OpDef", "get_op", "api"]
