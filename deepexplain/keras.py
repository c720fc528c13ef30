"""Explain Keras 3, tf_keras and plain TensorFlow callables in eager mode, without a session.

A model becomes a TF1-style graph the rest of the library already explains: with eager execution on, the model is
traced once into a ``tf.function`` graph (inference mode), its variables are frozen into constants, and the graph is
imported into a private ``tf.Graph`` with its own session. Rule-based methods then use ``tf.gradients`` in that
graph, which honours the gradient overrides (``GradientTape`` would not). With eager execution off (a tf_keras model
built in a TF1 graph), the model's own graph and session are used (the model applied once more with
``training=False`` when batch norm or dropout put learning-phase switches in it). The global execution mode is
never changed.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from deepexplain.errors import InvalidInputError, InvalidTypeError
from deepexplain.selection import selection_weights
from deepexplain.tensorflow.context import DeepExplain
from deepexplain.tensorflow.methods import METHODS
from deepexplain.tensorflow.topology import as_list, learning_phase_feeds

TARGET_CHOICES = (
    "'max' (alias 'max_activation'), 'all', an int, a sequence of per-sample ints, or a callable from the output "
    "tensor to one score per sample"
)


@dataclass(frozen=True)
class GraphModel:
    """A model as tensors of a TF1 graph that a session runs.

    Attributes
    ----------
    session : tf.compat.v1.Session
    inputs : list of tf.Tensor
        The model's input placeholders.
    outputs : list of tf.Tensor
        The model's outputs.
    output_names : list of str
        A name per output (Keras output names, dict keys, or ``output_<i>``).
    layer_output : tf.Tensor or None
        The output of the layer to attribute to, when one was asked for.
    """

    session: object
    inputs: list
    outputs: list
    output_names: list
    layer_output: object = None

    @property
    def graph(self):
        return self.session.graph


# ----------------------------------------------------------------------------------------------------------------
# Models: loading, recognising, tracing
# ----------------------------------------------------------------------------------------------------------------


def load_model(path: str | os.PathLike):
    """Load a saved model: a ``.keras`` or ``.h5`` file (Keras 3, or tf_keras for legacy files) or a SavedModel
    directory (returned as the object ``tf.saved_model.load`` gives, called through its serving signature)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InvalidInputError(f"model path {path!r} does not exist")
    if os.path.isdir(path):
        return tf.saved_model.load(path)
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as keras3_error:  # legacy HDF5 written by tf_keras
        try:
            import tf_keras
        except ImportError:
            raise keras3_error from None
        return tf_keras.models.load_model(path, compile=False)


def _keras_module(model):
    """The Keras package a model belongs to (``keras`` or ``tf_keras``), or None for other callables."""
    module = type(model).__module__.split(".")[0]
    for candidate in type(model).__mro__:
        name = candidate.__module__.split(".")[0]
        if name in ("keras", "tf_keras") and candidate.__name__ in ("Model", "Functional", "Sequential", "Layer"):
            module = name
            break
    if module not in ("keras", "tf_keras"):
        return None
    return importlib.import_module(module)


