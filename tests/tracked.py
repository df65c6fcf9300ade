"""What a full collection of CPython's cyclic garbage collector walks for a given state."""

from __future__ import annotations

import gc
import types

_CODE = (type, types.ModuleType, types.FunctionType, types.CodeType, types.BuiltinFunctionType)


def tracked_from(*roots: object) -> int:
    """The objects the collector tracks that ``roots`` lead to (classes, modules and
    functions aside: code, shared by every instance). Call ``gc.collect()`` first:
    tuples and dicts holding only untracked objects are untracked by a collection."""
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        item = todo.pop()
        if id(item) in seen or not gc.is_tracked(item) or isinstance(item, _CODE):
            continue
        seen.add(id(item))
        todo += gc.get_referents(item)
    return len(seen)
