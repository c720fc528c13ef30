"""PatternNet / PatternAttribution and the pattern estimator (Kindermans et al. 2018, ICLR).

Oracles: planted-signal data whose signal direction is known (the paper's Sec. 2 example and a two-component
variant, ../shared/specs/patterns_crp_cam.md A.8), a float64 numpy implementation of the estimator written here
(im2col patches, the A.2 formulas), a numpy backward pass with the patterns, the identities ``w^T a = 1``,
"patterns := kernels gives y * gradient" and "PatternAttribution of a linear layer sums to y", and the TF1 API on
the same weights.
"""

import numpy as np
import pytest
import tensorflow as tf

import deepexplain
from deepexplain.errors import InvalidInputError, InvalidTypeError, UnsupportedOpError

keras = pytest.importorskip("keras")

# ----------------------------------------------------------------------------------------------------------------
# numpy oracle
# ----------------------------------------------------------------------------------------------------------------


def same_padding(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, (total // 2, total - total // 2)


def _per_axis(value, rank):
    return tuple(value) if np.ndim(value) else (value,) * rank


def im2col(x, kernel, stride, padding, dilation=1):
    """(N, *spatial, C) -> (N, *out, prod(kernel) * C) patches in the (*kernel, C) order of a Keras kernel; any
    number of spatial axes, strided or dilated."""
    rank = x.ndim - 2
    kernel, stride, dilation = (_per_axis(v, rank) for v in (kernel, stride, dilation))
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    if padding == "same":
        found = [same_padding(n, e, s) for n, e, s in zip(x.shape[1:-1], extent, stride, strict=True)]
        out, pads = [o for o, _ in found], [p for _, p in found]
        x = np.pad(x, ((0, 0), *pads, (0, 0)))
    else:
        out = [(n - e) // s + 1 for n, e, s in zip(x.shape[1:-1], extent, stride, strict=True)]
    cols = np.empty((len(x), *out, *kernel, x.shape[-1]))
    for offset in np.ndindex(*kernel):
        window = tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                       for o, d, s, n in zip(offset, dilation, stride, out, strict=True))  # fmt: skip
        cols[(slice(None),) * (rank + 1) + offset] = x[(slice(None), *window)]
    return cols.reshape(len(x), *out, -1)


def transposed_cols(x, kernel, stride, padding, out):
    """The patches a transposed convolution's output positions read, (N, *out, prod(kernel) * C) in the (*kernel, C)
    order: entry (offset, c) of position p is x[q, c] where stride * q + offset - pad = p, and 0 where no input
    position q is (the zero-upsampled input); pad is the SAME padding of the convolution it transposes."""
    rank = x.ndim - 2
    kernel, stride = _per_axis(kernel, rank), _per_axis(stride, rank)
    pads = [same_padding(o, k, s)[1][0] if padding == "same" else 0
            for o, k, s in zip(out, kernel, stride, strict=True)]  # fmt: skip
    cols = np.zeros((len(x), *out, *kernel, x.shape[-1]))
    for offset in np.ndindex(*kernel):
        sources, targets = [], []
        for size, o, s, pad, n in zip(x.shape[1:-1], offset, stride, pads, out, strict=True):
            p = s * np.arange(size) + o - pad
            sources.append(np.flatnonzero((p >= 0) & (p < n)))
            targets.append(p[(p >= 0) & (p < n)])
        cols[np.ix_(range(len(x)), *targets) + offset] = x[np.ix_(range(len(x)), *sources)]
    return cols.reshape(len(x), *out, -1)


CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


def layer_matrix(layer, kernel=None):
    """``(K, back)``: ``kernel`` (an array of the layer's kernel shape, default the kernel) as the (inputs per
    sample, units) matrix of ``y = x K`` (float64) and the map of such a matrix back to the kernel's shape. A
    transposed convolution's kernel is (..., out, in); an EinsumDense's contracted axes are those it shares with its
    input."""
    kernel = np.asarray(layer.kernel.numpy() if kernel is None else kernel, np.float64)
    if isinstance(layer, TRANSPOSED):
        swapped = np.swapaxes(kernel, -1, -2)
        return swapped.reshape(-1, kernel.shape[-2]), lambda a: np.swapaxes(a.reshape(swapped.shape), -1, -2)
    if isinstance(layer, keras.layers.EinsumDense):
        x_term, k_term = layer.equation.split("->")[0].split(",")
        order = [i for i, c in enumerate(k_term) if c in x_term] + [i for i, c in enumerate(k_term) if c not in x_term]
        moved = kernel.transpose(order)
        inputs = int(np.prod([kernel.shape[i] for i, c in enumerate(k_term) if c in x_term]))
        return moved.reshape(inputs, -1), lambda a: a.reshape(moved.shape).transpose(np.argsort(order))
    return kernel.reshape(-1, kernel.shape[-1]), lambda a: a.reshape(kernel.shape)


def rows_of(layer, x):
    """(N, positions, inputs per sample): the samples of every output unit of ``layer`` on its input ``x``."""
    if isinstance(layer, CONVOLUTIONS):
        cols = im2col(x, layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
    elif isinstance(layer, TRANSPOSED):
        out = layer.compute_output_shape((None, *x.shape[1:]))[1:-1]
        cols = transposed_cols(x, layer.kernel_size, layer.strides, layer.padding, out)
    else:  # Dense, EinsumDense: per token
        cols = x
    return cols.reshape(len(x), -1, layer_matrix(layer)[0].shape[0])


def adjoint(function, x, g):
    """``J^T g`` for the linear map ``function`` (its Jacobian built from the unit inputs of one sample)."""
    basis = np.eye(x[0].size).reshape(-1, *x.shape[1:])
    jacobian = function(basis).reshape(len(basis), -1)
    return (g.reshape(len(x), -1) @ jacobian.T).reshape(x.shape)


def sequential_values(model, data):
    """The input of every layer of a Sequential model and the output (float64), computed layer by layer."""
    values = [np.asarray(data, np.float64)]
    for layer in model.layers:
        values.append(layer(values[-1].astype(layer.compute_dtype)).numpy().astype(np.float64))
    return values


def layer_rows(model, layer, values):
    """(x rows, bias-free y rows, activated output rows, kernel matrix) of a kernel layer (float64) from the
    :func:`sequential_values` of the data."""
    index = model.layers.index(layer)
    matrix = layer_matrix(layer)[0]
    x_rows = rows_of(layer, values[index]).reshape(-1, matrix.shape[0])
    return x_rows, x_rows @ matrix, values[index + 1].reshape(-1, matrix.shape[1]), matrix


def numpy_pattern(x_rows, y_rows, mask, kernel_2d):
    """The estimator of A.2 in float64: cov = E+[xy] - E+[x] E[y]; A = cov / diag(W^T cov)."""
    count = mask.sum(0)
    safe = count + (count == 0)
    mean_x = x_rows.T @ mask / safe
    mean_xy = x_rows.T @ (y_rows * mask) / safe
    mean_y = y_rows.mean(0)
    cov = mean_xy - mean_x * mean_y[None]
    norm = np.sum(kernel_2d * cov, axis=0)
    return cov / (norm + (norm == 0))[None]


def oracle_patterns(model, data, pattern_type):
    values = sequential_values(model, data)
    result = {}
    for layer in model.layers:
        if not hasattr(layer, "kernel"):
            continue
        x_rows, y_rows, activated, matrix = layer_rows(model, layer, values)
        mask = {"linear": np.ones_like(y_rows), "relu": (activated > 0) * 1.0, "relu.negative": (activated <= 0) * 1.0}
        result[layer.name] = layer_matrix(layer)[1](numpy_pattern(x_rows, y_rows, mask[pattern_type], matrix))
    return result


def numpy_backward(model, patterns, xs, unit, attribution):
    """PatternNet (``attribution=False``) or PatternAttribution by hand through the kernel layers (each one's
    samples' signal ``s P^T`` summed back into its input), max-pooling, average pooling over tokens, flattening and
    reshaping, with ReLU activations: signal = y_c at the output, kernels replaced, forward switches kept."""
    values = sequential_values(model, xs)
    signal = np.zeros_like(values[-1])
    signal[:, unit] = values[-1][:, unit]
    for index in range(len(model.layers) - 1, -1, -1):
        layer, x, out = model.layers[index], values[index], values[index + 1]
        if getattr(layer, "activation", None) is keras.activations.relu:
            signal = signal * (out > 0)
        if hasattr(layer, "kernel"):
            kernel = layer.kernel.numpy().astype(np.float64)
            p, _ = layer_matrix(layer, patterns[layer.name] * (kernel if attribution else 1))
            rows = signal.reshape(len(x), -1, p.shape[1]) @ p.T
            signal = adjoint(lambda v, layer=layer: rows_of(layer, v), x, rows)
        elif isinstance(layer, keras.layers.MaxPooling2D):
            n, h, w, c = x.shape
            windows = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
            first_max = windows == windows.max(axis=(2, 4), keepdims=True)
            routed = first_max * signal[:, :, None, :, None, :]
            signal = np.zeros_like(x)
            signal[:, : h // 2 * 2, : w // 2 * 2] = routed.reshape(n, h // 2 * 2, w // 2 * 2, c)
        elif isinstance(layer, keras.layers.GlobalAveragePooling1D):
            signal = np.broadcast_to(signal[:, None] / x.shape[1], x.shape)
        else:  # Flatten, Reshape
            signal = signal.reshape(x.shape)
    return signal


# ----------------------------------------------------------------------------------------------------------------
# models and data
# ----------------------------------------------------------------------------------------------------------------


def cnn(dtype="float32", seed=0, dead_unit=True):
    """Strided SAME conv + ReLU, max-pool, VALID conv + ReLU, flatten, dense + ReLU, dense logits."""
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((9, 9, 2), dtype=dtype),
        layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", dtype=dtype),
        layers.MaxPooling2D(2, dtype=dtype),
        layers.Conv2D(3, 2, padding="valid", activation="relu", dtype=dtype, name="conv_b"),
        layers.Flatten(dtype=dtype),
        layers.Dense(6, activation="relu", dtype=dtype),
        layers.Dense(3, dtype=dtype, name="logits"),
    ])  # fmt: skip
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.6, size=w.shape) for w in model.get_weights()])
    if dead_unit:  # a conv unit that is never active: its 'relu' pattern must be 0
        weights = model.layers[0].get_weights()
        weights[1][2] = -1e3
        model.layers[0].set_weights(weights)
    return model


