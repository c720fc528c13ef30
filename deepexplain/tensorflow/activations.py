"""Activations written as several ops: ``y = f(x)`` elementwise, recognised by their op pattern.

Keras' ``gelu`` is ``0.5 x erfc(-x / sqrt 2)`` (or its tanh form), ``mish`` is ``x tanh(softplus(x))``, ``hard_swish``
is ``x relu6(x + 3) / 6``; ``swish``/``silu`` is ``x sigmoid(x)`` under a ``tf.custom_gradient`` (an ``IdentityN``
whose gradient is a Python closure). Rules that treat activations one op at a time see a product of two tensors that
depend on the input there. This module finds such regions on the explained path (:func:`find_activations`): a *head*
op whose output ``y`` depends, through elementwise ops only, on one tensor ``x``, with no other use of the region's
inner tensors. A rule family then treats the region as one activation (DeepLIFT's secant ``Δy / Δx``, eLRP's ratio
``y / x``, LRP's pass-through): the head's rule computes the signal for ``x`` and the *chain* ops (one path from ``x``
to the head) carry it there unchanged, so the region's other ops receive no signal at all.

For the rule families above, treating a composition of activations as one gives the same result as treating them
one by one (secants and ratios compose), so regions are as large as the pattern allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from deepexplain.tensorflow import ops
from deepexplain.tensorflow.graph import Path
from deepexplain.tensorflow.overrides import clone_op, has_custom_gradient, plain_gradients


@dataclass(frozen=True, eq=False)
class Activation:
    """An elementwise nonlinearity ``y = f(x)`` made of the ops ``region``.

    Attributes
    ----------
    head : tf.Operation
        The op whose first output is ``y``.
    x : tf.Tensor
        The activation's input.
    chain : tuple of (tf.Operation, int)
        Ops from ``x`` towards the head (nearest ``x`` first) and the index of the input of each through which the
        chain enters it; the head's own entry index is :attr:`head_index`.
    head_index : int
        The input of the head through which the signal goes back.
    region : frozenset of tf.Operation
        Every op of the activation (head included).
    """

    head: tf.Operation
    x: tf.Tensor
    chain: tuple
    head_index: int
    region: frozenset

    @property
    def y(self) -> tf.Tensor:
        return self.head.outputs[0]

    def derivative_times(self, grad: tf.Tensor) -> tf.Tensor:
        """``grad * f'(x)``: the activation's own gradient."""
        (gradient,) = plain_gradients(self.y, self.x, grad_ys=grad)
        return gradient

    def apply(self, x: tf.Tensor) -> tf.Tensor:
        """``f`` applied to another tensor shaped like :attr:`x` (the region's ops cloned on it)."""
        if self.head.type == "IdentityN":  # a custom gradient: its forward value is its first input
            return _apply_region(self, self.head.inputs[0], x)
        return _apply_region(self, self.y, x)


def find_activations(path: Path) -> dict:
    """Head op -> :class:`Activation`, for the activations on ``path`` that are written as several ops."""
    candidates = []
    for op in path.ops:
        activation = _custom_gradient_activation(op, path) or _product_activation(op, path)
        if activation is not None:
            candidates.append(activation)
    # a region inside a larger one (the tanh form of gelu holds a sum x + c x^3) belongs to the larger one
    inner = {a.head for a in candidates for b in candidates if a is not b and a.head in b.region}
    return {a.head: a for a in candidates if a.head not in inner}


# What produces a factor that modulates another tensor: a gate (sigmoid, hard sigmoid) or a normaliser (1 / sigma).
_NORMALISER_SOURCES = frozenset({"Rsqrt", "Reciprocal", "Inv"})
_FACTOR_SOURCES = _NORMALISER_SOURCES | {"Sigmoid", "Relu6"}
_ATTENTION_SOURCES = frozenset({"Softmax"})
_MATRIX_PRODUCTS = frozenset({"Einsum", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "MatMul"})
_PASSING = frozenset({"Reshape", "ExpandDims", "Squeeze", "Identity", "Cast", "Tile", "BroadcastTo", "Transpose"})


def modulating_factor(op: tf.Operation, path: Path, gates: bool = True, attention: bool = True) -> int | None:
    """The input of a product that modulates the other, else None.

    A product ``s * g`` of two tensors that depend on the input where ``g`` comes (through scalings, shifts and
    reshapes by parameters) out of an ``rsqrt``/reciprocal (a normaliser: layer and RMS normalisation) or, with
    ``gates``, out of a sigmoid or a hard sigmoid (a gate: squeeze-and-excitation, LSTM), and ``s`` does not; also
    the denominator of a division ``s / d``, and, with ``attention``, the attention probabilities (a softmax's
    output) in a matrix product with the values (``einsum``/``matmul`` of attention). Relevance rules treat that
    factor as a constant (Arras et al. 2017, "Explaining recurrent neural network predictions in sentiment
    analysis", gates; Ali et al. 2022, "XAI for Transformers", CP-LRP, the normalising factor and the attention
    weights), so the whole relevance goes to ``s``.
    """
    data = path.data_inputs(op)
    if data != [0, 1] or len(op.outputs) != 1:
        return None
    if op.type in ("RealDiv", "Div"):
        return 1
    if op.type in _MATRIX_PRODUCTS and attention:  # attention probabilities times values: the probabilities
        kinds = [_is_factor(op.inputs[i], path, sources=_ATTENTION_SOURCES) for i in (0, 1)]
    elif op.type == "Mul":
        sources = _FACTOR_SOURCES if gates else _NORMALISER_SOURCES
        kinds = [_is_factor(op.inputs[i], path, sources=sources) for i in (0, 1)]
    else:
        return None
    if kinds == [True, False]:
        return 0
    if kinds == [False, True]:
        return 1
    return None


def _is_factor(tensor: tf.Tensor, path: Path, depth: int = 8, sources=None) -> bool:
    op = tensor.op
    if op.type in (sources or _FACTOR_SOURCES):
        return True
    if depth == 0:
        return False
    data = path.data_inputs(op)
    passing = op.type in _PASSING or _adds_parameter(op, path)
    return passing and len(data) == 1 and _is_factor(op.inputs[data[0]], path, depth - 1, sources)


def rules_for(activations, head_rule: Callable) -> dict:
    """Op -> rule for the ops of ``activations``: ``head_rule(activation, grad, settings) -> signal for x`` at each
    head, and a rule passing the signal unchanged at each chain op."""
    table = {}
    for activation in activations:
        table[activation.head] = _head(activation, head_rule)
        for op, index in activation.chain:
            table[op] = _carry(index)
    return table


def _head(activation: Activation, head_rule: Callable):
    def rule(op, grads, settings):
        result = [None] * len(op.inputs)
        result[activation.head_index] = head_rule(activation, grads[0], settings)
        return result

    return rule


def _carry(index: int):
    def rule(op, grads, settings):
        result = [None] * len(op.inputs)
        result[index] = grads[0]
        return result

    return rule


def _elementwise_source(tensor: tf.Tensor, path: Path, stop: tf.Tensor | None = None):
    """``(x, region ops)`` when ``tensor`` is an elementwise function of the single tensor ``x`` (``stop``, when
    given, is taken as a leaf), else None."""
    shape = tensor.shape
    region, leaves, stack = set(), set(), [tensor]
    while stack:
        t = stack.pop()
        op = t.op
        if stop is not None and t is stop:
            leaves.add(t.ref())
            continue
        elementwise = (
            ops.is_a(op.type, ops.ELEMENTWISE)
            and op in path.op_set
            and not path.is_input(op)
            and len(op.outputs) == 1
            and t.shape.rank == shape.rank
            and t.shape.is_compatible_with(shape)
        )
        if not elementwise or not path.data_inputs(op):
            leaves.add(t.ref())
            continue
        if op in region:
            continue
        region.add(op)
        stack.extend(op.inputs[i] for i in path.data_inputs(op))
    if len(leaves) != 1:
        return None
    x = next(iter(leaves)).deref()
    # an affine map by parameters before the activation (a bias, batch norm's scale and shift) belongs to the layer
    # below, not to f: rules that are not secants (eLRP's ratio y / x) see the activation's own input
    while stop is None:
        entry = [op for op in region if any(t is x for t in op.inputs)]
        if len(entry) != 1 or entry[0].outputs[0] is tensor or not _adds_parameter(entry[0], path):
            break
        region.discard(entry[0])
        x = entry[0].outputs[0]
    if x.shape.rank != shape.rank or not x.shape.is_compatible_with(shape) or x.dtype != tensor.dtype:
        return None
    return x, region


def _adds_parameter(op: tf.Operation, path: Path) -> bool:
    """An affine map by parameters: ``x + b``, ``x - b``, ``b - x``, ``x * s``, ``x / s``."""
    data = path.data_inputs(op)
    if len(data) != 1:
        return False
    return op.type in ("BiasAdd", "Add", "AddV2", "Sub", "Mul") or (op.type == "RealDiv" and data == [0])


def _closed(region: set, head: tf.Operation, path: Path) -> bool:
    """No tensor inside the region is used on the path outside it (its signal would be lost)."""
    return all(c in region for op in region if op is not head for c in path.consumers(op.outputs[0]))


def _product_activation(op: tf.Operation, path: Path):
    """A region whose head combines two functions of the same ``x`` (``x * g(x)``, ``x + c x^3``)."""
    if not ops.is_a(op.type, ops.ELEMENTWISE) or len(path.data_inputs(op)) < 2 or len(op.outputs) != 1:
        return None
    found = _elementwise_source(op.outputs[0], path)
    if found is None:
        return None
    x, region = found
    if not _closed(region, op, path):
        return None
    chain, head_index = _chain(op, x, region, path)
    return Activation(op, x, chain, head_index, frozenset(region))


def _custom_gradient_activation(op: tf.Operation, path: Path):
    """``tf.custom_gradient`` of an elementwise function (Keras' swish/silu): ``IdentityN(f(x), x, *constants)``
    whose first output alone is used."""
    if op.type != "IdentityN" or len(op.inputs) < 2 or not has_custom_gradient(op):
        return None
    if path.data_inputs(op) != [0, 1] or any(path.consumers(out) for out in op.outputs[1:]):
        return None
    found = _elementwise_source(op.inputs[0], path, stop=op.inputs[1])
    if found is None or found[0] is not op.inputs[1]:
        return None
    region = found[1] | {op}
    if not _closed(region, op, path):
        return None
    return Activation(op, op.inputs[1], (), 1, frozenset(region))


def _chain(head: tf.Operation, x: tf.Tensor, region: set, path: Path) -> tuple:
    """One path from ``x`` to ``head`` through the region: ``(((op, entry index), ...), head entry index)``."""
    if any(t is x for t in head.inputs):
        return (), next(i for i, t in enumerate(head.inputs) if t is x)
    steps, op = [], head
    while True:
        index = next(i for i in path.data_inputs(op) if op.inputs[i] is x or op.inputs[i].op in region)
        steps.append((op, index))
        if op.inputs[index] is x:
            break
        op = op.inputs[index].op
    (_, head_index), *rest = steps
    return tuple(reversed(rest)), head_index


def _apply_region(activation: Activation, output: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """The region's ops cloned in dependency order with ``activation.x`` replaced by ``x``; the clone of ``output``."""
    clones = {activation.x.ref(): x}

    def value(t):
        if t.ref() in clones:
            return clones[t.ref()]
        op = t.op
        if op not in activation.region or op.type == "IdentityN":
            return t
        replaced = {i: value(s) for i, s in enumerate(op.inputs) if s.ref() in clones or s.op in activation.region}
        clone = clone_op(op, replaced)
        clones[t.ref()] = clone.outputs[t.value_index]
        return clones[t.ref()]

    return value(output)
