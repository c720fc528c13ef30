"""deepexplain.explain on a tf_keras model with eager execution disabled (run by tests/test_keras.py).

Usage: python eager_off_tf_keras.py WEIGHTS.npz DATA.npy — prints one JSON line: method -> attributions, and
whether eager execution was still off afterwards.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_eager_execution()

import tf_keras as K  # noqa: E402

import deepexplain  # noqa: E402

weights = np.load(sys.argv[1])
xs = np.load(sys.argv[2])
x = K.Input((6,))
h = K.layers.Dense(6, activation="relu")(x)
model = K.Model(x, K.layers.Dense(3)(K.layers.Dense(4, activation="sigmoid")(K.layers.Add()([x, h]))))
model.set_weights([weights[f"w{i}"] for i in range(len(weights.files))])
results = {
    method: deepexplain.explain(method, model, xs, target=1, **kwargs).tolist()
    for method, kwargs in [("grad*input", {}), ("deeplift", {}), ("intgrad", {"steps": 10}), ("occlusion", {})]
}
# batch norm and dropout: tf_keras' graph holds learning-phase switches, which the Explainer builds around
# (training=False), so that the LRP rules see the inference ops; LRP-0 equals grad*input on this ReLU net
x = K.Input((6,))
h = K.layers.Dropout(0.5)(K.layers.BatchNormalization()(K.layers.Dense(5, activation="relu")(x)))
bn_model = K.Model(x, K.layers.Dense(3)(K.layers.Activation("relu")(h)))
rng = np.random.default_rng(0)
bn_model.set_weights([rng.normal(0.5, 0.5, w.shape).astype(np.float32) ** 2 for w in bn_model.get_weights()])
for method in ("lrp.z", "grad*input"):
    results[f"batchnorm {method}"] = deepexplain.explain(method, bn_model, xs, target=1).tolist()
results["eager_after"] = tf.executing_eagerly()
print(json.dumps(results))