def images(n=60, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 9, 9, 2)).astype(np.float32)


def dense_model(kernel, activation=None, dtype="float64"):
    model = keras.Sequential(
        [
            keras.Input((kernel.shape[0],), dtype=dtype),
            keras.layers.Dense(kernel.shape[1], activation=activation, use_bias=False, dtype=dtype),
        ]
    )
    model.set_weights([kernel])
    return model


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ----------------------------------------------------------------------------------------------------------------
# fitting
# ----------------------------------------------------------------------------------------------------------------


def test_linear_pattern_recovers_the_planted_signal_where_the_gradient_does_not():
    """Haufe et al.'s two-direction example (A.8.1): x = y a_s + eps a_d, filter w = (1, -1) cancels a_d."""
    rng = np.random.default_rng(0)
    n = 20000
    signal, distractor = np.array([1.0, 0.0]), np.array([1.0, 1.0])
    x = rng.normal(size=(n, 1)) * signal + rng.normal(size=(n, 1)) * distractor
    w = np.array([[1.0], [-1.0]])
    patterns = deepexplain.fit_patterns(dense_model(w), x, pattern_type="linear", progress=False)
    (a,) = patterns.values()
    assert cosine(a, signal) > 0.999
    assert cosine(w, signal) == pytest.approx(0.7071, abs=1e-4)
    assert float(w[:, 0] @ a[:, 0]) == pytest.approx(1.0, abs=1e-6)


def test_two_component_data_separates_relu_from_linear():
    """A.8.2: x = a+ max(y, 0) + a- min(y, 0) + eps a_d with w^T x = y: 'relu' finds a+, 'relu.negative' a-."""
    rng = np.random.default_rng(1)
    n = 40000
    a_pos, a_neg, a_d = np.eye(3)[0], np.eye(3)[1], np.array([1.0, -1.0, 1.0])
    y = rng.normal(0.3, 1.0, size=(n, 1))
    x = a_pos * np.maximum(y, 0) + a_neg * np.minimum(y, 0) + rng.normal(size=(n, 1)) * a_d
    model = dense_model(np.array([[1.0], [1.0], [0.0]]), activation="relu")
    found = {t: next(iter(deepexplain.fit_patterns(model, x, pattern_type=t, progress=False).values()))
             for t in ("relu", "relu.negative", "linear")}  # fmt: skip
    assert cosine(found["relu"], a_pos) > 0.999
    assert cosine(found["relu.negative"], a_neg) > 0.999
    assert cosine(found["linear"], a_pos) < 0.9


@pytest.mark.parametrize("pattern_type", ["linear", "relu", "relu.negative"])
def test_fitted_patterns_equal_the_numpy_definition(pattern_type):
    """A float64 model: every layer (strided SAME conv, VALID conv after max-pool, dense, logits) to 1e-9."""
    model, data = cnn("float64"), images().astype(np.float64)
    patterns = deepexplain.fit_patterns(model, data, pattern_type=pattern_type, batch_size=13, progress=False)
    expected = oracle_patterns(model, data, pattern_type)
    assert sorted(patterns) == sorted(expected)
    for name, pattern in expected.items():
        np.testing.assert_allclose(patterns[name], pattern, rtol=1e-5, atol=1e-7, err_msg=name)  # float32 storage
    if pattern_type == "relu":
        np.testing.assert_array_equal(patterns[model.layers[0].name][..., 2], 0)  # the unit never active


def test_float32_model_patterns_match_the_float64_definition():
    model, data = cnn("float32"), images()
    patterns = deepexplain.fit_patterns(model, data, batch_size=16, progress=False)
    for name, pattern in oracle_patterns(model, data, "relu").items():
        np.testing.assert_allclose(patterns[name], pattern, rtol=1e-3, atol=1e-4 * np.abs(pattern).max(), err_msg=name)


def test_every_unit_reads_its_pattern_back_as_one():
    """w_o^T a_o = 1 for every unit that is active on some sample (Sec. 3: the normalisation of the estimator)."""
    model = cnn()
    patterns = deepexplain.fit_patterns(model, images(), progress=False)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            kernel = layer.kernel.numpy()
            products = (kernel * patterns[layer.name]).reshape(-1, kernel.shape[-1]).sum(axis=0)
            active = np.abs(patterns[layer.name]).reshape(-1, kernel.shape[-1]).max(axis=0) > 0
            np.testing.assert_allclose(products[active], 1.0, atol=2e-5, err_msg=layer.name)


