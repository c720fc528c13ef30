"""AttnLRP (``lrp.attn``) and CP-LRP (``lrp.cp``) on a small Keras text Transformer, against a weight-identical
PyTorch twin.

Oracles, per token (the relevance at the embedding output summed over the embedding axis) and per embedding unit:
- ``lxt`` (the AttnLRP authors' package, its explicit rules ``lxt.explicit.functional``: ``linear_epsilon``,
  ``matmul``, ``softmax``, ``add2``, ``layer_norm``, ``mean`` and ``lxt.explicit.rules.identity`` for GELU), whose
  backward pass carries the relevance itself; seeded with the explained logit. lxt stabilises denominators with
  ``z + eps``, we with ``z + eps sign(z)``: the comparison to 1e-4 gives lxt's stabiliser the sign, and bounds the
  difference with lxt's own (<= 1e-3 of the largest relevance). Skipped without lxt.
- Gradient x input of the twin with AttnLRP's rules written as gradient changes (``lxt``'s efficient mode): the
  gradient at queries and keys divided by 4 and at values by 2 (the uniform rule at the two products), the
  normaliser of each layer norm detached, GELU's derivative replaced by ``gelu(x) / x`` (the identity rule). With all
  stabilisers 0 this is exactly AttnLRP; needs only torch.
- CP-LRP: gradient x input of the twin with the queries, keys and normalisers detached (``lxt``'s CP-LRP patches)
  and GELU's identity rule as above, which with the z-rule is exactly ``lrp.cp(default='z', epsilon=0)``; and
  conservation layer by layer on a bias-free model.

The twin computes Keras' MultiHeadAttention (query scaled by 1/sqrt(key_dim) after its bias: here folded into the
query weights, the same function), LayerNormalization (epsilon 1e-3) and exact GELU; it is checked to give the same
logits first. Biases, layer-norm scales and shifts are random (Keras initialises them to 1 and 0).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import importlib.util  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain.errors import InvalidInputError  # noqa: E402

torch = pytest.importorskip("torch")
HAS_LXT = importlib.util.find_spec("lxt") is not None

T, D, HEADS, KEY_DIM, VOCAB = 6, 8, 2, 4, 20
IDS = np.random.default_rng(0).integers(0, VOCAB, (5, T))


def text_transformer(blocks=1, bias=True, seed=0, masked=False):
    """Embedding -> blocks of (self-attention + residual -> LayerNorm -> GELU feed-forward + residual -> LayerNorm)
    -> mean over tokens -> logits, with random non-zero biases and layer-norm parameters (when ``bias``). With
    ``masked``, the model takes the embeddings and a padding mask ``keep`` (N, T) instead of token ids, and attention
    pairs with a padded token are masked (Keras selects a large negative score there)."""
    keras.utils.set_random_seed(seed)
    if masked:
        h, keep = keras.Input((T, D)), keras.Input((T,), dtype="bool")
        inputs = [h, keep]
        pairs = keras.ops.logical_and(keras.ops.expand_dims(keep, 1), keras.ops.expand_dims(keep, 2))
    else:
        inputs = keras.Input((T,), dtype="int32")
        h, pairs = keras.layers.Embedding(VOCAB, D, name="embedding")(inputs), None
    for b in range(blocks):
        attention = keras.layers.MultiHeadAttention(HEADS, KEY_DIM, use_bias=bias, name=f"attention_{b}")
        attended = attention(h, h, attention_mask=pairs)
        h = keras.layers.LayerNormalization(center=bias, name=f"norm_{b}a")(h + attended)
        f = keras.layers.Dense(16, activation="gelu", use_bias=bias, name=f"up_{b}")(h)
        f = keras.layers.Dense(D, use_bias=bias, name=f"down_{b}")(f)
        h = keras.layers.LayerNormalization(center=bias, name=f"norm_{b}b")(h + f)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, use_bias=bias, name="logits")(pooled))
    rng = np.random.default_rng(seed + 1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.set_weights([w + rng.normal(0, 0.3, w.shape).astype("float32") for w in layer.get_weights()])
    for weight in model.weights:
        if weight.path.endswith("bias"):
            weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
    return model


class Twin:
    """The Keras model in PyTorch, on the embedded tokens, with the ops of one of three modes (see the module
    docstring): 'lxt' (lxt's explicit rules), 'attn' (AttnLRP as gradient changes) or 'cp' (CP-LRP as gradient
    changes)."""

    def __init__(self, model, blocks, mode, keep=None):
        self.mode, self.blocks = mode, blocks
        self.pairs = None if keep is None else torch.tensor(keep[:, None, :, None] & keep[:, None, None, :])
        self.weights = {w.path: torch.tensor(np.asarray(w.numpy(), np.float32)) for w in model.weights}
        self.norm_epsilon = model.get_layer("norm_0a").epsilon
        if mode == "lxt":
            from lxt.explicit import functional as lf
            from lxt.explicit import rules as lr

            self.lf, self.lr = lf, lr

    def w(self, name):
        return self.weights.get(name)

    def linear(self, x, kernel, bias, scale=1.0):
        kernel = kernel.reshape(kernel.shape[0], -1)  # the projections' (D, heads, key_dim) -> (D, heads * key_dim)
        weight = kernel.T * scale
        bias = None if bias is None else bias.reshape(-1) * scale
        if self.mode == "lxt":
            return self.lf.linear_epsilon(x, weight, bias)
        return torch.nn.functional.linear(x, weight, bias)

    def matmul(self, a, b):
        return self.lf.matmul(a, b) if self.mode == "lxt" else a @ b

    def add(self, a, b):
        return self.lf.add2(a, b) if self.mode == "lxt" else a + b

    def softmax(self, x):
        return self.lf.softmax(x, -1) if self.mode == "lxt" else torch.softmax(x, -1)

    def mean(self, x):
        return self.lf.mean(x, 1, False) if self.mode == "lxt" else x.mean(1)

    def gelu(self, x):
        if self.mode == "lxt":
            return self.lr.identity(torch.nn.functional.gelu, x)
        return _IdentityRule.apply(x)

    def layer_norm(self, x, name):
        gamma, beta = self.w(f"{name}/gamma"), self.w(f"{name}/beta")
        if self.mode == "lxt":
            return self.lf.layer_norm(x, gamma, beta, self.norm_epsilon)
        centred = x - x.mean(-1, keepdim=True)
        std = torch.sqrt((centred**2).mean(-1, keepdim=True) + self.norm_epsilon).detach()
        y = centred / std * gamma
        return y if beta is None else y + beta

    def attention(self, x, name):
        def project(part, scale=1.0):
            out = self.linear(x, self.w(f"{name}/{part}/kernel"), self.w(f"{name}/{part}/bias"), scale)
            return out.reshape(x.shape[0], T, HEADS, KEY_DIM).transpose(1, 2)

        q, k, v = project("query", KEY_DIM**-0.5), project("key"), project("value")
        if self.mode == "attn":
            q, k, v = _Divided.apply(q, 4.0), _Divided.apply(k, 4.0), _Divided.apply(v, 2.0)
        elif self.mode == "cp":
            q, k = q.detach(), k.detach()
        scores = self.matmul(q, k.transpose(-1, -2))
        if self.pairs is not None:  # Keras: where(mask, scores, large negative) before the softmax
            scores = torch.where(self.pairs, scores, torch.tensor(-1e9))
        probabilities = self.softmax(scores)
        mixed = self.matmul(probabilities, v).transpose(1, 2).reshape(x.shape[0], T, D)
        kernel = self.w(f"{name}/attention_output/kernel").reshape(D, D)
        return self.linear(mixed, kernel, self.w(f"{name}/attention_output/bias"))

    def __call__(self, x):
        h = x
        for b in range(self.blocks):
            h = self.layer_norm(self.add(h, self.attention(h, f"attention_{b}")), f"norm_{b}a")
            f = self.gelu(self.linear(h, self.w(f"up_{b}/kernel"), self.w(f"up_{b}/bias")))
            f = self.linear(f, self.w(f"down_{b}/kernel"), self.w(f"down_{b}/bias"))
            h = self.layer_norm(self.add(h, f), f"norm_{b}b")
        return self.linear(self.mean(h), self.w("logits/kernel"), self.w("logits/bias"))

    def relevance(self, embedded, target):
        """The relevance at the embedding: lxt's backward carries it; the gradient modes give gradient x input."""
        x = torch.tensor(embedded, requires_grad=True)
        out = self(x)
        onehot = torch.nn.functional.one_hot(torch.tensor(target), 3).float()
        out.backward(out.detach() * onehot if self.mode == "lxt" else onehot)
        return (x.grad if self.mode == "lxt" else x.grad * x).detach().numpy(), out.detach().numpy()


