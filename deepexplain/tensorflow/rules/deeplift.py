"""DeepLIFT multipliers (Shrikumar et al. 2017, ICML, "Learning Important Features Through Propagating Activation
Differences").

The reference activations come from the same forward pass as the inputs: the reference inputs are rows of the
batch, and ``settings.reference_index`` (an int32 tensor, one entry per row) names, for each row, the row holding its
reference. Every rule therefore sees ``x`` and its reference ``x_ref`` side by side. Three layouts, fixed when the
explanation is compiled (``settings.single_reference``, ``settings.blocked_references``):

- a single reference: the last row, broadcast over the batch;
- several references in blocks (DeepSHAP on a batch of free size): the batch is made of equal blocks, each block's
  rows followed by the reference they read, so ``x`` viewed as ``(blocks, block rows, -1)`` has its references in
  the last row of each block, broadcast over the block: no copy of the references to every row;
- otherwise each row's reference gathered, ``x_ref = gather(x, reference_index)``;
- apart (``settings.reference_tensors``): when the explained output's rows are not the samples' (it broadcasts or
  sums over the batch, so a reference row in the batch would change the function), the reference inputs are a batch
  of their own, fed beside ``X``, and :func:`reference_pass` copies the forward ops from ``X`` to the output onto
  them: ``x_ref`` is the copy's tensor, of the same shape as ``x`` (DeepExplain's separate reference run).

Two rule sets: :data:`RULES` (Rescale, Sec. 3.5.2) and :data:`REVEAL_CANCEL_RULES` (RevealCancel, Sec. 3.5.3), which
treats the positive and negative contributions to each nonlinearity's input separately.
"""

from __future__ import annotations

import tensorflow as tf

from deepexplain.tensorflow import ops
from deepexplain.tensorflow.overrides import clone_op, original_gradient
from deepexplain.tensorflow.rules.common import gradient_of_input, max_pool_backward, with_unused_inputs

# Below this |delta x| the secant is numerically meaningless (float32) and the multiplier falls back to the
# gradient; the contribution multiplier * delta_x is ~0 either way, so summation-to-delta is unaffected.
DELTA_TOLERANCE = 1e-5


def reference_of(tensor: tf.Tensor, settings) -> tf.Tensor:
    """Each row's reference row of ``tensor`` (one broadcastable row when there is a single reference).

    A tensor without the batch dimension (a statistic over the batch, as tf_keras' batch norm computes in its
    training branch) has no rows: it is its own reference. Elementwise uses of the reference go through
    :func:`with_reference`, which does not copy the references of blocks to every row."""
    if settings.reference_tensors is not None:
        return settings.reference_tensors.get(tensor.ref(), tensor)
    if not _has_rows(tensor, settings):
        return tensor
    if settings.single_reference:
        return tensor[-1:]
    if settings.blocked_references:
        view = _blocks(tensor, settings)
        return tf.reshape(tf.broadcast_to(view[:, -1:], tf.shape(view)), tf.shape(tensor))
    return tf.gather(tensor, settings.reference_index)


def reference_pass(path, reference_inputs: list) -> dict:
    """The forward pass of ``path`` on ``reference_inputs`` instead of its inputs ``X``: every op between ``X`` and
    the output copied (:func:`~deepexplain.tensorflow.overrides.clone_op`), each input that depends on ``X`` taken
    from the copy, parameters shared. Returns ``{tensor.ref(): its copy}`` for every tensor computed from ``X`` (the
    inputs map to ``reference_inputs``). Copies the rules never read are never run. Built before the backward pass,
    outside any gradient's control-flow context."""
    copies = {x.ref(): r for x, r in zip(path.inputs, reference_inputs, strict=True)}
    for op in path.forward_ops():
        replaced = {i: copies[t.ref()] for i, t in enumerate(op.inputs) if t.ref() in copies}
        clone = clone_op(op, replaced)
        copies.update((out.ref(), copied) for out, copied in zip(op.outputs, clone.outputs, strict=True))
    return copies


def with_reference(fn, tensor: tf.Tensor, settings) -> tf.Tensor:
    """``fn(tensor, reference)`` for an elementwise, broadcasting ``fn``: with references in blocks ``fn`` sees the
    tensor viewed as blocks and each block's reference row, broadcast over its block (cheaper than a copy of the
    reference to every row, which costs as much as the operation itself)."""
    if settings.blocked_references and not settings.single_reference and _has_rows(tensor, settings):
        view = _blocks(tensor, settings)
        return tf.reshape(fn(view, view[:, -1:]), tf.shape(tensor))
    return fn(tensor, reference_of(tensor, settings))


