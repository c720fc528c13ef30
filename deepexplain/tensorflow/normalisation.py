"""Layer and RMS normalisation written as ops, recognised by their pattern so a rule can treat each as one layer.

Keras' ``LayerNormalization`` is ``y = x * inv + (beta - mean(x) * inv)`` with ``inv = gamma * rsqrt(var(x) + eps)``,
``RMSNormalization`` is ``y = x * rsqrt(mean(x**2) + eps) * gamma``, and a hand-written one may divide by
``sqrt(var + eps)``. Treating the *normaliser* (the ``rsqrt``/``sqrt``) as a constant makes each of them affine in
``x``: ``y = A x + b``. CP-LRP (Ali et al. 2022, "XAI for Transformers: Better Explanations through Conservative
Propagation", ICML, Sec. 3.2) and AttnLRP (Achtibat et al. 2024, ICML, Prop. 3.4 and the ``layer_norm`` rule of the
authors' ``lxt``) then apply the epsilon rule to that affine layer:

    R_x = x * A^T (R / (y + eps sign(y)))

which one op at a time cannot do: the shift ``beta`` is added after the two paths of ``x`` (itself and its mean)
are summed, so a per-op rule cannot give it its share.

:func:`find_normalisations` finds, for each normaliser on the explained path, its input ``x`` (the one tensor its
statistics are computed from) and the layer's output ``y`` (the first tensor that every path from the normaliser
passes, shaped like ``x``); the ops between them are the region, which must be closed (nothing inside is used
outside) and affine in ``x`` apart from the normaliser. The result reuses :class:`..activations.Activation`, so a
rule family handles a region as it handles an activation written as several ops (:func:`..activations.rules_for`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import tensorflow as tf

from deepexplain.tensorflow import ops
from deepexplain.tensorflow.activations import Activation, _chain, _closed
from deepexplain.tensorflow.graph import Path
from deepexplain.tensorflow.overrides import plain_gradients

# What divides a tensor by its spread: the normaliser of layer, RMS and hand-written normalisations.
NORMALISER_TYPES = frozenset({"Rsqrt", "Sqrt"})
# How far past the normaliser its layer's output may lie (Keras' layer norm: 6 ops).
_SEARCH_LIMIT = 64


@dataclass(frozen=True, eq=False)
class Normalisation(Activation):
    """A normalisation layer ``y = N(x)`` (see the module docstring); :attr:`normaliser` is held constant."""

    normaliser: tf.Tensor = None

    def affine_gradient(self, grad: tf.Tensor) -> tf.Tensor:
        """``A^T grad``: the gradient of ``y`` with respect to ``x`` with the normaliser held constant."""
        (gradient,) = plain_gradients(self.y, self.x, grad_ys=grad, stop_gradients=[self.normaliser])
        return gradient

    def linear_part(self) -> tf.Tensor:
        """``A x``: the output without its constant part (the shift), by the double-backward product ``d/dv [
        (A^T v) . x]``, so the layer is not re-written."""
        probe = tf.zeros_like(self.y)
        (gradient,) = plain_gradients(self.y, self.x, grad_ys=probe, stop_gradients=[self.normaliser])
        (linear,) = plain_gradients(gradient, probe, grad_ys=self.x)
        return linear


def find_normalisations(path: Path) -> list[Normalisation]:
    """The normalisation layers on ``path`` (see the module docstring), in no particular order."""
    found, taken = [], set()
    order = None
    for op in path.ops:
        if op.type not in NORMALISER_TYPES or op in taken:
            continue
        if order is None:  # creation order is a topological order of the graph
            order = {o: i for i, o in enumerate(op.graph.get_operations())}
        layer = _layer_of(op, path, order)
        if layer is None or layer[2] & taken:
            continue
        head, x, region = layer
        chain, head_index = _chain(head, x, region, path)
        found.append(Normalisation(head, x, chain, head_index, frozenset(region), normaliser=op.outputs[0]))
        taken |= region
    return found


def _layer_of(normaliser: tf.Operation, path: Path, order: dict):
    """``(head, x, region)`` of the layer ``normaliser`` belongs to, else None: ``x`` is a tensor that every path to
    the normaliser passes (its statistics' input) and ``head`` the nearest op that every path from it passes, such
    that the ops between them form a closed region, affine in ``x`` but for the normaliser. Of the nested regions
    that qualify (``x - mean(x)`` may be written before the statistics, as inside Keras' layer norm) the largest,
    so that the centring and the shift belong to the layer."""
    reduced, found = normaliser.outputs[0].shape, None
    for x in _dominators(normaliser, path, order):
        if x.shape.rank is None or x.shape.rank != reduced.rank or x.shape.is_compatible_with(reduced):
            continue  # the statistics (var + eps, ...) are shaped like the normaliser; x is not
        layer = _layer_from(normaliser, x, path, order)
        if layer is None and found is not None:
            break  # regions only grow from here: past a nonlinear or weighted op none qualifies
        found = layer or found
    return found


def _layer_from(normaliser: tf.Operation, x: tf.Tensor, path: Path, order: dict):
    for head in _post_dominators(normaliser, x, path, order):
        region = _region(head, x, path)
        if region is not None:
            return (head, x, region) if _affine_apart_from(region, head, normaliser, x, path) else None
    return None


def _dominators(normaliser: tf.Operation, path: Path, order: dict):
    """The tensors (nearest first) that every path from the explained inputs to ``normaliser`` passes: ops are
    visited in reverse topological order, and each time the open tensors (whose producers are not visited yet) are
    one tensor, that tensor is one."""

    def data(op):
        return [op.inputs[i] for i in path.data_inputs(op)]

    open_tensors = {t.ref(): t for t in data(normaliser)}
    queue = [(-order[t.op], id(t.op), t.op) for t in open_tensors.values()]
    heapq.heapify(queue)
    visited = {normaliser}
    while queue and len(visited) < _SEARCH_LIMIT:
        if len(open_tensors) == 1:
            yield next(iter(open_tensors.values()))
        _, _, op = heapq.heappop(queue)
        if op in visited:
            continue
        if path.is_input(op):
            return
        visited.add(op)
        for out in op.outputs:
            open_tensors.pop(out.ref(), None)
        for t in data(op):
            if t.ref() not in open_tensors:
                open_tensors[t.ref()] = t
                heapq.heappush(queue, (-order[t.op], id(t.op), t.op))


def _post_dominators(normaliser: tf.Operation, x: tf.Tensor, path: Path, order: dict):
    """The ops (in topological order) whose output every path from ``normaliser`` passes, shaped like ``x``: ops
    are visited in order, and each time the open tensors (outputs with consumers not yet visited) are one op's
    output, that op is one. The layer's output is the first whose region is closed (:func:`_region`)."""
    open_tensors = {normaliser.outputs[0].ref()}
    queue = [(order[c], id(c), c) for c in path.consumers(normaliser.outputs[0])]
    heapq.heapify(queue)
    visited = {normaliser}
    while queue and len(visited) < _SEARCH_LIMIT:
        _, _, op = heapq.heappop(queue)
        if op in visited:
            continue
        visited.add(op)
        for t in op.inputs:
            if t.ref() in open_tensors and all(c in visited for c in path.consumers(t)):
                open_tensors.discard(t.ref())
        for out in op.outputs:
            consumers = path.consumers(out)
            if consumers or out is path.target:
                open_tensors.add(out.ref())
            for c in consumers:
                heapq.heappush(queue, (order[c], id(c), c))
        y = op.outputs[0]
        if open_tensors == {y.ref()} and y.shape.rank == x.shape.rank and y.shape.is_compatible_with(x.shape):
            yield op


def _region(head: tf.Operation, x: tf.Tensor, path: Path) -> set | None:
    """The ops from ``x`` to ``head``: a function of ``x`` alone whose inner tensors are used inside only."""
    region, stack = set(), [head]
    while stack:
        op = stack.pop()
        if op in region:
            continue
        if path.is_input(op) or len(region) > _SEARCH_LIMIT:
            return None
        region.add(op)
        for i in path.data_inputs(op):
            if op.inputs[i] is not x:
                stack.append(op.inputs[i].op)
    return region if _closed(region, head, path) else None


def _affine_apart_from(region: set, head: tf.Operation, normaliser: tf.Operation, x: tf.Tensor, path: Path) -> bool:
    """Whether ``x`` reaches the output other than through the normaliser (the normalised signal), by ops that are
    affine in ``x`` once the normaliser (scaled or reshaped by constants) is a constant."""
    signal, stack = set(), [head]
    while stack:
        op = stack.pop()
        if op in signal:
            continue
        signal.add(op)
        for i in path.data_inputs(op):
            source = op.inputs[i]
            if source is not x and not _from(source, normaliser, region):
                stack.append(source.op)
    if not any(t is x for op in signal for t in op.inputs):
        return False
    for op in signal:
        data = [i for i in path.data_inputs(op) if not _from(op.inputs[i], normaliser, region)]
        linear = ops.is_a(op.type, ops.LINEAR)
        scaled = op.type in ("Mul", "RealDiv") and len(data) <= 1
        if not (linear or scaled):
            return False
    return True


def _from(tensor: tf.Tensor, normaliser: tf.Operation, region: set) -> bool:
    """Whether ``tensor`` is the normaliser scaled or reshaped by constants (not a function of the signal)."""
    op = tensor.op
    while op is not normaliser:
        if op not in region or op.type not in ("Mul", "Reshape", "Identity", "Cast", "ExpandDims"):
            return False
        data = [t for t in op.inputs if t.dtype.is_floating and t.op in region]
        if len(data) != 1:
            return False
        op = data[0].op
    return True