def test_the_fit_does_not_depend_on_the_batch_size_or_the_kind_of_data():
    model, data = cnn("float64"), images(41).astype(np.float64)
    reference = deepexplain.fit_patterns(model, data, batch_size=len(data), progress=False)
    fits = [
        deepexplain.fit_patterns(model, data, batch_size=1, progress=False),
        deepexplain.fit_patterns(model, data, batch_size=7, progress=False),  # the last batch has 6 rows
        deepexplain.fit_patterns(model, (data[i : i + 10] for i in range(0, 41, 10)), progress=False),
        deepexplain.fit_patterns(model, tf.data.Dataset.from_tensor_slices(data).batch(9), progress=False),
        deepexplain.fit_patterns(model, data[::-1].copy(), batch_size=5, progress=False),
    ]
    for fit in fits:
        for name in reference:
            np.testing.assert_allclose(fit[name], reference[name], rtol=1e-6, atol=1e-9, err_msg=name)


def test_a_pattern_fitter_fits_each_dataset_alone_with_the_live_weights():
    """PatternFitter traces once; each fit equals a fresh fit_patterns of its data (nothing of the last fit kept),
    with the weights the model has then."""
    from deepexplain.patterns import PatternFitter

    model, data = cnn("float64"), images(30).astype(np.float64)
    fitter = PatternFitter(model, pattern_type="relu.negative", batch_size=8, progress=False)

    def assert_fits_alone(rows):
        fitted = fitter.fit(rows)
        expected = deepexplain.fit_patterns(model, rows, pattern_type="relu.negative", progress=False)
        for name in expected:
            np.testing.assert_allclose(fitted[name], expected[name], rtol=1e-6, atol=1e-9, err_msg=name)
        return fitted

    first = assert_fits_alone(data[:20])
    assert_fits_alone(data[20:])
    model.layers[0].set_weights([w[::-1] for w in model.layers[0].get_weights()])  # other weights
    changed = assert_fits_alone(data[:20])
    assert not np.allclose(changed[model.layers[2].name], first[model.layers[2].name])
    assert fitter.pattern_type == "relu.negative"