def _blocks(tensor: tf.Tensor, settings) -> tf.Tensor:
    """``tensor`` viewed as ``(blocks, block rows, features)``: a block's reference is its last row, so the first
    row's reference index is the block's length minus one."""
    if "block_rows" not in settings.differences:
        settings.differences["block_rows"] = settings.reference_index[0] + 1
    features = tensor.shape[1:].num_elements()
    if features is None:
        features = tf.reduce_prod(tf.shape(tensor)[1:])
    return tf.reshape(tensor, tf.stack([-1, settings.differences["block_rows"], features]))


def _has_rows(tensor: tf.Tensor, settings) -> bool:
    if not tensor.shape.rank:
        return False
    # as_list: with TF2 behaviour disabled, shape[0] is a Dimension, which compares to None as unknown
    first, batch = tensor.shape.as_list()[0], settings.path.inputs[0].shape.as_list()[0]
    return first is None or first == batch


def difference_from_reference(tensor: tf.Tensor, settings) -> tf.Tensor:
    """``tensor - reference_of(tensor)``, built once per tensor and explanation graph (a ReLU's output difference
    is the next max-pool's input difference)."""
    key = tensor.ref()
    if key not in settings.differences:
        settings.differences[key] = with_reference(tf.subtract, tensor, settings)
    return settings.differences[key]


def _secant(delta_out: tf.Tensor, delta_in: tf.Tensor, gradient) -> tf.Tensor:
    usable = tf.abs(delta_in) > DELTA_TOLERANCE
    safe_delta_in = tf.where(usable, delta_in, tf.constant(1, delta_in.dtype))
    return tf.where(usable, delta_out / safe_delta_in, gradient())


def rescale(op: tf.Operation, grads, settings) -> list:
    """Rescale rule (Shrikumar et al. 2017, Sec. 3.3): multiplier ``(f(x) - f(x_ref)) / (x - x_ref)``.

    For a smooth ``f`` the secant is computed only where ``|x - x_ref|`` is large enough for float32; elsewhere
    the multiplier is the gradient ``f'(x)``.
    """
    (grad,) = grads
    x, y = op.inputs[0], op.outputs[0]
    delta_in = difference_from_reference(x, settings)
    delta_out = grad * difference_from_reference(y, settings)
    return with_unused_inputs(op, _secant(delta_out, delta_in, lambda: gradient_of_input(op, grad)))


def rescale_activation(activation, grad: tf.Tensor, settings) -> tf.Tensor:
    """The Rescale rule at an activation written as several ops (:mod:`deepexplain.tensorflow.activations`): the
    secant ``(f(x) - f(x_ref)) / (x - x_ref)`` of the whole region, its derivative where ``|x - x_ref|`` is tiny."""
    delta_in = difference_from_reference(activation.x, settings)
    delta_out = grad * difference_from_reference(activation.y, settings)
    return _secant(delta_out, delta_in, lambda: activation.derivative_times(grad))


def rescale_piecewise_linear(op: tf.Operation, grads, settings) -> list:
    """Rescale rule for ReLU, ReLU6 and leaky ReLU: their secants lie between the slopes of their pieces, so the
    plain quotient is numerically safe; where ``x == x_ref`` exactly, the multiplier is 0 (the unit's contribution
    ``multiplier * (x - x_ref)`` is 0 either way; Captum uses the gradient there)."""
    (grad,) = grads
    x, y = op.inputs[0], op.outputs[0]
    secant = tf.math.divide_no_nan(difference_from_reference(y, settings), difference_from_reference(x, settings))
    return with_unused_inputs(op, grad * secant)


def max_pool(op: tf.Operation, grads, settings) -> list:
    """Max-pooling with exact summation-to-delta (the cross-maximum rule Captum's DeepLift also uses).

    Each window's output difference ``max(x) - max(x_ref)`` is split at ``m = max(max(x), max(x_ref))`` into
    ``m - max(x_ref)``, given to the argmax of ``x``, and ``max(x) - m``, given to the argmax of ``x_ref``; every
    input then gets multiplier ``contribution / (x - x_ref)``. A part is non-zero only where ``|x - x_ref|`` is at
    least as large, so each multiplier lies in [0, 1] times the incoming gradient, and the contributions of a window
    sum exactly to its output difference. Where ``x == x_ref`` the multiplier is 0. (The plain gradient, used by the
    original DeepLIFT paper for max-pooling, does not keep summation-to-delta.)
    """
    contribution = _pool_contribution(op, grads[0], settings)
    return with_unused_inputs(
        op, tf.math.divide_no_nan(contribution, difference_from_reference(op.inputs[0], settings))
    )


