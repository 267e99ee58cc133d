"""Peak bytes of live tensor storage, measured on the CPU, where torch has no memory statistics.

``tracemalloc`` does not see torch's allocations (they bypass Python's allocator) and
``torch.cuda.max_memory_allocated`` needs a GPU. :class:`LiveBytes` is a ``TorchDispatchMode``:
it sees every aten op run inside it, counts the storage an op's outputs bring into existence
(a storage that is not one of the op's inputs' and not already counted; views and in-place
results add nothing) and subtracts it when the last tensor on it is freed (a
``weakref.finalize`` per tensor). ``peak`` is the largest sum at any moment: what a caching
allocator would need beyond the tensors that existed before the mode was entered. ``ops``
names every aten overload that ran (``aten.nonzero.default``, ...), for checks on syncs.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _storage(tensor: torch.Tensor) -> tuple[int, int]:
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


class LiveBytes(TorchDispatchMode):
    """``with LiveBytes() as probe: ...`` then ``probe.peak`` / ``probe.live`` in bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tensors_on: dict[int, int] = {}  # storage data_ptr -> live tensors counted on it
        self._bytes_of: dict[int, int] = {}  # storage data_ptr -> its bytes
        self._counted: set[int] = set()  # id() of the tensors being followed
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.add(str(func))
        inputs = {_storage(t)[0] for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and id(tensor) not in self._counted:
                self._follow(tensor, inputs)
        return out

    def _follow(self, tensor: torch.Tensor, inputs: set[int]) -> None:
        ptr, nbytes = _storage(tensor)
        if ptr not in self._bytes_of:
            if ptr in inputs or nbytes == 0:
                return  # a view of a tensor from before the mode, or nothing allocated
            self._bytes_of[ptr] = nbytes
            self._tensors_on[ptr] = 0
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self._tensors_on[ptr] += 1
        self._counted.add(id(tensor))
        weakref.finalize(tensor, self._release, id(tensor), ptr)

    def _release(self, tensor_id: int, ptr: int) -> None:
        self._counted.discard(tensor_id)
        self._tensors_on[ptr] -= 1
        if self._tensors_on[ptr] == 0:
            del self._tensors_on[ptr]
            self.live -= self._bytes_of.pop(ptr)