class _Divided(torch.autograd.Function):
    """Identity forward, gradient divided by ``factor`` (the uniform rule in gradient x input form)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.factor, None


class _IdentityRule(torch.autograd.Function):
    """GELU whose derivative is ``gelu(x) / x`` (the identity rule in gradient x input form)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.nn.functional.gelu(x)
        ctx.save_for_backward(y / x)
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0]


def run_twin(model, blocks, mode, keep=None, embedded=None):
    """The twin's relevance at the embeddings, for each sample's largest logit (token ids IDS, or ``embedded`` and
    the padding mask ``keep`` of a masked model)."""
    inputs = IDS if keep is None else [embedded, keep]
    embedded = model.get_layer("embedding")(IDS).numpy() if keep is None else embedded
    logits = model(inputs).numpy()
    target = logits.argmax(axis=1)
    relevance, twin_logits = Twin(model, blocks, mode, keep).relevance(embedded, target)
    np.testing.assert_allclose(twin_logits, logits, rtol=1e-4, atol=1e-5)  # the twin is the same function
    return relevance, target


def assert_same_relevance(ours, theirs, tolerance=1e-4):
    """Per token (summed over the embedding axis) and per unit, to ``tolerance`` of the largest value."""
    tokens, theirs_tokens = ours.sum(-1), theirs.sum(-1)
    assert np.abs(theirs_tokens).max() > 1e-3  # not trivially zero
    np.testing.assert_allclose(tokens, theirs_tokens, atol=tolerance * np.abs(theirs_tokens).max())
    np.testing.assert_allclose(ours, theirs, atol=tolerance * np.abs(theirs).max())


