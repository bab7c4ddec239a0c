"""attncourse: reference implementations of attention mechanisms for the attncourse book.

The public API is documented in book/conventions.md; shapes are ``(B, H, T, D)`` inside the
package and masks are boolean with True = may attend.

``attention`` and ``masks`` load with the package; every other module loads on first use
(``attncourse.rope``, ``attncourse.kvcache`` …), so ``import attncourse`` stays fast even
though some modules import heavier parts of torch (FlexAttention, the compiler).
"""
import importlib

from attncourse.core import attention, stable_softmax
from attncourse import masks

_MODULES = ("alibi", "bench", "checks", "core", "data", "flash", "gqa", "kvcache", "llama", "local", "masks",
            "model", "multihead", "positions", "rope", "sparse", "testing", "viz")

__all__ = ["attention", "stable_softmax", *_MODULES]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"attncourse.{name}")
    raise AttributeError(f"module 'attncourse' has no attribute {name!r}")
