"""Reading a ``torch.save`` file without running anything it names.

A ``.pth`` file is a pickle, and unpickling calls the functions and classes the pickle names:
``torch.load(weights_only=False)`` on a file whose pickle holds ``os.system('...')`` runs that
command. det never unpickles that way, and has no option to. A file is read in at most two
passes, and neither builds an object outside one allow-list (:func:`allowed_globals`): torch's
own weights-only list (tensors, storages, dtypes, ``OrderedDict``, ``set``, ...) and numpy's
arrays, dtypes and scalars (MMDetection keeps numpy values in ``meta``).

1. ``torch.load(weights_only=True)``, torch's restricted unpickler, with the numpy names added
   (``torch.serialization.safe_globals``). Our own checkpoints, bare state dicts and most of
   MMDetection's load here.
2. Only when pass 1 meets a name outside the list (an ``UnpicklingError``; MMEngine's
   ``HistoryBuffer`` in ``message_hub``, ``ConfigDict``, or a payload): ``torch.load`` with
   :data:`INERT_PICKLE` as its pickle module. Its unpickler's ``find_class`` -- the only way a
   pickle reaches a Python callable (``GLOBAL``, ``STACK_GLOBAL``, ``INST``, the ``EXT`` codes)
   -- returns the allow-listed object, or for any other name a fresh subclass of
   :class:`Placeholder`; it never imports a module. Calling a placeholder (``REDUCE``,
   ``NEWOBJ``) returns an inert instance that records the arguments, so ``os.system('touch x')``
   becomes a ``Placeholder`` naming ``posix.system`` with ``args == ('touch x',)``, and an
   MMEngine object becomes one holding its pickled state (numpy arrays intact).

:func:`safe_torch_load` returns the data and where each placeholder sits, for the load report.
A TorchScript archive is refused by pass 1 and never reaches pass 2.
"""

from __future__ import annotations

import pickle
import types
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

__all__ = ["INERT_PICKLE", "Placeholder", "SafeLoad", "allowed_globals", "find_placeholders",
           "safe_torch_load"]


class Placeholder:
    """Stands for an object of a class (or the result of a function) the file named but det does
    not build: ``target`` is the name, and the rest is what the pickle handed over. Nothing from
    the file is ever called on it."""

    __slots__ = ("args", "kwargs", "state", "items", "elements")
    target: ClassVar[str] = "?"  # "module.qualname" as the pickle wrote it

    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        obj.items, obj.elements = {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ recorded everything

    def __call__(self, *args: Any, **kwargs: Any) -> "Placeholder":
        """REDUCE on a placeholder's result (``getattr(obj, 'method')()``): another one."""
        return type(self)(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEMS of a dict subclass
        self.items[key] = value

    def append(self, value: Any) -> None:  # APPENDS of a list subclass
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<placeholder for {self.target}>"


def _placeholder_class(target: str) -> type[Placeholder]:
    name = target.rpartition(".")[2] or "Placeholder"
    return type(name, (Placeholder,), {"__slots__": (), "target": target,
                                       "__module__": __name__, "__qualname__": name})


def _numpy_globals() -> dict[str, Any]:
    """numpy's names in a pickle of arrays, dtypes and scalars (numpy 1.x and 2.x spellings)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    names: dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        names[f"{module}._reconstruct"] = multiarray._reconstruct
        names[f"{module}.scalar"] = multiarray.scalar
    for code in np.typecodes["All"]:  # the dtype classes, for BUILD of a dtype (Float64DType)
        cls = type(np.dtype(code))
        names[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return names


@lru_cache(maxsize=1)
def allowed_globals() -> dict[str, Any]:
    """``"module.name" -> object``: everything either pass builds for real."""
    from torch import _weights_only_unpickler

    return {**_weights_only_unpickler._get_allowed_globals(), **_numpy_globals()}


class InertUnpickler(pickle.Unpickler):
    """A pickle unpickler that builds allow-listed objects and placeholders, nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._placeholders: dict[str, type[Placeholder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NAME_MAPPING:  # Python 2 names, as pickle maps them
            module, name = NAME_MAPPING[(module, name)]
        elif module in IMPORT_MAPPING:
            module = IMPORT_MAPPING[module]
        target = f"{module}.{name}"
        allowed = allowed_globals()
        if target in allowed:
            return allowed[target]
        if target not in self._placeholders:
            self._placeholders[target] = _placeholder_class(target)
        return self._placeholders[target]


def _inert_load(file: Any, **kwargs: Any) -> Any:
    return InertUnpickler(file, **kwargs).load()


# What torch.load(pickle_module=...) uses: Unpickler (and load, for the legacy format's headers).
INERT_PICKLE = types.ModuleType("detcli_inert_pickle", "pickle, building nothing unlisted")
INERT_PICKLE.Unpickler = InertUnpickler  # type: ignore[attr-defined]
INERT_PICKLE.load = _inert_load  # type: ignore[attr-defined]
INERT_PICKLE.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


@dataclass
class SafeLoad:
    """What :func:`safe_torch_load` read."""

    data: Any
    placeholders: list[tuple[str, str]] = field(default_factory=list)  # (where, target)


def find_placeholders(obj: Any, where: str = "") -> list[tuple[str, str]]:
    """``(where, target)`` of every placeholder (instance or class) in ``obj``'s dicts, lists,
    tuples, sets and object arrays, in order; ``where`` is a dotted path (``meta.evil``,
    ``message_hub.log_scalars.train/loss``, ``meta.items[2]``)."""
    found: list[tuple[str, str]] = []
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [(where, obj)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, Placeholder) or (isinstance(value, type)
                                              and issubclass(value, Placeholder)):
            found.append((path or "<the whole file>", value.target))
            continue
        if isinstance(value, (Tensor, str, bytes, int, float)) or id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, Mapping):
            children = [(f"{path}.{key}" if path else str(key), v) for key, v in value.items()]
        elif isinstance(value, (list, tuple, set, frozenset)):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, np.ndarray) and value.dtype == object:
            children = [(f"{path}[{i}]", v) for i, v in enumerate(value.ravel().tolist())]
        else:
            continue
        stack.extend(reversed(children))
    return found


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> SafeLoad:
    """Read ``path`` in the two passes of the module docstring.

    Errors are torch's and pickle's (a truncated zip, not a torch file, a TorchScript archive);
    the caller names the file.
    """
    numpy_names = [(obj, name) for name, obj in _numpy_globals().items()]
    try:
        with torch.serialization.safe_globals(numpy_names):
            return SafeLoad(torch.load(path, map_location=map_location, weights_only=True))
    except pickle.UnpicklingError:
        pass  # a name outside the list: read again, building placeholders for it
    data = torch.load(path, map_location=map_location, weights_only=False,
                      pickle_module=INERT_PICKLE)
    return SafeLoad(data, find_placeholders(data))