def _known_input_specs(model) -> list | None:
    """Input specs from a Keras model's inputs (None for subclassed models and callables, known at first run)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return [tf.TensorSpec(tuple(t.shape), tf.as_dtype(t.dtype)) for t in inputs]


def _specs_from_data(xs: list) -> list:
    specs = []
    for x in xs:
        dtype = tf.float32 if np.issubdtype(x.dtype, np.floating) else tf.as_dtype(x.dtype)
        specs.append(tf.TensorSpec((None, *x.shape[1:]), dtype))
    return specs


def _resolve_layer(model, layer):
    if layer is None:
        return None
    keras_module = _keras_module(model)
    if keras_module is None:
        raise InvalidTypeError(f"layer= needs a Keras model; got {type(model).__name__}")
    instance = model.get_layer(layer) if isinstance(layer, str) else layer
    try:
        instance.output  # noqa: B018  (Keras raises for layers of subclassed models and shared layers)
    except (AttributeError, ValueError) as error:
        raise InvalidInputError(
            f"layer {getattr(instance, 'name', layer)!r} has no single symbolic output ({error}); layer= needs a "
            "Sequential or functional model in which the layer is used once"
        ) from None
    return instance


def _call_model(model, inputs: list, keras_module):
    argument = inputs if len(inputs) > 1 else inputs[0]
    if keras_module is not None:
        return model(argument, training=False)
    if callable(model):
        return model(argument)
    signature = model.signatures["serving_default"]
    return signature(*inputs)


def _flatten_outputs(result) -> tuple[list, list]:
    if isinstance(result, dict):
        names = sorted(result)
        return [result[k] for k in names], names
    outputs = tf.nest.flatten(result)
    return outputs, [f"output_{i}" for i in range(len(outputs))]


def trace_model(model, input_specs: list, layer=None) -> GraphModel:
    """Trace ``model`` (eager mode) into a frozen graph with its own session.

    Parameters
    ----------
    model : keras.Model, tf_keras.Model, tf.Module or callable
        Maps a batch (a tensor, or a list of tensors for several inputs) to its outputs.
    input_specs : list of tf.TensorSpec
        One per model input, batch dimension None.
    layer : Keras layer, optional
        Also expose this layer's output (for layer attributions).

    Returns
    -------
    GraphModel
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    keras_module = _keras_module(model)
    output_names = getattr(model, "output_names", None)
    if layer is not None:
        model_outputs = as_list(model.outputs)
        model = keras_module.Model(model.inputs, [*model_outputs, layer.output])

    traced_names: list = []

    def forward(*inputs):
        outputs, names = _flatten_outputs(_call_model(model, list(inputs), keras_module))
        traced_names[:] = names
        return outputs

    concrete = tf.function(forward).get_concrete_function(*input_specs)
    # keep functional control flow (While/If with function bodies): lowered v1 loops lose the Python-side context
    # that tf.gradients needs once the graph is re-imported
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
    session = tf.compat.v1.Session(graph=graph)
    inputs = [graph.get_tensor_by_name(t.name) for t in frozen.inputs]
    outputs = [graph.get_tensor_by_name(t.name) for t in frozen.outputs]
    layer_output = None
    if layer is not None:
        # the function returns each result through one Identity; the model's own ops consume the tensor before it
        layer_output = outputs.pop()
        if layer_output.op.type == "Identity":
            layer_output = layer_output.op.inputs[0]
    if not output_names or len(output_names) != len(outputs):
        output_names = traced_names[: len(outputs)]
    return GraphModel(session, inputs, outputs, list(output_names), layer_output)


def graph_mode_model(model, layer=None) -> GraphModel:
    """A tf_keras model built in a TF1 graph (eager execution off): its own tensors and Keras' session."""
    keras_module = _keras_module(model)
    if keras_module is None or not hasattr(model, "outputs") or not isinstance(model.outputs[0], tf.Tensor):
        raise InvalidTypeError(
            "With eager execution disabled, deepexplain.Explainer takes a tf_keras model built in the graph; "
            f"got {type(model).__name__}. Use the DeepExplain context with your own tensors instead."
        )
    # tf_keras keeps its TF1 session API internal; it is the session that holds the model's variables
    session = importlib.import_module(f"{keras_module.__name__}.src.backend").get_session()
    names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    outputs = list(model.outputs)
    if layer is None and learning_phase_feeds(outputs[0]):
        # batch norm/dropout sit inside learning-phase switches (If ops) whose bodies no rule reaches: apply the
        # model once more in inference mode, which builds the inference ops directly
        with session.graph.as_default():
            outputs = as_list(model(list(model.inputs) if len(model.inputs) > 1 else model.inputs[0], training=False))
    return GraphModel(session, list(model.inputs), outputs, names, layer.output if layer else None)


def strip_softmax(model):
    """A copy of a Keras model that outputs the logits instead of the softmax probabilities.

    Handles a last layer with ``activation='softmax'`` (its activation becomes linear) and a trailing
    ``Softmax``/``Activation('softmax')`` layer (dropped). The weights are shared with ``model``.

    Raises
    ------
    InvalidInputError
        When the model does not end in a softmax.
    """
    keras_module = _keras_module(model)
    if keras_module is None:
        raise InvalidTypeError(f"strip_softmax needs a Keras model; got {type(model).__name__}")
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if type(last).__name__ == "Softmax" or (
        type(last).__name__ == "Activation" and getattr(activation, "__name__", "") == "softmax"
    ):
        return keras_module.Model(model.inputs, model.layers[-2].output)
    if getattr(activation, "__name__", "") != "softmax":
        raise InvalidInputError(f"the model's last layer {last.name!r} has no softmax to strip")
    clone = keras_module.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.layers[-1].activation = keras_module.activations.linear
    return clone


def _ends_in_softmax(tensor) -> bool:
    op = tensor.op
    while op.type in ("Identity", "IdentityN") and op.inputs:
        op = op.inputs[0].op
    return op.type == "Softmax"


# ----------------------------------------------------------------------------------------------------------------
# The Explainer
# ----------------------------------------------------------------------------------------------------------------


