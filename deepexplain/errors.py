"""Exception types.

The original DeepExplain raised ``RuntimeError`` for every misuse and ``AssertionError`` for a non-positive eps-LRP
epsilon. Our errors are ``ValueError``/``TypeError`` as numpy and Keras users expect, and subclass the original
types too, so code written for DeepExplain that catches ``RuntimeError`` keeps working.
"""


class InvalidInputError(ValueError, RuntimeError):
    """An argument or input array does not fit the model or the method (shape, length, value)."""


class UnknownMethodError(InvalidInputError):
    """The method name is not in the registry (the message repeats it and suggests the closest name)."""


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


def closest(name, choices) -> str:
    """``" (did you mean 'deeplift'?)"`` for the choice nearest to a misspelt ``name``, or an empty string."""
    import difflib

    if not isinstance(name, str):
        return ""
    match = difflib.get_close_matches(name, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def warn(message: str, category=UserWarning) -> None:
    """``warnings.warn`` at the first frame outside this package (the user's line), whatever the call depth."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__))
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
