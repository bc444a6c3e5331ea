"""The one JSON writer and reader of gdc's results and metadata files.

One policy for every file written here:
  * dict keys become ``str(key)``; tuples and arrays (numpy, 0-d included, or anything with ``__array__``) become
    lists; numpy scalars become the Python number or bool they hold;
  * the non-finite floats NaN, inf and -inf are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"``, so every
    file is strict JSON (no bare ``NaN``/``Infinity`` tokens), and ``read`` turns those three strings back into floats;
  * any other object that JSON cannot hold is a TypeError, never a silent ``str()``.

Invariant: ``read(path)`` after ``write(path, obj)`` equals ``roundtrip(obj)``, which is ``obj`` with the conversions
above and its non-finite floats kept as floats. Files written with bare ``NaN`` tokens by earlier versions still read
back as NaN.
"""

import json
import math
from typing import Any

import numpy as np

NON_FINITE = ("nan", "inf", "-inf")  # str(float("nan")), str(float("inf")), str(float("-inf"))


def plain(x: Any, *, drop_private: bool = False) -> Any:
    """A copy of ``x`` made of dict/list/str/int/float/bool/None, with non-finite floats as their strings.

    ``drop_private``: leave out the keys starting with ``_`` at every depth.
    """
    if isinstance(x, dict):
        return {
            str(k): plain(v, drop_private=drop_private)
            for k, v in x.items()
            if not (drop_private and str(k).startswith("_"))
        }
    if isinstance(x, list | tuple):
        return [plain(v, drop_private=drop_private) for v in x]
    if not isinstance(x, np.ndarray | np.generic) and hasattr(x, "__array__"):
        x = np.asarray(x)  # a jax array
    if isinstance(x, np.ndarray):
        return plain(x.tolist(), drop_private=drop_private)
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x is None or isinstance(x, str | int | float):  # bool is an int
        return x
    raise TypeError(f"{type(x).__name__} is not JSON serialisable: {x!r}")


def restore(x: Any) -> Any:
    """The inverse of ``plain``'s non-finite spelling: the strings "nan", "inf", "-inf" back to floats, at every
    depth."""
    if isinstance(x, dict):
        return {k: restore(v) for k, v in x.items()}
    if isinstance(x, list):
        return [restore(v) for v in x]
    if isinstance(x, str) and x in NON_FINITE:
        return float(x)
    return x


def roundtrip(x: Any, *, drop_private: bool = False) -> Any:
    """What ``read`` returns for a file ``write`` made of ``x``, without the file."""
    return restore(plain(x, drop_private=drop_private))


def dumps(x: Any, *, indent: int | None = 1, sort_keys: bool = False, drop_private: bool = False) -> str:
    return json.dumps(plain(x, drop_private=drop_private), indent=indent, sort_keys=sort_keys, allow_nan=False)


def loads(s: str) -> Any:
    return restore(json.loads(s))


def write(path: str, x: Any, *, indent: int | None = 1, sort_keys: bool = False, drop_private: bool = False) -> None:
    """Writes ``x`` to ``path`` as JSON under the policy above (no trailing newline)."""
    text = dumps(x, indent=indent, sort_keys=sort_keys, drop_private=drop_private)
    with open(path, "w") as f:
        f.write(text)


def read(path: str) -> Any:
    with open(path) as f:
        return loads(f.read())
