"""A program written for the original DeepExplain (TF1), with only its TensorFlow import changed.

Run as a script by tests/test_compat_v1.py, in its own process because it disables TF2 behaviour globally. It
builds its model inside the context, uses the default graph and session, ``explain`` and ``get_explainer`` with
``ys`` and ``batch_size``, and multiple inputs, like the original's README and test-suite; it prints one JSON line.
"""

import json
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_v2_behavior()

from deepexplain.tensorflow import DeepExplain  # noqa: E402

results = {}
sess = tf.Session()
with DeepExplain(session=sess) as de:
    X = tf.placeholder("float", [None, 2])
    w1 = tf.Variable(initial_value=[[1.0, 0.0], [0.0, 1.0]], trainable=False)
    b1 = tf.Variable(initial_value=[-1.0, 0], trainable=False)
    w2 = tf.Variable(initial_value=[[1.0], [-1.0]], trainable=False)
    out = tf.nn.relu(tf.matmul(tf.nn.relu(tf.matmul(X, w1) + b1), w2))
    sess.run(tf.global_variables_initializer())
    xi = np.array([[-10, -5], [3, 1]])
    for method in ["zero", "saliency", "grad*input", "intgrad", "elrp", "deeplift", "occlusion"]:
        results[method] = de.explain(method, out, X, xi).tolist()
    results["occlusion_window"] = de.explain("occlusion", out, X, xi, window_shape=(2,)).tolist()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nan_result = de.explain("occlusion", out, X, xi, step=2)
    results["occlusion_nan_warning"] = any("nans" in str(w.message) for w in caught)
    results["occlusion_nan"] = np.isnan(nan_result).tolist()
    results["shapley"] = de.explain("shapley_sampling", out, X, xi, samples=10).tolist()
    try:
        de.explain("elrp", out, X, xi, epsilon=0)
    except AssertionError:
        results["elrp_zero_epsilon"] = "AssertionError"

    # get_explainer with ys and batch_size, as in the original README
    logits = tf.matmul(tf.nn.relu(tf.matmul(X, w1) + b1), tf.constant([[1.0, 2.0], [-1.0, 0.5]]))
    explainer = de.get_explainer("deeplift", logits, X)
    ys = np.array([[1.0, 0.0], [0.0, 1.0]])
    results["explainer_ys"] = explainer.run(xi, ys=ys, batch_size=1 + 1).tolist()

    # multiple inputs
    A = tf.placeholder("float", [None, 1])
    B = tf.placeholder("float", [None, 1])
    both = tf.nn.relu(A * 2.0 - B)
    attributions = de.explain("grad*input", both, [A, B], [np.array([[2.0]]), np.array([[1.0]])])
    results["multiple_inputs"] = [a.tolist() for a in attributions]

    try:
        de.explain("invalid", out, X, xi)
    except RuntimeError as error:
        results["invalid_method"] = str(error).startswith("Method must be in")

print(json.dumps(results))
