"""The op set.  Importing this package registers every op family."""

from . import (  # noqa: F401  (importing a family registers its ops)
    collective,
    conv,
    conv_nd,
    elementwise,
    fused,
    gather,
    indexing,
    linalg,
    loss,
    nn,
    norm,
    normalization,
    pool,
    reduce,
    resize,
    shape,
    sources,
)

# isort: split
from . import api  # must come last: it reads the full registry
from .registry import REGISTRY, OpDef, get_op

__all__ = ["REGISTRY", "OpDef", "api", "get_op"]
