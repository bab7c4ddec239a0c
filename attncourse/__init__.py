"""attncourse: reference implementations of attention mechanisms for the attncourse book.

The public API is documented in book/conventions.md; shapes are ``(B, H, T, D)`` inside the
package and masks are boolean with True = may attend.
"""
from attncourse.core import attention, stable_softmax
from attncourse import masks

__all__ = ["attention", "stable_softmax", "masks"]
__version__ = "0.1.0"