def _signed_stabiliser(input, epsilon=1e-6, inplace=False):
    """``z + eps sign(z)`` (sign(0) = 1), the stabiliser of zennit and of deepexplain; lxt adds ``+eps``."""
    return input + torch.where(input >= 0, epsilon, -epsilon)


@pytest.mark.skipif(not HAS_LXT, reason="lxt is not installed (pip install --no-deps lxt==2.1)")
@pytest.mark.parametrize("blocks", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_attnlrp_equals_lxt_explicit_rules(blocks, bias, monkeypatch):
    """Per token and per unit to 1e-4 of the largest relevance, with lxt's stabiliser given the sign of ``z`` (the
    one deliberate difference, see ``AttnLRP``); with lxt's own ``+eps`` the two differ by <= 1e-3 of it, from the
    units whose ``z`` is within eps of 0 on the negative side, where ``z + eps`` nearly vanishes."""
    from lxt.explicit import functional as lf

    model = text_transformer(blocks, bias)
    theirs_unsigned, target = run_twin(model, blocks, "lxt")
    ours = deepexplain.explain("lrp.attn", model, IDS, target=target, layer="embedding")
    scale = np.abs(theirs_unsigned).max()
    assert np.abs(ours - theirs_unsigned).max() <= 1e-3 * scale
    monkeypatch.setattr(lf, "_stabilize", _signed_stabiliser)
    theirs, _ = run_twin(model, blocks, "lxt")
    assert_same_relevance(ours, theirs)


@pytest.mark.parametrize("blocks", [1, 2])
def test_attnlrp_is_gradient_x_input_with_its_rules_as_gradient_changes(blocks):
    """With every stabiliser 0, AttnLRP is exactly gradient x input of the network whose gradients carry its rules
    (the form lxt's efficient mode uses)."""
    model = text_transformer(blocks, bias=True, seed=4)
    theirs, target = run_twin(model, blocks, "attn")
    ours = deepexplain.explain("lrp.attn", model, IDS, target=target, layer="embedding", default="z", epsilon=0.0,
                               product_epsilon=0.0)  # fmt: skip
    assert_same_relevance(ours, theirs, 1e-5)


@pytest.mark.parametrize("blocks", [1, 2])
def test_cp_lrp_is_gradient_x_input_with_attention_and_normalisers_constant(blocks):
    model = text_transformer(blocks, bias=True, seed=5)
    theirs, target = run_twin(model, blocks, "cp")
    ours = deepexplain.explain("lrp.cp", model, IDS, target=target, layer="embedding", default="z", epsilon=0.0)
    assert_same_relevance(ours, theirs, 1e-5)


def test_cp_lrp_conserves_relevance_through_every_block_of_a_bias_free_model():
    model = text_transformer(2, bias=False, seed=6)
    logits = model(IDS).numpy()
    target = logits.argmax(axis=1)
    explained = logits[np.arange(len(IDS)), target]
    for layer in ["embedding", "norm_0a", "norm_0b", "norm_1a", "norm_1b", "pool"]:  # every path passes them
        relevance = deepexplain.explain("lrp.cp", model, IDS, target=target, layer=layer, default="z", epsilon=0.0)
        totals = relevance.reshape(len(IDS), -1).sum(axis=1)
        np.testing.assert_allclose(totals, explained, rtol=1e-4, err_msg=layer)


def test_attnlrp_and_cp_lrp_differ_where_attention_carries_relevance():
    """CP-LRP passes no relevance through the queries and keys; AttnLRP does, so the two must differ."""
    model = text_transformer(1, bias=True)
    target = model(IDS).numpy().argmax(axis=1)
    attn = deepexplain.explain("lrp.attn", model, IDS, target=target, layer="embedding")
    cp = deepexplain.explain("lrp.cp", model, IDS, target=target, layer="embedding")
    assert np.abs(attn - cp).max() > 1e-3 * np.abs(cp).max()


def test_product_epsilon_is_checked():
    model = text_transformer(1)
    with pytest.raises(InvalidInputError, match="product_epsilon of lrp.attn must be a finite number"):
        deepexplain.Explainer("lrp.attn", model, product_epsilon="small")


def test_normalisations_written_by_hand_or_as_rms_norm_are_one_affine_layer():
    """A hand-written layer norm ``(x - mean) / sqrt(var + eps)`` and Keras' RMSNormalization, recognised as layers
    whose normaliser is a constant: ``lrp.z`` equals gradient x input of the same model with the normaliser under
    ``tf.stop_gradient`` (the rest of the model is linear), and conserves relevance."""
    import tensorflow as tf

    class HandNorm(keras.layers.Layer):
        def __init__(self, frozen=False, **kwargs):
            super().__init__(**kwargs)
            self.frozen = frozen

        def call(self, x):
            centred = x - tf.reduce_mean(x, axis=-1, keepdims=True)
            spread = tf.sqrt(tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True) + 1e-3)
            return centred / (tf.stop_gradient(spread) if self.frozen else spread)

    class FrozenRMS(keras.layers.Layer):
        def call(self, x):
            return x * tf.stop_gradient(tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + 1e-6))

    def model(frozen):
        keras.utils.set_random_seed(7)
        x = keras.Input((T, D))
        h = keras.layers.Dense(D, use_bias=False)(x)
        h = HandNorm(frozen)(h)
        h = keras.layers.Dense(D, use_bias=False)(h)
        h = FrozenRMS()(h) if frozen else keras.layers.RMSNormalization(epsilon=1e-6)(h)
        return keras.Model(x, keras.layers.Dense(3, use_bias=False)(keras.layers.GlobalAveragePooling1D()(h)))

    xs = np.random.default_rng(1).normal(size=(4, T, D)).astype("float32")
    live, frozen = model(False), model(True)
    np.testing.assert_allclose(live(xs), frozen(xs), rtol=1e-5, atol=1e-6)
    ours = deepexplain.explain("lrp.z", live, xs, target=1, bias=False)
    oracle = deepexplain.explain("grad*input", frozen, xs, target=1)
    np.testing.assert_allclose(ours, oracle, rtol=1e-4, atol=1e-5 * np.abs(oracle).max())
    np.testing.assert_allclose(ours.reshape(4, -1).sum(1), live(xs).numpy()[:, 1], rtol=1e-4)