def test_fit_patterns_keeps_its_trace_with_the_model_and_traces_anew_when_the_model_changes(monkeypatch):
    """A second fit_patterns of a Keras model traces nothing; new weights are read live; another activation, a
    popped and added layer or another pattern_type is traced anew; every fit equals the float64 definition. A copy
    or pickle of the model carries no trace."""
    import copy
    import pickle

    from deepexplain import patterns as module

    traced = []

    class Counted(module.PatternFitter):
        def __init__(self, *args, **kwargs):
            traced.append(kwargs.get("pattern_type"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(module, "PatternFitter", Counted)
    model, data = cnn("float64"), images(30).astype(np.float64)

    def assert_fit(pattern_type="relu", rows=data, batch_size=8):
        fitted = deepexplain.fit_patterns(model, rows, pattern_type=pattern_type, batch_size=batch_size,
                                          progress=False)  # fmt: skip
        expected = oracle_patterns(model, rows, pattern_type)
        assert sorted(fitted) == sorted(expected)
        for name, pattern in expected.items():
            np.testing.assert_allclose(fitted[name], pattern, rtol=1e-5, atol=1e-7, err_msg=f"{pattern_type} {name}")

    assert_fit()
    assert_fit(rows=data[:11], batch_size=4)  # other data and batch size: the same trace
    model.layers[0].set_weights([w[::-1] for w in model.layers[0].get_weights()])
    assert_fit()
    assert traced == ["relu"]
    assert_fit("linear")
    assert_fit()
    assert traced == ["relu", "linear"]
    model.layers[4].activation = keras.activations.linear  # the hidden dense layer: no ReLU any more
    assert_fit()
    assert traced == ["relu", "linear", "relu"]
    logits = model.pop()
    model.add(keras.layers.Dense(2, dtype="float64", name="other_logits"))
    model.layers[-1].set_weights([np.random.default_rng(3).normal(size=w.shape) for w in model.layers[-1].weights])
    assert_fit()
    assert len(traced) == 4 and logits.name not in deepexplain.fit_patterns(model, data, progress=False)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not getattr(twin, module._Fitters.ATTRIBUTE, module._Fitters())._fitters
        np.testing.assert_allclose(twin(data).numpy(), model(data).numpy())


def test_fits_of_one_model_in_threads_each_get_their_own_data():
    from concurrent.futures import ThreadPoolExecutor

    model, data = cnn("float64"), images(40).astype(np.float64)
    parts = [data[:20], data[20:], data[5:35], data]
    with ThreadPoolExecutor(4) as pool:
        fits = list(pool.map(lambda rows: deepexplain.fit_patterns(model, rows, batch_size=6, progress=False), parts))
    for rows, fitted in zip(parts, fits, strict=True):
        for name, pattern in oracle_patterns(model, rows, "relu").items():
            np.testing.assert_allclose(fitted[name], pattern, rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("pattern_type", ["relu", "linear"])
def test_sums_added_up_in_the_graph_equal_those_added_up_in_numpy(monkeypatch, pattern_type):
    """A live model's fit adds its batches' sums up in float64 variables inside the traced function
    (``GraphSums``); the same float64 additions as numpy's, so the patterns equal the fetched-and-added fit's
    bit for bit, a reused fitter's fit leaves nothing for the next (and holds nothing kernel-sized between fits), and
    the statistics a Ray worker takes are the whole part's."""
    from deepexplain.patterns import PatternFitter
    from deepexplain.tensorflow.rules import patterns as rules

    model, data = cnn("float32"), images(37)
    in_graph = PatternFitter(model, pattern_type=pattern_type, batch_size=8, progress=False)
    first = in_graph.fit(data[:20])
    method = in_graph._explainer.method
    assert method._graph_sums and all(g.state == "released" for g, _, _ in method._graph_sums)
    second = in_graph.fit(data)
    monkeypatch.setattr(rules.GraphSums, "supports", staticmethod(lambda tensors: False))
    fetched = PatternFitter(model, pattern_type=pattern_type, batch_size=8, progress=False)
    assert not fetched._explainer.method._graph_sums
    for name in second:
        np.testing.assert_array_equal(second[name], fetched.fit(data)[name], err_msg=name)
        np.testing.assert_array_equal(first[name], fetched.fit(data[:20])[name], err_msg=name)
    method.reset()
    in_graph._explainer.fit(data, batch_size=8, progress=False)
    taken = method.take_statistics()
    fetched._explainer.method.reset()
    fetched._explainer.fit(data, batch_size=8, progress=False)
    for a, b in zip(taken, fetched._explainer.method.take_statistics(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)  # per-position sums taken once, at the end


@pytest.mark.parametrize("pattern_type", ["relu", "relu.negative"])
def test_relu_layers_are_fitted_without_reading_their_bias_free_output(pattern_type):
    """A ReLU(z + b) layer's statistics read its ReLU's output ('relu') or input ('relu.negative'), never ``z``:
    TensorFlow then keeps the kernel op and its bias (and, for 'relu', the ReLU) one fused op."""
    from deepexplain.tensorflow.graph import Path
    from deepexplain.tensorflow.rules import patterns as rules

    model = cnn()
    found = {}

    @tf.function(autograph=False)
    def statistics(x, valid):
        path = Path([x], model(x, training=False))
        layers, _ = rules.kernel_layers(path)
        batch = rules.Batch(valid, path)
        tensors = [t for k in layers for t in rules.statistics(k, path, batch, pattern_type).tensors]
        for k in layers:
            gate = k.layer.z.consumers()[0].outputs[0]
            found[k.op.name] = ([op.type for op in k.layer.z.consumers()], [op.type for op in gate.consumers()])
        return tensors

    statistics.get_concrete_function(tf.TensorSpec((None, 9, 9, 2)), tf.TensorSpec((None,)))
    relu_layers = [name for name in found if "logits" not in name]
    assert len(relu_layers) == 3
    for name in relu_layers:
        z_readers, gate_readers = found[name]
        assert z_readers == ["BiasAdd"], name
        assert gate_readers == (["Relu"] if pattern_type == "relu" else ["Relu", "Minimum"]), name


def test_units_at_zero_are_inactive_for_both_components():
    """Rows of zeros and a unit without bias: g = z + b = 0 exactly, which 'relu' counts as inactive and
    'relu.negative' as active, as the definition (the ReLU's output > 0, <= 0) does."""
    model = keras.Sequential([keras.Input((3,), dtype="float64"),
                              keras.layers.Dense(4, activation="relu", dtype="float64", name="hidden"),
                              keras.layers.Dense(2, dtype="float64", name="logits")])  # fmt: skip
    rng = np.random.default_rng(27)
    model.set_weights([rng.normal(size=(3, 4)), np.array([0.0, 0.5, -0.5, 0.0]), rng.normal(size=(4, 2)),
                       np.array([0.0, 0.3])])  # fmt: skip
    data = np.concatenate([rng.normal(size=(20, 3)), np.zeros((7, 3))])
    for pattern_type in ("relu", "relu.negative"):
        fitted = deepexplain.fit_patterns(model, data, pattern_type=pattern_type, batch_size=6, progress=False)
        for name, pattern in oracle_patterns(model, data, pattern_type).items():
            np.testing.assert_allclose(fitted[name], pattern, rtol=1e-6, atol=1e-9, err_msg=f"{pattern_type} {name}")


def test_conv1d_and_depthwise_layers_get_patterns_of_their_kernels_shape():
    """Keras' Conv1D reads its kernel expanded to 2-D; a depthwise kernel has two unit axes (channel, multiplier):
    each agrees with the Dense pattern fitted on explicitly extracted patches."""
    rng = np.random.default_rng(2)
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="depthwise")
    model = keras.Sequential([keras.Input((6, 6, 2)), depthwise, keras.layers.Flatten(), keras.layers.Dense(2)])
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    data = rng.normal(size=(50, 6, 6, 2)).astype(np.float32)
    patterns = deepexplain.fit_patterns(model, data, pattern_type="relu", progress=False)
    kernel = model.get_layer("depthwise").kernel.numpy().astype(np.float64)  # (3, 3, 2, 2)
    assert patterns["depthwise"].shape == kernel.shape
    activated = keras.Model(model.inputs, model.get_layer("depthwise").output).predict(data, verbose=0)
    for channel in range(2):
        cols = im2col(data[..., channel : channel + 1].astype(np.float64), 3, 1, "valid").reshape(-1, 9)
        for m in range(2):
            w = kernel[:, :, channel, m].reshape(9, 1)
            mask = (activated[..., channel * 2 + m].reshape(-1, 1) > 0) * 1.0
            expected = numpy_pattern(cols, cols @ w, mask, w)
            np.testing.assert_allclose(patterns["depthwise"][:, :, channel, m].reshape(9, 1), expected, rtol=1e-3,
                                       atol=1e-5)  # fmt: skip

    conv1d = keras.Sequential([keras.Input((10, 3)), keras.layers.Conv1D(4, 3, activation="relu", name="c1"),
                               keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])  # fmt: skip
    sequences = rng.normal(size=(40, 10, 3)).astype(np.float32)
    fitted = deepexplain.fit_patterns(conv1d, sequences, progress=False)
    assert fitted["c1"].shape == conv1d.get_layer("c1").kernel.shape == (3, 3, 4)
    cols = np.stack([sequences[:, i : i + 3].reshape(40, -1) for i in range(8)], axis=1).reshape(-1, 9)
    w = conv1d.get_layer("c1").kernel.numpy().reshape(9, 4).astype(np.float64)
    activated = keras.Model(conv1d.inputs, conv1d.get_layer("c1").output).predict(sequences, verbose=0).reshape(-1, 4)
    expected = numpy_pattern(cols.astype(np.float64), cols @ w, (activated > 0) * 1.0, w)
    np.testing.assert_allclose(fitted["c1"].reshape(9, 4), expected, rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# explaining
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pattern.net", "pattern.attribution"])
def test_explanations_equal_a_numpy_backward_pass_with_the_patterns(method):
    model = cnn(dead_unit=False)
    patterns = deepexplain.fit_patterns(model, images(), progress=False)
    xs = images(4, seed=5)
    result = deepexplain.Explainer(method, model, patterns=patterns).run(xs, target=1)
    expected = numpy_backward(model, patterns, xs, 1, attribution=method == "pattern.attribution")
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_guided_patternnet_keeps_only_positive_signal_at_relus():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7, activation="relu"), keras.layers.Dense(2)])
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    patterns = deepexplain.fit_patterns(model, rng.normal(size=(80, 5)).astype(np.float32), progress=False)
    xs = rng.normal(size=(6, 5)).astype(np.float32)
    w1, b1, _, _ = model.get_weights()
    logits = model(xs).numpy()
    a1, a2 = patterns[model.layers[0].name], patterns[model.layers[1].name]
    signal = logits[:, :1] * a2[:, 0][None]  # at the hidden ReLU's output
    signal = np.maximum(signal, 0) * (xs @ w1 + b1 > 0)
    result = deepexplain.Explainer("pattern.net.guided", model, patterns=patterns).run(xs, target=0)
    np.testing.assert_allclose(result, signal @ a1.T, rtol=1e-5, atol=1e-6)


def test_patternattribution_of_a_linear_layer_sums_to_the_output():
    rng = np.random.default_rng(4)
    model = dense_model(rng.normal(size=(6, 3)), dtype="float32")
    data = rng.normal(size=(200, 6)).astype(np.float32)
    patterns = deepexplain.fit_patterns(model, data, pattern_type="linear", progress=False)
    xs = rng.normal(size=(5, 6)).astype(np.float32)
    result = deepexplain.Explainer("pattern.attribution", model, patterns=patterns).run(xs, target=2)
    np.testing.assert_allclose(result.sum(axis=1), model(xs).numpy()[:, 2], rtol=1e-5, atol=1e-5)
    patternnet = deepexplain.Explainer("pattern.net", model, patterns=patterns).run(xs, target=2)
    np.testing.assert_allclose(patternnet, model(xs).numpy()[:, 2:3] * patterns[model.layers[0].name][:, 2], rtol=1e-5)


def residual_model():
    """Conv, batch norm, ReLU, a residual addition, average pooling, dense: what iNNvestigate refused."""
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    h = layers.Conv2D(4, 3, padding="same")(inputs)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    r = layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    h = layers.Add()([h, r])
    h = layers.AveragePooling2D(2)(h)
    h = layers.MaxPooling2D()(h)
    outputs = layers.Dense(3)(layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(6)
    weights = [rng.normal(0, 0.5, size=w.shape) for w in model.get_weights()]
    weights[5] = np.abs(weights[5]) + 0.5  # batch norm's moving variance
    model.set_weights(weights)
    return model


@pytest.mark.parametrize("model_kind", ["cnn", "residual"])
def test_kernels_as_patterns_give_the_output_times_its_gradient(model_kind):
    """A.8.9: PatternNet with A := W, and PatternAttribution with A := 1, are y_c * grad y_c (the wiring test),
    also through batch norm, a residual addition and average pooling."""
    model = cnn(dead_unit=False) if model_kind == "cnn" else residual_model()
    kernels = {layer.name: layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")}
    ones = {name: np.ones_like(k) for name, k in kernels.items()}
    xs = images(3, seed=7) if model_kind == "cnn" else np.random.default_rng(7).normal(size=(3, 8, 8, 3))
    xs = xs.astype(np.float32)
    with tf.GradientTape() as tape:
        inputs = tf.constant(xs)
        tape.watch(inputs)
        output = model(inputs)[:, 2]
    expected = tape.gradient(output, inputs).numpy() * output.numpy()[:, None, None, None]
    net = deepexplain.Explainer("pattern.net", model, patterns=kernels).run(xs, target=2)
    attribution = deepexplain.Explainer("pattern.attribution", model, patterns=ones).run(xs, target=2)
    for result in (net, attribution):
        np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_projected_bottlenecks_are_scaled_copies():
    """iNNvestigate parity mode: every sample's largest magnitude is 1 and the result is collinear with the
    unprojected one on a sequential net."""
    model = cnn(dead_unit=False)
    patterns = deepexplain.fit_patterns(model, images(), progress=False)
    xs = images(3, seed=8)
    plain = deepexplain.Explainer("pattern.net", model, patterns=patterns).run(xs, target=0)
    projected = deepexplain.Explainer("pattern.net", model, patterns=patterns, project_bottlenecks=True).run(
        xs, target=0
    )
    np.testing.assert_allclose(np.abs(projected).reshape(3, -1).max(axis=1), 1.0, rtol=1e-6)
    for p, q in zip(plain, projected, strict=True):
        assert cosine(p, q) > 0.9999


def test_softmax_models_are_fitted_and_explained_on_their_logits():
    model = cnn(dead_unit=False)
    with_softmax = keras.Sequential([*model.layers[:-1], keras.layers.Dense(3, activation="softmax")])
    with_softmax.build((None, 9, 9, 2))
    with_softmax.set_weights(model.get_weights())
    data, xs = images(), images(2, seed=9)
    patterns = deepexplain.fit_patterns(model, data, progress=False)
    softmax_patterns = deepexplain.fit_patterns(with_softmax, data, progress=False)
    np.testing.assert_allclose(softmax_patterns[with_softmax.layers[-1].name], patterns["logits"], rtol=1e-5)
    renamed = {with_softmax.layers[i].name: patterns[layer.name] for i, layer in enumerate(model.layers)
               if layer.name in patterns}  # fmt: skip
    a = deepexplain.Explainer("pattern.attribution", model, patterns=patterns).run(xs, target=1)
    b = deepexplain.Explainer("pattern.attribution", with_softmax, patterns=renamed).run(xs, target=1)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_tf1_graph_and_keras_model_agree(tmp_path):
    """The TF1 API keys patterns by kernel op name; on the same weights both fit and explain the same."""
    from deepexplain.tensorflow import DeepExplain

    model = cnn(dead_unit=False)
    data, xs = images(), images(3, seed=10)
    keras_patterns = deepexplain.fit_patterns(model, data, progress=False)
    keras_result = deepexplain.Explainer("pattern.attribution", model, patterns=keras_patterns).run(xs, target=0)
    dense_layers = [layer for layer in model.layers if hasattr(layer, "kernel")]
    (k1, b1), (k2, b2), (k3, b3), (k4, b4) = [(layer.kernel.numpy(), layer.bias.numpy()) for layer in dense_layers]
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        X = tf.compat.v1.placeholder(tf.float32, (None, 9, 9, 2))
        h = tf.nn.relu(tf.nn.conv2d(X, k1, 2, "SAME", name="conv_a") + b1)
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        h = tf.nn.relu(tf.nn.conv2d(h, k2, 1, "VALID", name="conv_b") + b2)
        h = tf.reshape(h, (-1, int(np.prod(h.shape[1:]))))
        h = tf.nn.relu(tf.matmul(h, k3, name="dense") + b3)
        T = tf.matmul(h, k4, name="logits") + b4
        with DeepExplain(session=session) as de:
            graph_patterns = de.fit_patterns(T, X, data, batch_size=11)
            assert sorted(graph_patterns) == ["conv_a", "conv_b", "dense", "logits"]
            result = de.explain("pattern.attribution", T, X, xs, ys=np.eye(3)[[0, 0, 0]], patterns=graph_patterns)
            by_op = zip(["conv_a", "conv_b", "dense", "logits"], dense_layers, strict=True)
            same = deepexplain.Patterns({op: keras_patterns[layer.name] for op, layer in by_op},  # the Keras fit
                                        keras_patterns.pattern_type)  # fmt: skip
            graph_rho = de.signal_quality(T, X, images(40, seed=12), same, batch_size=16, progress=False)
            graph_gradient_rho = de.signal_quality(T, X, images(40, seed=12), progress=False)
    keras_rho = deepexplain.signal_quality(model, images(40, seed=12), keras_patterns, progress=False)
    keras_gradient_rho = deepexplain.signal_quality(model, images(40, seed=12), progress=False)
    names = dict(zip(["conv_a", "conv_b", "dense", "logits"], [layer.name for layer in dense_layers], strict=True))
    for op_name, layer_name in names.items():
        np.testing.assert_allclose(graph_patterns[op_name], keras_patterns[layer_name], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result, keras_result, rtol=1e-3, atol=1e-5 * np.abs(keras_result).max())  # float32 fits
    assert sorted(graph_rho) == sorted(graph_gradient_rho) == ["conv_a", "conv_b", "dense", "logits"]
    for op_name, layer_name in names.items():  # the TF1 API rates the same layers the same, in other batches
        assert graph_rho[op_name] == pytest.approx(keras_rho[layer_name], abs=1e-5)
        assert graph_gradient_rho[op_name] == pytest.approx(keras_gradient_rho[layer_name], abs=1e-5)


def test_save_and_load_give_identical_explanations(tmp_path):
    model = cnn()
    patterns = deepexplain.fit_patterns(model, images(), pattern_type="linear", progress=False)
    patterns.save(tmp_path / "patterns.npz")
    loaded = deepexplain.Patterns.load(tmp_path / "patterns.npz")
    assert loaded.pattern_type == "linear" and list(loaded) == list(patterns)
    xs = images(2, seed=11)
    a = deepexplain.Explainer("pattern.net", model, patterns=patterns).run(xs)
    b = deepexplain.Explainer("pattern.net", model, patterns=loaded).run(xs)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError):
        loaded["conv2d"] = np.zeros(1)  # read-only
    with pytest.raises(ValueError):
        loaded[next(iter(loaded))].flat[0] = 1


def test_the_explainer_reads_the_live_weights():
    """PatternAttribution multiplies the live kernel: after set_weights it explains the new one."""
    model = cnn(dead_unit=False)
    patterns = deepexplain.fit_patterns(model, images(), progress=False)
    explainer = deepexplain.Explainer("pattern.attribution", model, patterns=patterns)
    xs = images(2, seed=12)
    before = explainer.run(xs, target=0)
    model.set_weights([w * 1.5 for w in model.get_weights()])
    after = explainer.run(xs, target=0)
    fresh = deepexplain.Explainer("pattern.attribution", model, patterns=patterns).run(xs, target=0)
    np.testing.assert_allclose(after, fresh, rtol=1e-6)
    assert not np.allclose(before, after)


# ----------------------------------------------------------------------------------------------------------------
# more kernel layers: dense layers per token (EinsumDense, Dense on rank-3 inputs), transposed, dilated, 1-D and
# 3-D convolutions
# ----------------------------------------------------------------------------------------------------------------


def token_model(length=5, seed=20):
    """Dense layers applied per token (float64): the two EinsumDense equations of MultiHeadAttention's projections,
    one of them on a transposed kernel, a Dense on rank-3 inputs and a linear EinsumDense before token pooling.
    With ``length=None`` Keras computes the 3-D kernels with an Einsum op, else with BatchMatMulV2."""
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((length, 4), dtype="float64"),
        layers.EinsumDense("abc,cde->abde", (length, 2, 3), bias_axes="de", activation="relu", name="heads",
                           dtype="float64"),
        layers.Reshape((-1, 6), dtype="float64"),
        layers.EinsumDense("abc,dce->abde", (length, 2, 2), bias_axes="e", activation="relu", name="swapped",
                           dtype="float64"),
        layers.Reshape((-1, 4), dtype="float64"),
        layers.Dense(3, activation="relu", name="per_token", dtype="float64"),
        layers.EinsumDense("abc,cd->abd", (length, 3), bias_axes="d", name="projection", dtype="float64"),
        layers.GlobalAveragePooling1D(dtype="float64"),
        layers.Dense(2, name="logits", dtype="float64"),
    ])  # fmt: skip
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.7, size=w.shape) for w in model.get_weights()])
    return model