class Explainer:
    """An attribution method compiled once for a model (eager or Keras); numpy in, numpy out.

    Parameters
    ----------
    method : str
        Any method of :data:`deepexplain.tensorflow.METHODS`, with the same names, arguments and numbers.
    model : keras.Model, tf_keras.Model, tf.Module, callable or path
        A Keras 3 or tf_keras model (Sequential, functional or subclassed), any callable that maps a batch to
        outputs, or the path of a saved model (``.keras``, ``.h5``, SavedModel directory).
    layer : str or layer, optional
        Attribute to this layer's output instead of the model input (e.g. ``'embedding'`` for per-token,
        per-dimension attributions of a text model). ``xs`` are still the model's inputs.
    output : int or str, optional
        Which output of a model with several outputs (index or name). Default: the first.
    progress : bool
        Show a progress bar on runs longer than ~2 s.
    **method_kwargs
        The method's arguments.

    Notes
    -----
    The model is traced once per input signature (known from a functional model, else from the first ``xs``) and
    once more per callable ``target``; ``run`` adds nothing after that. Tracing freezes the weights: an Explainer
    keeps explaining the weights the model had when it was traced, so build a new one after training further.
    """

    def __init__(self, method, model, layer=None, output=None, progress=True, **method_kwargs):
        if method not in METHODS:
            raise RuntimeError(f"Method must be in {list(METHODS)}")
        self.method = method
        self.model = load_model(model) if isinstance(model, str | os.PathLike) else model
        self.layer = _resolve_layer(self.model, layer)
        self.output = output
        self.progress = progress
        self.method_kwargs = method_kwargs
        self._lock = threading.Lock()
        self._graph_models: dict = {}
        self._explainers: dict = {}
        specs = _known_input_specs(self.model)
        if specs is not None:
            self._explainer_for(self._graph_model(specs), None)  # compile now: errors surface here

    def run(self, xs, target="max", ys=None, batch_size=None, progress=None):
        """Attributions for the batch ``xs``.

        Parameters
        ----------
        xs : ndarray or list of ndarray
            Model input(s), first dimension the samples.
        target : 'max', 'all', int, sequence of int, or callable
            Which output to explain: each sample's highest output ('max', or iNNvestigate's 'max_activation'), the
            sum of all outputs ('all'), one unit for all samples, one unit per sample, or a callable mapping the
            output tensor to one score per sample (e.g. the summed score of a segmentation mask; each distinct
            callable object is compiled once and kept, so reuse the same function
            object across calls rather than a new lambda each time). Ignored when ``ys`` is given.
        ys : ndarray, optional
            DeepExplain's weights of the output units, ``(N, *output.shape[1:])``.
        batch_size : int, optional
            Maximum rows per run (see :meth:`deepexplain.tensorflow.Explainer.run`).
        progress : bool, optional
            Override the explainer's progress setting.

        Returns
        -------
        ndarray or list of ndarray
            Shaped like ``xs`` (like the layer's output with ``layer``); a list for several inputs.
        """
        explainer, inputs, ys = self._prepare(xs, target, ys, batch_size)
        return explainer.run(inputs, ys, batch_size, progress)

    def completeness_error(self, xs, target="max", ys=None, batch_size=None, attributions=None):
        """Per sample ``sum(attributions) - (f(x) - mean f(reference))``; see
        :meth:`deepexplain.tensorflow.Explainer.completeness_error`."""
        explainer, inputs, ys = self._prepare(xs, target, ys, batch_size)
        return explainer.completeness_error(inputs, ys, batch_size, attributions)

    # ------------------------------------------------------------------------------------------------------------

    def _check_xs(self, xs) -> list:
        arrays = list(xs) if isinstance(xs, list | tuple) else [xs]
        try:
            return [np.asarray(a) for a in arrays]
        except (TypeError, ValueError) as error:
            raise InvalidTypeError(f"xs must be an array or a list of arrays: {error}") from None

    def _signature(self, arrays) -> tuple:
        specs = _known_input_specs(self.model) or _specs_from_data(arrays)
        if len(specs) != len(arrays):
            raise InvalidInputError(
                f"the model has {len(specs)} input(s), so xs must be a list of {len(specs)} arrays; got {len(arrays)}"
            )
        return tuple(specs)

    def _graph_model(self, specs) -> GraphModel:
        key = tuple((tuple(s.shape.as_list()), s.dtype.name) for s in specs)
        with self._lock:
            if key not in self._graph_models:
                if tf.executing_eagerly():
                    self._graph_models[key] = trace_model(self.model, list(specs), self.layer)
                else:
                    self._graph_models[key] = graph_mode_model(self.model, self.layer)
            return self._graph_models[key]

    def _output_tensor(self, graph_model: GraphModel):
        if self.output is None:
            index = 0
        elif isinstance(self.output, str):
            if self.output not in graph_model.output_names:
                raise InvalidInputError(f"output {self.output!r} is not one of {graph_model.output_names}")
            index = graph_model.output_names.index(self.output)
        else:
            index = int(self.output)
            if not 0 <= index < len(graph_model.outputs):
                raise InvalidInputError(f"output must index one of {len(graph_model.outputs)} outputs; got {index}")
        return graph_model.outputs[index]

    def _explainer_for(self, graph_model: GraphModel, callable_target):
        key = (id(graph_model), callable_target)
        with self._lock:
            if key in self._explainers:
                return self._explainers[key]
            output = self._output_tensor(graph_model)
            if _ends_in_softmax(output) and callable_target is None:
                warnings.warn(
                    "the explained output comes out of a softmax: attributions then explain probabilities, which "
                    "saturate; explain the logits with deepexplain.strip_softmax(model)",
                    UserWarning,
                    stacklevel=4,
                )
            with graph_model.graph.as_default():
                target = output if callable_target is None else callable_target(output)
                if callable_target is not None and target.shape.rank != 1:
                    raise InvalidInputError(
                        f"target callable must return one score per sample (shape (N,)); got shape {target.shape}"
                    )
            X = graph_model.layer_output if self.layer is not None else graph_model.inputs
            if self.layer is None and len(X) == 1:
                X = X[0]
            if self.layer is not None:
                _check_layer_separates(graph_model, target)
            with DeepExplain(session=graph_model.session) as context:
                explainer = context.get_explainer(self.method, target, X, progress=self.progress, **self.method_kwargs)
            self._explainers[key] = (explainer, target)
            return self._explainers[key]

    def _prepare(self, xs, target, ys, batch_size):
        """The compiled explainer, the arrays it explains and the target weights for one call."""
        arrays = self._check_xs(xs)
        graph_model = self._graph_model(self._signature(arrays))
        callable_target = target if callable(target) and ys is None else None
        explainer, target_tensor = self._explainer_for(graph_model, callable_target)
        if ys is None and callable_target is None:
            ys = _target_weights(graph_model, target_tensor, target, arrays, batch_size)
        if self.layer is not None:
            inputs = _evaluate(graph_model, graph_model.layer_output, arrays, batch_size)
        else:
            inputs = arrays if len(arrays) > 1 else arrays[0]
        return explainer, inputs, ys


