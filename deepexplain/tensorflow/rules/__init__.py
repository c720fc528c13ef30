"""Backward rules keyed by TensorFlow op type.

A rule has the signature ``rule(op, grads, settings) -> list`` of the gradient function it replaces: ``grads`` are
the incoming gradients of the op's outputs, the result has one entry per op input. Each module holds one family of
rules and exports a table ``RULES`` (op type -> rule); ops without an entry keep their own gradient.
"""

from deepexplain.tensorflow.rules import deeplift, elrp, guided, lrp

__all__ = ["deeplift", "elrp", "guided", "lrp"]