def tokens(n=40, seed=21):
    return np.random.default_rng(seed).normal(size=(n, 5, 4))


def layer_model(layer, shape, seed=22):
    """``layer`` (with a ReLU), flattened into dense logits, float64."""
    model = keras.Sequential([keras.Input(shape, dtype="float64"), layer, keras.layers.Flatten(dtype="float64"),
                              keras.layers.Dense(3, name="logits", dtype="float64")])  # fmt: skip
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.6, size=w.shape) for w in model.get_weights()])
    return model


LAYER_CASES = {  # layer type, arguments, input shape
    "conv_2d_widening": (keras.layers.Conv2D, dict(filters=6, kernel_size=3, padding="same"), (6, 6, 2)),
    "dense_widening": (keras.layers.Dense, dict(units=8), (3,)),
    "transposed_2d_same": (keras.layers.Conv2DTranspose, dict(filters=3, kernel_size=3, strides=2, padding="same"),
                           (5, 5, 2)),
    "transposed_2d_valid": (keras.layers.Conv2DTranspose, dict(filters=3, kernel_size=3, strides=2), (5, 5, 2)),
    "transposed_1d": (keras.layers.Conv1DTranspose, dict(filters=3, kernel_size=4, strides=2, padding="same"), (6, 2)),
    "transposed_3d": (keras.layers.Conv3DTranspose, dict(filters=2, kernel_size=2, strides=2), (3, 3, 3, 2)),
    "conv_3d": (keras.layers.Conv3D, dict(filters=3, kernel_size=2, strides=(1, 2, 1), padding="same"), (5, 5, 5, 2)),
    "conv_1d_dilated": (keras.layers.Conv1D, dict(filters=3, kernel_size=3, dilation_rate=2, padding="same"), (11, 2)),
    "conv_2d_dilated": (keras.layers.Conv2D, dict(filters=3, kernel_size=3, dilation_rate=2), (9, 9, 2)),
}  # fmt: skip


