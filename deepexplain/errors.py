"""Exception types.

The original DeepExplain raised ``RuntimeError`` for every misuse and ``AssertionError`` for a non-positive eps-LRP
epsilon. Our errors are ``ValueError``/``TypeError`` as numpy and Keras users expect, and subclass the original
types too, so code written for DeepExplain that catches ``RuntimeError`` keeps working.
"""


class InvalidInputError(ValueError, RuntimeError):
    """An argument or input array does not fit the model or the method (shape, length, value)."""


class InvalidTypeError(TypeError, RuntimeError):
    """An argument is of the wrong type (e.g. ``T`` or ``X`` is not a TensorFlow tensor)."""


class InvalidEpsilonError(ValueError, AssertionError):
    """eps-LRP's epsilon is not positive (the original DeepExplain asserted it)."""


class UnsupportedOpError(ValueError, RuntimeError):
    """An op on the explained path has no rule in a method that needs one for every op (the LRP family)."""


class NotConnectedError(ValueError, RuntimeError):
    """The target does not depend on the explained input through a differentiable path."""


def describe_shape(shape) -> str:
    """``(None, 28, 28, 1)``-style text of a static or concrete shape."""
    dims = shape.as_list() if hasattr(shape, "as_list") and shape.rank is not None else shape
    if dims is None:
        return "<unknown>"
    return "(" + ", ".join("None" if d is None else str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"
