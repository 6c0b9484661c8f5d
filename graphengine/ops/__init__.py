"""The op set.  Importing this package registers every op family."""

from . import elementwise, sources  # noqa: F401  (registration side effects)
from . import api  # noqa: F401  (must come last: it reads the full registry)
from .registry import REGISTRY, OpDef, get_op

__all__ = ["REGISTRY", "OpDef", "get_op", "api"]