def layer_case(name):
    kind, arguments, shape = LAYER_CASES[name]
    layer = kind(**arguments, activation="relu", name="conv", dtype="float64")
    data = np.random.default_rng(23).normal(size=(30, *shape))
    return layer_model(layer, shape), data


PATTERN_TYPES = ("linear", "relu", "relu.negative")


def assert_patterns_are_the_definitions(model, data, pattern_types, batch_size=7):
    for pattern_type in pattern_types:
        fitted = deepexplain.fit_patterns(model, data, pattern_type=pattern_type, batch_size=batch_size,
                                          progress=False)  # fmt: skip
        expected = oracle_patterns(model, data, pattern_type)
        assert sorted(fitted) == sorted(expected)
        for name, pattern in expected.items():
            assert fitted[name].shape == model.get_layer(name).kernel.shape
            np.testing.assert_allclose(fitted[name], pattern, rtol=1e-5, atol=1e-7, err_msg=f"{pattern_type} {name}")


@pytest.mark.parametrize("length", [5, None])
def test_per_token_dense_patterns_equal_the_numpy_definition(length):
    """Each EinsumDense / rank-3 Dense unit is one neuron whose samples are all tokens of all rows: the float64
    definition on the tokens as rows, for every pattern type, in batches of 7 (the statistics merge exactly)."""
    assert_patterns_are_the_definitions(token_model(length), tokens(), PATTERN_TYPES)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_transposed_dilated_1d_3d_and_widening_layer_patterns_equal_the_numpy_definition(case):
    """The samples of a transposed convolution are the patches of its zero-upsampled input (its kernel gradient
    swaps input and output), those of a dilated convolution its dilated patches (Keras computes it between
    SpaceToBatchND and BatchToSpaceND; the positions that cropping drops are no samples). A layer with more
    outputs than inputs per row weights its input rows instead of its mask."""
    model, data = layer_case(case)
    every_type = case in ("transposed_2d_same", "conv_2d_widening", "dense_widening")
    assert_patterns_are_the_definitions(model, data, PATTERN_TYPES if every_type else ["relu"])


def random_patterns(model, seed=24):
    """Any patterns of the kernels' shapes (the backward pass is checked for any, not only fitted ones)."""
    rng = np.random.default_rng(seed)
    return {layer.name: rng.normal(size=layer.kernel.shape).astype(np.float32)  # as Patterns stores them
            for layer in model.layers if hasattr(layer, "kernel")}  # fmt: skip


@pytest.mark.parametrize("case", ["tokens", "tokens_einsum", *sorted(LAYER_CASES)])
def test_explanations_of_more_kernel_layers_equal_a_numpy_backward_pass(case):
    if case.startswith("tokens"):
        model, xs = token_model(None if case == "tokens_einsum" else 5), tokens(3, seed=25)
    else:
        model, xs = layer_case(case)
        xs = xs[:3]
    patterns = random_patterns(model)
    method = "pattern.net" if case in ("tokens", "transposed_2d_valid", "conv_3d") else "pattern.attribution"
    result = deepexplain.Explainer(method, model, patterns=patterns).run(xs, target=1)
    expected = numpy_backward(model, patterns, xs, 1, attribution=method == "pattern.attribution")
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("length", [5, None])
def test_signal_quality_of_per_token_dense_layers_equals_an_explicit_regression(length):
    """EinsumDense as Keras computes it: one batched matrix product (length 5) or an Einsum op (length None),
    whose rows are the data's axes the kernel contracts (one of them on a transposed kernel)."""
    assert_quality_is_the_regressions(token_model(length), tokens(200), "linear")


@pytest.mark.parametrize("case", ["transposed_2d_same", "transposed_3d", "conv_3d"])
def test_signal_quality_of_transposed_and_3d_convolutions_equals_an_explicit_regression(case):
    """Their samples are the patches of the output positions (of the zero-upsampled input for a transposed
    convolution), which signal_quality reads as the op with one-hot kernels (the logits after them have more
    inputs than the 30 rows: their in-sample regression is degenerate, not compared)."""
    model, data = layer_case(case)
    assert_quality_is_the_regressions(model, data, "relu", only=["conv"])