def fused_activation_pools(path, settings_type=None) -> dict:
    """Op -> rule for each ReLU-like activation whose output only a max-pool reads: the pool's contributions are
    divided by the *activation's* input difference and the activation passes the signal on unchanged.

    The chain of the two Rescale multipliers is ``(c / Δa) (Δa / Δx) = c / Δx`` wherever ``Δa != 0``; where
    ``Δa == 0`` the pool's contribution ``c`` is 0 as well (it is non-zero only at an argmax whose value differs from
    the reference's), so the fused rule gives the same numbers with three elementwise passes fewer per layer."""
    table = {}
    for pool in path.ops:
        if pool.type not in POOLING:
            continue
        activation = pool.inputs[0].op
        if activation.type not in PIECEWISE_LINEAR or path.consumers(activation.outputs[0]) != [pool]:
            continue
        table[pool] = _pool_over(activation)
        table[activation] = _pass_on
    return table


def _pool_over(activation: tf.Operation):
    # A ReLU's windows have their maxima where its input's do, wherever the pool's output differs from the
    # reference's (a window's larger maximum is positive, and there relu(z) = z): the maxima of z and z_ref route
    # the contributions as well as those of the ReLU's outputs, and z is read for the denominator anyway (measured
    # 3-9% faster than reading the ReLU's output as well). ReLU6 and leaky ReLU change their positive values.
    pre_activation = activation.inputs[0] if activation.type == "Relu" else None

    def rule(op, grads, settings):
        contribution = _pool_contribution(op, grads[0], settings, pre_activation)
        return with_unused_inputs(
            op, tf.math.divide_no_nan(contribution, difference_from_reference(activation.inputs[0], settings))
        )

    return rule


def _pass_on(op, grads, settings):
    return with_unused_inputs(op, grads[0])


def _pool_contribution(op: tf.Operation, grad: tf.Tensor, settings, argmax_of: tf.Tensor | None = None) -> tf.Tensor:
    """Each input's part of its window's output difference (see :func:`max_pool`), routed to the input's shape.

    Of the cross-maximum rule's two parts ``m - max(x_ref)`` and ``max(x) - m`` at most one is non-zero, and their
    sum is ``Δy = max(x) - max(x_ref)``: where ``max(x) > max(x_ref)`` all of ``Δy`` goes to the argmax of ``x``,
    where ``max(x) < max(x_ref)`` to the argmax of ``x_ref``. Both are the argmax of ``u = maximum(x, x_ref)`` (in the
    first case no ``x_ref`` reaches ``max(x)``, in the second no ``x`` reaches ``max(x_ref)``; ties resolve as in the
    two separate pools), so one max-pool gradient at ``u`` routes every window: one elementwise maximum, one pool and
    one pool gradient, where routing the parts separately took a pool gradient, an upsampling of the reference's
    part, its product with the reference's argmax mask and a sum. ``argmax_of`` (default ``x``) is a tensor whose
    windows have their maxima where ``x``'s do wherever ``Δy != 0`` (a ReLU's input). The pool of ``u`` is a copy of
    the forward pool so that oneDNN runs the gradient: its kernel reads the argmax from the workspace of the pool op
    that produced the gradient's ``orig_output`` (given another op's output, TensorFlow's own kernel runs, about ten
    times slower).
    """
    x, y = op.inputs[0], op.outputs[0]
    crossed = with_reference(tf.maximum, x if argmax_of is None else argmax_of, settings)
    return max_pool_backward(op, crossed, _apply_like(op, 0, crossed), grad * difference_from_reference(y, settings))