def _evaluate(graph_model: GraphModel, tensor, arrays: list, batch_size=None) -> np.ndarray:
    """``tensor`` evaluated on the model inputs ``arrays``, in batches."""
    if len(arrays) != len(graph_model.inputs) or len({len(a) for a in arrays}) > 1:
        raise InvalidInputError(
            f"xs must be {len(graph_model.inputs)} array(s) with the same number of samples; got "
            f"{[a.shape for a in arrays]}"
        )
    size = batch_size or 1024
    parts = [
        graph_model.session.run(tensor, dict(zip(graph_model.inputs, [a[lo : lo + size] for a in arrays], strict=True)))
        for lo in range(0, len(arrays[0]), size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, *tensor.shape[1:]), tensor.dtype.as_numpy_dtype)


def _target_weights(graph_model: GraphModel, output, target, arrays, batch_size) -> np.ndarray:
    """One-hot weights of the output units selected by ``target`` ('max', 'all', an int, or one int per sample)."""
    n = len(arrays[0])
    if output.shape.rank != 2 or output.shape[1] is None:
        raise InvalidInputError(
            f"target= selects a unit of an output shaped (N, units); this output has shape {output.shape}: pass "
            "ys (weights shaped like the output) or a callable target"
        )
    if isinstance(target, str) and target not in ("max", "max_activation", "all"):
        raise InvalidInputError(f"target must be {TARGET_CHOICES}; got {target!r}")
    return selection_weights(
        target,
        n,
        (int(output.shape[1]),),
        output.dtype.as_numpy_dtype,
        lambda: _evaluate(graph_model, output, arrays, batch_size),
        name="target",
    )


def _check_layer_separates(graph_model: GraphModel, target) -> None:
    """Refuse layer attributions when the output also depends on the model input around the layer (a mask...)."""
    blocked = graph_model.layer_output.op
    seen, stack = set(), [target.op]
    inputs = {t.op for t in graph_model.inputs}
    while stack:
        op = stack.pop()
        if op in seen or op is blocked:
            continue
        seen.add(op)
        if op in inputs:
            raise InvalidInputError(
                f"the output depends on the model input {op.name!r} also around layer "
                f"{graph_model.layer_output.op.name!r} (a mask or a skip connection), so attributions to that layer "
                "alone would ignore part of the model"
            )
        stack.extend(t.op for t in op.inputs)


def explain(method, model, xs, target="max", ys=None, layer=None, batch_size=None, output=None, **method_kwargs):
    """One-shot attribution for a Keras or eager model: ``Explainer(method, model, ...).run(xs, ...)``.

    See :class:`Explainer` for the arguments; compile an :class:`Explainer` to explain many batches.
    """
    explainer = Explainer(method, model, layer=layer, output=output, **method_kwargs)
    return explainer.run(xs, target=target, ys=ys, batch_size=batch_size)