def test_signal_quality_of_a_depthwise_convolution_rates_each_channels_units_on_its_own_patches():
    """A depthwise kernel (3, 3, C, M): unit (c, m) reads the 3x3 patches of input channel c alone, so each channel
    is a layer of its own (its own input covariance); rho per unit in the kernel's (channel, multiplier) order."""
    rng = np.random.default_rng(28)
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="depthwise",
                                             dtype="float64")  # fmt: skip
    flatten, dense = keras.layers.Flatten(dtype="float64"), keras.layers.Dense(2, dtype="float64")
    model = keras.Sequential([keras.Input((6, 6, 2), dtype="float64"), depthwise, flatten, dense])
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    data = rng.normal(size=(120, 6, 6, 2))
    patterns = deepexplain.fit_patterns(model, data[:60], pattern_type="linear", progress=False)
    rho = deepexplain.signal_quality(model, data[60:], patterns, per_unit=True, batch_size=25, progress=False)
    kernel = depthwise.kernel.numpy()
    activated = keras.Model(model.inputs, depthwise.output).predict(data[60:], verbose=0)
    for channel in range(2):
        cols = im2col(data[60:, ..., channel : channel + 1], 3, 1, "valid").reshape(-1, 9)
        w = kernel[:, :, channel, :].reshape(9, 2)
        a = patterns["depthwise"][:, :, channel, :].reshape(9, 2).astype(np.float64)
        a = a / np.sum(w * a, axis=0)
        mask = (activated[..., 2 * channel : 2 * channel + 2].reshape(-1, 2) > 0) * 1.0
        expected = brute_force_quality(cols, cols @ w, mask, a, a)
        np.testing.assert_allclose(rho["depthwise"][2 * channel : 2 * channel + 2], expected, atol=1e-5)
    assert set(rho) == {"depthwise", model.layers[-1].name}


def test_signal_quality_refuses_layers_it_cannot_rate_naming_them():
    model = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 3, groups=2, name="grouped"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])  # fmt: skip
    with pytest.raises(UnsupportedOpError, match=r"signal_quality: .*grouped \(Conv2D with groups=2\)"):
        deepexplain.signal_quality(model, np.ones((3, 6, 6, 4), np.float32), progress=False)


def test_padding_rows_do_not_count_through_reshaped_and_cropped_outputs():
    """A TF1 graph with a fixed batch of 8 fed 30 rows: a widening convolution (its input rows weighted), a SAME
    dilated convolution (SpaceToBatchND, then a crop) and a tensordot over tokens (a MatMul of batch x tokens rows)
    fit what they fit on an input of any size, for every pattern type."""
    from deepexplain.tensorflow import DeepExplain

    rng = np.random.default_rng(26)
    k0, k1, k2, k3 = (rng.normal(size=s).astype(np.float32) for s in ((3, 3, 2, 5), (3, 3, 5, 3), (3, 4), (4, 2)))
    b0, b1, b2 = (np.abs(rng.normal(size=s)).astype(np.float32) + 0.1 for s in (5, 3, 4))
    data = rng.normal(size=(30, 9, 9, 2)).astype(np.float32)
    fitted = []
    for batch in (None, 8):
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
            X = tf.compat.v1.placeholder(tf.float32, (batch, 9, 9, 2))
            h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(X, k0, 1, "SAME", name="widening"), b0))
            h = tf.nn.relu(tf.nn.convolution(h, k1, padding="SAME", dilations=2, name="dilated") + b1)
            h = tf.nn.relu(tf.tensordot(tf.reshape(h, (-1, 81, 3)), k2, axes=1, name="tokens") + b2)
            T = tf.matmul(tf.reduce_mean(h, axis=1), k3, name="out")
            with DeepExplain(session=session) as de:
                fitted.append([de.fit_patterns(T, X, data, pattern_type=t, batch_size=8) for t in PATTERN_TYPES])
    for any_size, fixed in zip(*fitted, strict=True):
        assert len(any_size) == 4
        for name in any_size:
            np.testing.assert_allclose(fixed[name], any_size[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_grouped_convolutions_are_refused_naming_the_layer():
    model = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 3, groups=2, name="grouped"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])  # fmt: skip
    refused = r"patterns are defined for Dense .* the path from X to T also has grouped \(Conv2D with groups=2\)"
    with pytest.raises(UnsupportedOpError, match="fit_patterns: " + refused):
        deepexplain.fit_patterns(model, np.ones((3, 6, 6, 4), np.float32), progress=False)
    patterns = {"grouped": np.ones((3, 3, 2, 4)), model.layers[-1].name: np.ones((64, 2))}
    with pytest.raises(UnsupportedOpError, match="pattern.net: " + refused):
        deepexplain.Explainer("pattern.net", model, patterns=patterns)


# ----------------------------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------------------------


def test_pattern_methods_need_patterns():
    with pytest.raises(InvalidInputError, match="needs patterns=.*fit_patterns"):
        deepexplain.Explainer("pattern.attribution", cnn())
    with pytest.raises(InvalidTypeError, match="patterns must be"):
        deepexplain.Explainer("pattern.net", cnn(), patterns=[1, 2])
    with pytest.raises(InvalidTypeError, match="project_bottlenecks"):
        deepexplain.Explainer("pattern.net", cnn(), patterns={}, project_bottlenecks="yes")


def test_patterns_of_another_model_are_refused_before_any_run():
    model = cnn()
    other = keras.Sequential([keras.Input((9, 9, 2)), keras.layers.Conv2D(5, 3, name=model.layers[0].name),
                              keras.layers.Flatten(), keras.layers.Dense(3)])  # fmt: skip
    patterns = deepexplain.fit_patterns(other, images(10), progress=False)
    with pytest.raises(InvalidInputError, match="no entry for layer"):
        deepexplain.Explainer("pattern.net", model, patterns=patterns)
    fitted = dict(deepexplain.fit_patterns(model, images(10), progress=False))
    fitted[model.layers[0].name] = patterns[model.layers[0].name]
    with pytest.raises(InvalidInputError, match=r"do not match the model's kernels: conv2d\w*: kernel \(3, 3, 2, 4\)"):
        deepexplain.Explainer("pattern.net", model, patterns=fitted)


def test_bad_fitting_data_and_arguments_get_clear_errors():
    model = cnn()
    with pytest.raises(InvalidInputError, match="pattern_type must be one of"):
        deepexplain.fit_patterns(model, images(), pattern_type="positive")
    with pytest.raises(InvalidInputError, match="shape"):
        deepexplain.fit_patterns(model, np.zeros((4, 8, 8, 2), np.float32), progress=False)
    with pytest.raises(InvalidInputError, match="no samples"):
        deepexplain.fit_patterns(model, iter([]), progress=False)
    with pytest.raises(InvalidInputError, match="non-finite"):
        deepexplain.fit_patterns(model, np.full((4, 9, 9, 2), np.nan, np.float32), progress=False)
    kernel_free = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(InvalidInputError, match="no dense or convolution layer"):
        deepexplain.fit_patterns(kernel_free, np.ones((3, 4), np.float32), progress=False)
    with pytest.raises(InvalidInputError, match="cannot read patterns"):
        deepexplain.Patterns.load("/nonexistent/patterns.npz")


