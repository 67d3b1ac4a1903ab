"""JSON-ready values: numpy scalars and arrays, paths and non-finite floats as JSON types.

Shared by the command line (``--json``) and the engine's ``to_dict`` / ``as_dict`` methods, so that an engine
module never imports the command line for it.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["to_jsonable"]


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and non-finite floats to JSON types.

    NaN and infinities become ``None`` (JSON has no NaN).

    Examples
    --------
    >>> import numpy as np
    >>> to_jsonable({"a": np.float32(1.5), "b": float("nan"), "c": (1, 2)})
    {'a': 1.5, 'b': None, 'c': [1, 2]}
    """
    import numpy as np
    from pathlib import PurePath

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, PurePath):
        return str(obj)
    return obj