def midpoint(op: tf.Operation, grads, settings) -> list:
    """A product ``y = a * b`` of two tensors that depend on the input (a gate, a normalisation), a matrix product of
    two of them (attention's query x key and attention x value), or a squared difference ``(a - b)^2``: the op's
    gradient taken at the midpoints ``(a + a_ref) / 2``, ``(b + b_ref) / 2``.

    For a product that gives ``m_a = (b + b_ref) / 2`` and ``m_b = (a + a_ref) / 2``, the Shapley values of the two
    factors' differences: ``Δy = m_a Δa + m_b Δb`` exactly. For any function of degree two the gradient at the
    midpoint is the exact secant, so summation-to-delta holds (it is what the Rescale rule gives for
    ``y = f(x) = a(x) b(x)``). A product with a parameter is linear and keeps its gradient."""
    data = settings.path.data_inputs(op)
    if len(data) < 2:
        return list(original_gradient(op, *grads))
    means = {i: with_reference(_mean, op.inputs[i], settings) for i in data}
    return list(original_gradient(clone_op(op, means), *grads))


def _mean(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return 0.5 * (a + b)


def softmax(op: tf.Operation, grads, settings) -> list:
    """``s = u / sum(u)`` with ``u = exp(x - c)`` (``c`` the larger row maximum of ``x`` and ``x_ref``, the same for
    both, so nothing overflows): the Rescale rule at the exponential and, at the quotient ``q = u / v``, the Shapley
    values of its two inputs' differences, ``Δq = (1/v + 1/v_ref) / 2 Δu - (u + u_ref) / (2 v v_ref) Δv``, so that
    summation-to-delta holds exactly (for attention probabilities and for an explained softmax alike)."""
    (grad,) = grads
    x = op.inputs[0]
    x_ref = reference_of(x, settings)
    shift = tf.maximum(tf.reduce_max(x, axis=-1, keepdims=True), tf.reduce_max(x_ref, axis=-1, keepdims=True))
    u, u_ref = tf.exp(x - shift), tf.exp(x_ref - shift)
    v, v_ref = tf.reduce_sum(u, axis=-1, keepdims=True), tf.reduce_sum(u_ref, axis=-1, keepdims=True)
    to_u = 0.5 * grad * (1 / v + 1 / v_ref)
    to_u -= 0.5 * tf.reduce_sum(grad * (u + u_ref), axis=-1, keepdims=True) / (v * v_ref)
    delta_x = difference_from_reference(x, settings)
    return [to_u * _secant(u - u_ref, delta_x, lambda: 0.5 * (u + u_ref))]


PIECEWISE_LINEAR = ops.having(ops.RELU_LIKE)
ACTIVATIONS = ops.having(ops.ACTIVATION)
UNARY = ops.having(ops.UNARY_NONLINEAR)
POOLING = ops.having(ops.MAX_POOL)
RULES = {
    **{op_type: rescale for op_type in UNARY - PIECEWISE_LINEAR},
    **{op_type: rescale_piecewise_linear for op_type in PIECEWISE_LINEAR},
    **{op_type: max_pool for op_type in POOLING},
    **{op_type: midpoint for op_type in ops.having(ops.DENSE) | {"Mul", "SquaredDifference"}},
    "Softmax": softmax,
}


# ----------------------------------------------------------------------------------------------------------------
# RevealCancel (Shrikumar et al. 2017, Sec. 3.5.3)
# ----------------------------------------------------------------------------------------------------------------

# Linear ops ``u = a * W`` (one data input, one weight input) whose contributions RevealCancel splits by sign.
WEIGHTED_LINEAR = ops.WEIGHTED - ops.having(ops.TRANSPOSED)


def reveal_cancel(op: tf.Operation, grads, settings) -> list:
    """RevealCancel multipliers of an elementwise nonlinearity ``y = f(z)`` (Shrikumar et al. 2017, Sec. 3.5.3).

    ``z`` must be ``u (+ b)``, ``u`` the output of a weighted linear op (:data:`WEIGHTED_LINEAR`) applied to ``a``.
    The difference ``dz = z - z_ref`` is split into the sums of the positive and of the negative contributions
    ``w_ij * da_i`` of the linear op's inputs, ``dz+ = conv(da+, W+) + conv(da-, W-)`` and ``dz- = dz - dz+``, and
    (their Eq. for dy+ and dy-, which average the two orders of adding dz+ and dz-)::

        dy+ = 1/2 (f(z_ref + dz+) - f(z_ref)) + 1/2 (f(z) - f(z_ref + dz-))
        dy- = 1/2 (f(z_ref + dz-) - f(z_ref)) + 1/2 (f(z) - f(z_ref + dz+))

    so that ``dy+ + dy- = f(z) - f(z_ref)`` exactly. The multipliers ``m+ = dy+ / dz+`` and ``m- = dy- / dz-``
    (times the incoming multiplier) are left in ``settings.reveal_cancel`` for :func:`reveal_cancel_linear`, which
    gives every connection the multiplier of the sign of its contribution; then summation-to-delta holds at every
    unit. Where ``|dz+|`` (``|dz-|``) is below :data:`DELTA_TOLERANCE` the multiplier is its limit
    ``(f'(z) + f'(z_ref)) / 2`` (the contribution is ~0 either way).

    Any other input of the nonlinearity (batch normalisation, a residual sum, a pooling, a reshape in between) falls
    back to the Rescale rule at that op, with a warning naming it; for a nonlinearity applied to an explained input
    directly the two rules agree and no warning is given. The gradient returned for ``z`` is the Rescale one: it
    reaches the linear op only to be replaced there (any other consumer of ``u`` keeps its own share).
    """
    passed = RULES[op.type](op, grads, settings)
    _reveal_cancel_at(
        op.inputs[0],
        op.outputs[0],
        lambda z: _apply_like(op, 0, z),
        lambda: gradient_of_input(op, tf.ones_like(op.outputs[0])),
        grads[0],
        passed[0],
        f"op '{op.name}' ({op.type})",
        settings,
    )
    return passed


def reveal_cancel_activation(activation, grad: tf.Tensor, settings) -> tf.Tensor:
    """:func:`reveal_cancel` at an activation written as several ops (gelu, swish, ...): the region is re-applied
    to ``z_ref + dz+`` and ``z_ref + dz-``."""
    passed = rescale_activation(activation, grad, settings)
    _reveal_cancel_at(
        activation.x,
        activation.y,
        activation.apply,
        lambda: activation.derivative_times(tf.ones_like(activation.y)),
        grad,
        passed,
        f"the activation ending in op '{activation.head.name}'",
        settings,
    )
    return passed


def _reveal_cancel_at(z, y, f, slope_of, grad, passed, where: str, settings) -> None:
    """Leave the RevealCancel multipliers of ``y = f(z)`` for the linear op below ``z`` (see :func:`reveal_cancel`);
    ``passed`` is the Rescale signal returned for ``z``."""
    site = _weighted_linear_input(z, settings.path)
    if site is None:
        if not settings.path.is_input(z.op):
            settings.path.note(
                f"deeplift rule='reveal_cancel': the input of {where} is not produced by a weighted linear op (one "
                f"of {sorted(WEIGHTED_LINEAR)}, optionally followed by a bias addition) but by '{z.op.name}' "
                f"({z.op.type}); the Rescale rule is used there"
            )
        return
    linear, data_index = site
    delta_z = difference_from_reference(z, settings)
    delta_pos = _positive_contributions(linear, data_index, settings)
    delta_neg = delta_z - delta_pos
    z_ref, y_ref = reference_of(z, settings), reference_of(y, settings)
    y_pos, y_neg = f(z_ref + delta_pos), f(z_ref + delta_neg)
    dy_pos = 0.5 * (y_pos - y_ref) + 0.5 * (y - y_neg)
    dy_neg = 0.5 * (y_neg - y_ref) + 0.5 * (y - y_pos)
    slope = slope_of()
    limit = 0.5 * (slope + reference_of(slope, settings))
    m_pos, m_neg = grad * _quotient_or(dy_pos, delta_pos, limit), grad * _quotient_or(dy_neg, delta_neg, limit)
    pending = settings.reveal_cancel.get(linear)
    if pending is not None:  # a second nonlinearity on the same linear output: the routing is linear in m+, m-
        m_pos, m_neg = m_pos + pending[0], m_neg + pending[1]
        passed_sum = pending[2] + [passed]
    else:
        passed_sum = [passed]
    settings.reveal_cancel[linear] = (m_pos, m_neg, passed_sum, data_index)


def reveal_cancel_linear(op: tf.Operation, grads, settings) -> list:
    """Backward rule of a weighted linear op under RevealCancel (Shrikumar et al. 2017, Sec. 3.5.3).

    When a following nonlinearity left multipliers ``m+``/``m-`` (:func:`reveal_cancel`), the connection from input
    ``i`` to unit ``j`` carries ``m+_j`` if its contribution ``w_ij * da_i`` is positive and ``m-_j`` if negative::

        m_i = sum_j w_ij (1[w_ij da_i > 0] m+_j + 1[w_ij da_i < 0] m-_j)

    computed as the transposed op with ``W+`` and ``W-`` (where ``da_i == 0`` the contribution is 0 and ``m_i`` is
    the transposed op applied to ``(m+ + m-) / 2``, as innsight does). Whatever reached ``u`` through other consumers
    gets the plain transposed op. Without a following nonlinearity (e.g. the output layer) the rule is the op's own
    gradient, which is DeepLIFT's linear rule.
    """
    pending = settings.reveal_cancel.pop(op, None)
    if pending is None:  # no nonlinearity follows (or a product of two inputs): DeepLIFT's linear or midpoint rule
        return midpoint(op, grads, settings)
    m_pos, m_neg, passed, data_index = pending
    data, weights = op.inputs[data_index], op.inputs[1 - data_index]
    w_pos, w_neg = tf.maximum(weights, 0), tf.minimum(weights, 0)

    def transposed(w, signal):
        return original_gradient(_apply_like(op, 1 - data_index, w, output=False), signal)[data_index]

    to_positive_input = transposed(w_pos, m_pos) + transposed(w_neg, m_neg)  # da_i > 0
    to_negative_input = transposed(w_neg, m_pos) + transposed(w_pos, m_neg)  # da_i < 0
    delta = difference_from_reference(data, settings)
    multiplier = tf.where(
        delta > 0,
        to_positive_input,
        tf.where(delta < 0, to_negative_input, 0.5 * (to_positive_input + to_negative_input)),
    )
    if not (len(passed) == 1 and grads[0] is passed[0]):  # other consumers of u: their share, by the plain gradient
        rest = grads[0] - tf.add_n(passed)
        multiplier += original_gradient(op, rest)[data_index]
    result = [None] * len(op.inputs)
    result[data_index] = multiplier
    return result


def _weighted_linear_input(z: tf.Tensor, path) -> tuple[tf.Operation, int] | None:
    """``(linear op, index of its data input)`` when ``z`` is ``linear(a, W) (+ bias)``, else None."""
    u = z
    if z.op.type in ("BiasAdd", "Add", "AddV2", "Sub") and len(z.op.inputs) == 2:
        data = path.data_inputs(z.op)
        if len(data) != 1 or (z.op.type == "Sub" and data != [0]):  # u - b, not b - u
            return None
        u = z.op.inputs[data[0]]
        if u.shape.rank != z.shape.rank or not u.shape.is_compatible_with(z.shape):
            return None
    linear = u.op
    if linear.type not in WEIGHTED_LINEAR:
        return None
    data_inputs = path.data_inputs(linear)
    if len(data_inputs) != 1 or data_inputs[0] not in (0, 1):
        return None
    return linear, data_inputs[0]


def _positive_contributions(linear: tf.Operation, data_index: int, settings) -> tf.Tensor:
    """``sum_i max(w_ij da_i, 0)`` per output unit: ``linear(da+, W+) + linear(da-, W-)``."""
    delta = difference_from_reference(linear.inputs[data_index], settings)
    weights = linear.inputs[1 - data_index]
    positive = _apply_like(linear, [data_index, 1 - data_index], [tf.maximum(delta, 0), tf.maximum(weights, 0)])
    negative = _apply_like(linear, [data_index, 1 - data_index], [tf.minimum(delta, 0), tf.minimum(weights, 0)])
    return positive + negative


def _apply_like(op: tf.Operation, indices, tensors, output: bool = True):
    """A copy of ``op`` (same type and attributes) with the inputs at ``indices`` replaced by ``tensors``; its first
    output, or the copy itself with ``output=False`` (to take its gradient)."""
    indices = [indices] if isinstance(indices, int) else list(indices)
    tensors = [tensors] if isinstance(tensors, tf.Tensor) else list(tensors)
    clone = clone_op(op, dict(zip(indices, tensors, strict=True)))
    return clone.outputs[0] if output else clone


def _quotient_or(numerator: tf.Tensor, denominator: tf.Tensor, fallback: tf.Tensor) -> tf.Tensor:
    usable = tf.abs(denominator) > DELTA_TOLERANCE
    safe = tf.where(usable, denominator, tf.ones_like(denominator))
    return tf.where(usable, numerator / safe, fallback)


REVEAL_CANCEL_RULES = {
    **RULES,
    **{op_type: reveal_cancel for op_type in ACTIVATIONS},
    **{op_type: reveal_cancel_linear for op_type in WEIGHTED_LINEAR},
}