@pytest.mark.parametrize("pattern_type", ["relu", "relu.negative"])
@pytest.mark.parametrize("units", [4, 7])
def test_padding_rows_of_a_fixed_batch_size_do_not_count(units, pattern_type):
    """A TF1 input with a fixed batch of 8 fed 60 rows (the last call padded with 4 zero rows): the same patterns
    as an input of any batch size, the padding rows weighted out (a zero row is 'active' where the bias is > 0,
    and gives the second ReLU layer non-zero inputs and outputs; a ReLU layer of 4 units weights its output's
    signals, one of 7 its 5 inputs)."""
    from deepexplain.tensorflow import DeepExplain

    rng = np.random.default_rng(13)
    w1, b1 = rng.normal(size=(5, units)).astype(np.float32), np.abs(rng.normal(size=units)).astype(np.float32) + 0.1
    w2, b2 = rng.normal(size=(units, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    w3 = rng.normal(size=(5, 2)).astype(np.float32)
    b1[0] = -0.2  # inactive on the zero rows: counted by 'relu.negative' unless weighted out
    data = rng.normal(size=(60, 5)).astype(np.float32)
    fitted = []
    for batch in (None, 8):
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
            X = tf.compat.v1.placeholder(tf.float32, (batch, 5))
            hidden = tf.nn.relu(tf.matmul(X, w1, name="hidden") + b1)
            second = tf.nn.relu(tf.matmul(hidden, w2, name="second") + b2)
            T = tf.matmul(second, w3, name="out")
            with DeepExplain(session=session) as de:
                fitted.append(de.fit_patterns(T, X, data, pattern_type=pattern_type, batch_size=8))
    for name in ("hidden", "second", "out"):
        np.testing.assert_allclose(fitted[1][name], fitted[0][name], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# signal quality (Eq. 3)
# ----------------------------------------------------------------------------------------------------------------


def haufe_data(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1)) * np.array([1.0, 0.0]) + rng.normal(size=(n, 1)) * np.array([1.0, 1.0])


def test_signal_quality_of_the_planted_signal():
    """A.8.7: in-sample rho(S_a) = 1; rho(S_w) = 1 - 0.5 / sqrt(1.25) for unit variances."""
    x = haufe_data()
    model = dense_model(np.array([[1.0], [-1.0]]))
    patterns = deepexplain.fit_patterns(model, x, pattern_type="linear", progress=False)
    name = model.layers[0].name
    assert deepexplain.signal_quality(model, x, patterns, progress=False)[name] == pytest.approx(1.0, abs=1e-9)
    gradient = deepexplain.signal_quality(model, x, progress=False)[name]
    assert gradient == pytest.approx(1 - 0.5 / np.sqrt(1.25), abs=0.01)


def test_two_component_estimator_rates_at_least_as_high_as_the_linear_one():
    rng = np.random.default_rng(1)
    y = rng.normal(0.3, 1.0, size=(20000, 1))
    x = np.eye(3)[0] * np.maximum(y, 0) + np.eye(3)[1] * np.minimum(y, 0) + rng.normal(size=(20000, 1)) * [1, -1, 1]
    model = dense_model(np.array([[1.0], [1.0], [0.0]]), activation="relu")
    rho = {t: deepexplain.signal_quality(model, x, deepexplain.fit_patterns(model, x, pattern_type=t, progress=False),
                                         progress=False)[model.layers[0].name] for t in ("linear", "relu")}  # fmt: skip
    assert rho["relu"] >= rho["linear"] - 1e-9
    assert rho["relu"] > 0.99


def brute_force_quality(x_rows, y_rows, mask, a, b):
    """rho per unit from explicit distractor estimates and a least-squares fit of y on them (with intercept)."""
    rho = []
    for o in range(y_rows.shape[1]):
        y = y_rows[:, o]
        z_pos, z_neg = y * mask[:, o], y * (1 - mask[:, o])
        residual = x_rows - np.outer(z_pos, a[:, o]) - np.outer(z_neg, b[:, o])
        design = np.column_stack([np.ones(len(y)), residual])
        fit = design @ np.linalg.lstsq(design, y, rcond=None)[0]
        r2 = 1 - np.sum((y - fit) ** 2) / np.sum((y - y.mean()) ** 2)
        rho.append(1 - np.sqrt(max(r2, 0.0)))
    return np.array(rho)


@pytest.mark.parametrize("estimator", ["gradient", "linear", "relu"])
def test_signal_quality_equals_an_explicit_regression(estimator):
    assert_quality_is_the_regressions(cnn("float64"), images(300).astype(np.float64), estimator)


def assert_quality_is_the_regressions(model, data, estimator, only=None):
    """rho of every layer signal_quality rates (compared: those named ``only``, default all) equals
    :func:`brute_force_quality` on its samples."""
    patterns = None if estimator == "gradient" else deepexplain.fit_patterns(model, data, pattern_type=estimator,
                                                                             progress=False)  # fmt: skip
    rho = deepexplain.signal_quality(model, data, patterns, per_unit=True, batch_size=64, progress=False)
    rated = [layer for layer in model.layers if hasattr(layer, "kernel")]
    assert sorted(rho) == sorted(layer.name for layer in rated)
    values = sequential_values(model, data)
    for layer in rated if only is None else [model.get_layer(name) for name in only]:
        x_rows, y_rows, activated, kernel = layer_rows(model, layer, values)
        mask = (activated > 0) * 1.0
        if estimator == "gradient":
            a = b = kernel / np.sum(kernel**2, axis=0)
        elif estimator == "linear":
            a = b = layer_matrix(layer, patterns[layer.name])[0]
        else:
            a = layer_matrix(layer, patterns[layer.name])[0]
            b = numpy_pattern(x_rows, y_rows, 1 - mask, kernel)
        a, b = (v / np.where(np.sum(kernel * v, axis=0) == 0, 1, np.sum(kernel * v, axis=0)) for v in (a, b))
        expected = brute_force_quality(x_rows, y_rows, mask, a, b)
        varying = y_rows.std(axis=0) > 0
        np.testing.assert_allclose(rho[layer.name][varying], expected[varying], atol=1e-5, err_msg=layer.name)


def test_conv3d_patterns_have_the_kernels_shape_and_read_back_as_one():
    rng = np.random.default_rng(14)
    model = keras.Sequential([keras.Input((5, 5, 5, 2)), keras.layers.Conv3D(3, 2, activation="relu", name="c3"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])  # fmt: skip
    patterns = deepexplain.fit_patterns(model, rng.normal(size=(30, 5, 5, 5, 2)).astype(np.float32), progress=False)
    kernel = model.get_layer("c3").kernel.numpy()
    assert patterns["c3"].shape == kernel.shape
    np.testing.assert_allclose((kernel * patterns["c3"]).reshape(-1, 3).sum(axis=0), 1.0, atol=1e-5)


def test_signal_quality_does_not_depend_on_the_batch_size():
    """Its sums are float64 from the layer's input on: float32 sums per batch moved rho of the logits by 1e-3
    between batches of 7, 16 and 40 rows (their covariance is near-singular: 6 ReLU inputs, 40 samples)."""
    model = cnn(dead_unit=False)
    patterns = deepexplain.fit_patterns(model, images(), progress=False)
    rated = [deepexplain.signal_quality(model, images(40, seed=12), patterns, batch_size=b, progress=False)
             for b in (7, 16, 40)]  # fmt: skip
    for key in rated[0]:
        assert max(r[key] for r in rated) - min(r[key] for r in rated) < 1e-6, [r[key] for r in rated]