def test_attnlrp_without_attention_is_lrp_epsilon():
    keras.utils.set_random_seed(2)
    cnn = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                            keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(3)])  # fmt: skip
    xs = np.random.default_rng(2).normal(size=(3, 8, 8, 1)).astype("float32")
    attn = deepexplain.explain("lrp.attn", cnn, xs, target=0)
    epsilon = deepexplain.explain("lrp.epsilon", cnn, xs, target=0, epsilon=1e-6)
    np.testing.assert_allclose(attn, epsilon, rtol=1e-6, atol=1e-7)


def test_an_op_without_an_attnlrp_rule_is_named():
    import tensorflow as tf

    from deepexplain.errors import UnsupportedOpError

    x = keras.Input((T, D))
    h = keras.layers.Dense(D)(x)
    pairwise = keras.layers.Lambda(lambda t: tf.maximum(t, tf.reverse(t, axis=[1])))(h)
    model = keras.Model(x, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(pairwise)))
    xs = np.random.default_rng(3).normal(size=(2, T, D)).astype("float32")
    with pytest.raises(UnsupportedOpError, match="lrp.attn: no rule covers these ops .*Maximum"):
        deepexplain.explain("lrp.attn", model, xs, target=0)


def test_padding_masks_in_attention():
    """Attention masked for padded tokens (Keras' select of a large negative score; ``where`` in the twin): AttnLRP
    with its stabilisers 0 equals its gradient form and lxt (signed stabiliser), CP-LRP conserves on a bias-free model;
    an Embedding(mask_zero=True) explained at its output is refused (the layers after it would lose the mask)."""
    keep = np.ones((len(IDS), T), bool)
    keep[0, 3:], keep[1, 5:] = False, False
    embedded = np.random.default_rng(8).normal(size=(len(IDS), T, D)).astype("float32")
    model = text_transformer(1, bias=True, seed=8, masked=True)
    theirs, target = run_twin(model, 1, "attn", keep, embedded)
    ours = deepexplain.explain("lrp.attn", model, [embedded, keep], target=target, default="z", epsilon=0.0,
                               product_epsilon=0.0)[0]  # fmt: skip
    assert_same_relevance(ours, theirs, 1e-5)
    bias_free = text_transformer(1, bias=False, seed=8, masked=True)
    logits = bias_free([embedded, keep]).numpy()
    cp = deepexplain.explain("lrp.cp", bias_free, [embedded, keep], target=target, default="z", epsilon=0.0)[0]
    np.testing.assert_allclose(cp.reshape(len(IDS), -1).sum(1), logits[np.arange(len(IDS)), target], rtol=1e-4)

    keras.utils.set_random_seed(0)
    ids = keras.Input((T,), dtype="int32")
    e = keras.layers.Embedding(VOCAB, D, mask_zero=True, name="embedding")(ids)
    padded = keras.Model(ids, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(
        keras.layers.MultiHeadAttention(HEADS, KEY_DIM)(e, e))))  # fmt: skip
    with pytest.raises(InvalidInputError, match="layer 'embedding' outputs a Keras mask"):
        deepexplain.explain("lrp.attn", padded, IDS, layer="embedding")


@pytest.mark.skipif(not HAS_LXT, reason="lxt is not installed (pip install --no-deps lxt==2.1)")
def test_padding_masks_against_lxt(monkeypatch):
    from lxt.explicit import functional as lf

    keep = np.ones((len(IDS), T), bool)
    keep[0, 2:] = False
    embedded = np.random.default_rng(9).normal(size=(len(IDS), T, D)).astype("float32")
    model = text_transformer(2, bias=True, seed=9, masked=True)
    monkeypatch.setattr(lf, "_stabilize", _signed_stabiliser)
    theirs, target = run_twin(model, 2, "lxt", keep, embedded)
    ours = deepexplain.explain("lrp.attn", model, [embedded, keep], target=target)[0]
    assert_same_relevance(ours, theirs)
