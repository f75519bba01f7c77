"""What strom's compiled (numba) kernels share: the decorators and a byte gather.

:func:`jit` compiles a function on first use with an on-disk cache (numba's ``cache=True``:
beside the module, or in the user's cache directory when site-packages is read-only; with
neither writable it is compiled anew in each process). :func:`inline` marks a helper that numba
copies into each compiled caller: no call, and no reference counting of the arrays passed
(measured: a quarter of the JSON parser's time went to calls into its helpers).

numba's cache knows only the source file of the function it caches, so a kernel's helpers
live in the kernel's own module: an edit to them then invalidates the kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

__all__ = ["concat_spans", "inline", "jit"]


def jit(fn: Callable[..., Any]) -> Any:
    """``njit(nogil=True)`` with an on-disk cache when numba finds a writable place for one."""
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(nogil=True)(fn)


def inline(fn: Callable[..., Any]) -> Any:
    """A helper of compiled kernels, inlined into each of them (not cached by itself)."""
    return njit(nogil=True, inline="always")(fn)


@jit
def _concat(src: Any, spans: Any, sep: int, out: Any, offsets: Any) -> None:
    at = 0
    offsets[0] = 0
    for i in range(spans.shape[0]):
        a = spans[i, 0]
        b = spans[i, 1]
        out[at : at + b - a] = src[a:b]
        at += b - a
        if sep >= 0:
            out[at] = sep
            at += 1
        offsets[i + 1] = at


def concat_spans(
    src: np.ndarray[Any, Any], spans: np.ndarray[Any, Any], sep: int = -1
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The byte ranges ``src[start:end]`` of ``spans`` (n x 2) laid end to end, each followed by
    byte ``sep`` unless it is negative: ``(data, offsets)`` with ``n + 1`` int64 offsets."""
    n = spans.shape[0]
    size = int((spans[:, 1] - spans[:, 0]).sum()) + (n if sep >= 0 else 0)
    out = np.empty(size, np.uint8)
    offsets = np.empty(n + 1, np.int64)
    _concat(src, spans, sep, out, offsets)
    return out, offsets
