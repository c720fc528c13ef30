"""Shared fixtures: TF1-style graphs in explicit graphs and sessions (eager execution stays on globally)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import importlib  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1

ACTIVATIONS = {
    "Relu": tf.nn.relu,
    "Elu": tf.nn.elu,
    "Selu": tf.nn.selu,
    "Sigmoid": tf.nn.sigmoid,
    "Tanh": tf.nn.tanh,
    "Softplus": tf.nn.softplus,
    "Softsign": tf.nn.softsign,
    "LeakyRelu": lambda z: tf.nn.leaky_relu(z, alpha=0.2),
    "Relu6": tf.nn.relu6,
}


@pytest.fixture
def session():
    """A fresh graph with its session; the graph is the default graph inside the test."""
    graph = tf.Graph()
    with graph.as_default():
        sess = tf1.Session(graph=graph)
        yield sess
        sess.close()


def constant(value):
    return tf.constant(np.asarray(value, dtype=np.float32))


def simpler_model():
    """The original DeepExplain toy net: relu(relu(x1 - 1) - relu(x2))."""
    X = tf1.placeholder(tf.float32, [None, 2])
    l1 = tf.nn.relu(tf.matmul(X, constant([[1.0, 0.0], [0.0, 1.0]])) + constant([-1.0, 0.0]))
    return X, tf.nn.relu(tf.matmul(l1, constant([[1.0], [-1.0]])))


def mlp(rng, sizes, activation=tf.nn.relu, bias=True, X=None):
    """A dense network with random weights; the last layer is linear. Returns (X, T)."""
    X = tf1.placeholder(tf.float32, [None, sizes[0]]) if X is None else X
    h = X
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        h = tf.matmul(h, constant(rng.normal(0, 1 / np.sqrt(fan_in), (fan_in, fan_out))))
        if bias:
            h = h + constant(rng.normal(0, 0.3, fan_out))
        if i < len(sizes) - 2:
            h = activation(h)
    return X, h


def cnn(rng, pool="max", bias=True, activation=tf.nn.relu, size=8, channels=2, classes=3):
    """conv 3x3 SAME -> pool 2 -> conv 3x3 VALID -> flatten -> dense. Returns (X, T)."""
    X = tf1.placeholder(tf.float32, [None, size, size, channels])
    pool_fn = tf.nn.max_pool2d if pool == "max" else tf.nn.avg_pool2d
    h = tf.nn.conv2d(X, constant(rng.normal(0, 0.4, (3, 3, channels, 4))), 1, "SAME")
    h = activation(h + constant(rng.normal(0, 0.2, 4)) if bias else h)
    h = pool_fn(h, 2, 2, "VALID")
    h = tf.nn.conv2d(h, constant(rng.normal(0, 0.4, (3, 3, 4, 5))), 1, "VALID")
    h = activation(h + constant(rng.normal(0, 0.2, 5)) if bias else h)
    flat = tf.reshape(h, [-1, int(np.prod(h.shape[1:]))])
    T = tf.matmul(flat, constant(rng.normal(0, 0.3, (flat.shape[1], classes))))
    return X, T + constant(rng.normal(0, 0.2, classes)) if bias else T


def one_hot(indices, classes):
    return np.eye(classes, dtype=np.float32)[np.asarray(indices)]


def import_zennit():
    """``import zennit`` (skipping the calling module when it cannot be imported); if its torchvision import fails
    (a CUDA torchvision wheel beside the CPU torch), with a stand-in torchvision that holds the two ResNet block
    classes zennit's canonizers name, removed from ``sys.modules`` right after."""
    import torch

    try:
        return importlib.import_module("zennit")
    except Exception as error:  # noqa: BLE001 - torchvision fails with RuntimeError/OSError/ImportError
        first_error = error
    for name in [n for n in sys.modules if n.split(".")[0] in ("zennit", "torchvision")]:
        del sys.modules[name]
    stand_in = {
        name: types.ModuleType(name) for name in ("torchvision", "torchvision.models", "torchvision.models.resnet")
    }
    stand_in["torchvision.models.resnet"].Bottleneck = type("Bottleneck", (torch.nn.Module,), {})
    stand_in["torchvision.models.resnet"].BasicBlock = type("BasicBlock", (torch.nn.Module,), {})
    stand_in["torchvision"].models = stand_in["torchvision.models"]
    stand_in["torchvision.models"].resnet = stand_in["torchvision.models.resnet"]
    sys.modules.update(stand_in)
    try:
        return importlib.import_module("zennit")
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"zennit cannot be imported: {first_error!r}; {error!r}", allow_module_level=True)
    finally:
        for name in stand_in:
            sys.modules.pop(name, None)
