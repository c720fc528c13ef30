"""Models as the explainer sees them: Keras 3, tf_keras, ``tf.Module``/``tf.function`` callables and saved models.

:class:`ModelAdapter` turns a model (or the path of a saved one) into a runner
(:mod:`deepexplain.tensorflow.runners`). With eager execution on (the default), a :class:`FunctionRunner` calls the
live model inside each explanation's ``tf.function``: nothing is frozen or copied, so a model whose weights change
is explained as it is now. With eager execution off, a tf_keras model built in a TF1 graph is explained in its own
graph and session (:class:`SessionRunner`), applied once more with ``training=False`` when batch norm or dropout put
learning-phase switches in it. The global execution mode is never changed.

``layer=`` attributes to a layer's output: the model is split there into a *head* (model inputs to the layer's
output) and a *tail* (the layer's output to the model's outputs), two Keras models that share the model's layers and
weights. The explanation is taken of the tail; the head computes what it is fed.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import tensorflow as tf

from deepexplain.adapters.layers import check_spatial, find_layer, last_spatial_layer, split, tapped
from deepexplain.errors import InvalidInputError, InvalidTypeError, closest
from deepexplain.inputs import InputSpec
from deepexplain.tensorflow.graph import as_list, learning_phase_feeds
from deepexplain.tensorflow.overrides import inline_function
from deepexplain.tensorflow.runners import FunctionRunner, SessionRunner, Traced


def load_model(path: str | os.PathLike):
    """Load a saved model: a ``.keras`` or ``.h5`` file (Keras 3, or tf_keras for legacy files) or a SavedModel
    directory (returned as the object ``tf.saved_model.load`` gives, called through its serving signature).

    Raises
    ------
    InvalidInputError
        When the path does not exist or holds no model that Keras or TensorFlow can read (naming the path and
        both readers' errors).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InvalidInputError(f"model path {path!r} does not exist")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise InvalidInputError(f"model path {path!r} is a folder without saved_model.pb, so not a SavedModel")
        try:
            return tf.saved_model.load(path)
        except Exception as error:  # noqa: BLE001 (TensorFlow raises many kinds for a damaged SavedModel)
            raise InvalidInputError(f"cannot load the SavedModel {path!r}: {error}") from None
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as keras3_error:  # noqa: BLE001 (legacy HDF5 written by tf_keras, or not a model at all)
        try:
            import tf_keras
        except ImportError:
            raise InvalidInputError(f"cannot load the model {path!r}: {keras3_error}") from None
        try:
            return tf_keras.models.load_model(path, compile=False)
        except Exception as legacy_error:  # noqa: BLE001
            raise InvalidInputError(
                f"cannot load the model {path!r}: Keras 3 says {keras3_error}; tf_keras says {legacy_error}"
            ) from None


def keras_module(model):
    """The Keras package a model belongs to (``keras`` or ``tf_keras``), or None for other callables."""
    for candidate in type(model).__mro__:
        name = candidate.__module__.split(".")[0]
        if name in ("keras", "tf_keras") and candidate.__name__ in ("Model", "Functional", "Sequential", "Layer"):
            return importlib.import_module(name)
    return None


def strip_softmax(model):
    """A copy of a Keras model that outputs the logits instead of the softmax probabilities.

    Handles a last layer with ``activation='softmax'`` (its activation becomes linear) and a trailing
    ``Softmax``/``Activation('softmax')`` layer (dropped). The first case clones the model and copies its weights;
    the explainers of the LRP family and DeepLIFT need no copy: they explain the logits of a model that ends in a
    softmax by themselves.

    Raises
    ------
    InvalidInputError
        When the model does not end in a softmax.
    """
    module = keras_module(model)
    if module is None:
        raise InvalidTypeError(f"strip_softmax needs a Keras model; got {type(model).__name__}")
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if type(last).__name__ == "Softmax" or (
        type(last).__name__ == "Activation" and getattr(activation, "__name__", "") == "softmax"
    ):
        return module.Model(model.inputs, model.layers[-2].output)
    if getattr(activation, "__name__", "") != "softmax":
        raise InvalidInputError(f"the model's last layer {last.name!r} has no softmax to strip")
    clone = module.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.layers[-1].activation = module.activations.linear
    return clone


def softmax_input(tensor: tf.Tensor) -> tf.Tensor | None:
    """The logits when ``tensor`` is a softmax's output (through identities), else None."""
    op = tensor.op
    while op.type in ("Identity", "IdentityN") and op.inputs:
        op = op.inputs[0].op
    return op.inputs[0] if op.type == "Softmax" else None


def _known_input_specs(model) -> list | None:
    """Specs of a Keras model's inputs (None for subclassed models and callables: known at the first run)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return [_keras_spec(t, f"input {i}") for i, t in enumerate(inputs)]


def _keras_spec(tensor, name: str) -> InputSpec:
    dtype = np.dtype(tf.as_dtype(tensor.dtype).as_numpy_dtype)
    shape = tf.TensorShape(tensor.shape).as_list()
    return InputSpec(getattr(tensor, "name", name) or name, dtype, tuple(shape[1:]))


def _is_saved_model_object(model) -> bool:
    """An object restored by ``tf.saved_model.load`` with a serving signature (callable or not)."""
    signatures = getattr(model, "signatures", None)
    return keras_module(model) is None and bool(signatures) and "serving_default" in signatures


def _flatten(result) -> tuple[list, list]:
    if isinstance(result, dict):
        names = sorted(result)
        return [result[k] for k in names], names
    outputs = tf.nest.flatten(result)
    return outputs, [f"output_{i}" for i in range(len(outputs))]


class ModelAdapter:
    """A model, an output and optionally a layer, as the runner that explains them.

    Parameters
    ----------
    model : keras.Model, tf_keras.Model, tf.Module, callable or path
        A Keras 3 or tf_keras model (Sequential, functional or subclassed), any callable that maps a batch (a
        tensor, or a list of tensors for several inputs) to outputs, or the path of a saved model.
    output : int or str, optional
        Which output of a model with several outputs (index or name). Default: the first.
    layer : str or layer, optional
        Attribute to this layer's output instead of the model input; with ``tap``, the layer whose output the
        explanation reads besides the model's (a name, a path through nested models, or a layer object).
    tap : str, optional
        The name of a method that reads a layer's feature maps (the CAM family): the model inputs stay the explained
        inputs, and ``layer`` (default: the last layer with feature maps) is read in the same trace.
    taps : sequence of str or layer, optional
        Layers whose outputs the explanation reads besides the model's (concept attribution,
        :mod:`deepexplain.crp`): the model inputs stay the explained inputs, and the layers' outputs are
        :attr:`Traced.taps` of the same trace, in this order. The layers must be of one (nested) model.
    """

    def __init__(self, model, output=None, layer=None, tap=None, taps=()):
        self.model = load_model(model) if isinstance(model, str | os.PathLike) else model
        if not callable(self.model) and not hasattr(self.model, "signatures"):
            raise InvalidTypeError(
                "model must be a Keras model, a tf.Module or callable, or the path of a saved model; got "
                f"{type(self.model).__name__}"
            )
        self.keras = keras_module(self.model)
        self.output_names = self._output_names()
        self.output_index = self._output_index(output)
        self.model_specs = _known_input_specs(self.model)
        self.layer = self.layer_path = self._tapped = self._split = None
        self.taps_layer = tap is not None
        if tap is not None or layer is not None:
            self.layer_path = self._layer_path(layer, tap)
        self.tap_paths = [self._layer_path(t) for t in taps]
        if self.tap_paths and self.layer_path is not None:
            raise InvalidInputError("taps= and layer= cannot be combined")
        if self.layer_path is not None:
            self.layer = self.layer_path.layer
            if tf.executing_eagerly() and self.taps_layer:
                self._tapped = tapped(self.keras, [self.layer_path])
            elif tf.executing_eagerly():
                self._split = split(self.keras, self.layer_path)
        elif self.tap_paths and tf.executing_eagerly():
            self._tapped = tapped(self.keras, self.tap_paths)

    # ------------------------------------------------------------------------------------------------------------

    def runner(self, explain_logits: bool = False, jit_compile: bool = False):
        """The runner of this model: a :class:`FunctionRunner` in eager mode, else a :class:`SessionRunner`.

        ``explain_logits``: when the chosen output is a softmax's output, explain its input (the logits) instead.
        """
        if not tf.executing_eagerly():
            if jit_compile:
                raise InvalidInputError("jit_compile=True needs eager execution (it compiles a tf.function)")
            return self._session_runner(explain_logits)
        input_specs, head = self.model_specs, None
        if self._split is not None:
            input_specs = [_keras_spec(self._split[2], self.layer.name)]

            def head(*inputs):
                return self._split[0](list(inputs))

        def trace(inputs):
            taps = ()
            if self._tapped is not None:
                taps, outputs = self._tapped(list(inputs))
            elif self._split is not None:
                outputs = self._split[1](list(inputs))
            else:
                outputs, _ = _flatten(self._call(self.model, inputs))
            output = self._select(outputs)
            logits = softmax_input(output) if explain_logits else None
            output = output if logits is None else logits
            if self.taps_layer:
                return Traced(list(inputs), output, taps[0])
            return Traced(list(inputs), output, taps=tuple(taps))

        return FunctionRunner(trace, input_specs, head, self.model_specs, jit_compile, self.output_names or ())

    def weight_names(self) -> dict:
        """Variable handle ``ref()`` -> the name of the layer whose kernel it is (``'conv2d'``; ``'lstm/kernel'``
        and ``'lstm/recurrent_kernel'`` for a layer with several kernels): how patterns are keyed. Empty for a model
        that is not a Keras model."""
        if self.keras is None:
            return {}
        names = {}
        for layer in self.model._flatten_layers(include_self=False, recursive=True):
            kernels = [w for w in layer.weights if w.name.split("/")[-1].split(":")[0].endswith("kernel")]
            for weight in kernels:
                short = weight.name.split("/")[-1].split(":")[0]
                variable = weight if isinstance(weight, tf.Variable) else getattr(weight, "value", None)  # Keras 3
                handle = getattr(variable, "handle", None)
                if handle is not None:
                    names[handle.ref()] = layer.name if len(kernels) == 1 else f"{layer.name}/{short}"
        return names

    # ------------------------------------------------------------------------------------------------------------

    def _call(self, model, inputs: list):
        """The model applied to symbolic ``inputs`` inside the trace. A ``tf.function`` or a SavedModel's serving
        signature is inlined (its ops join the trace), so that rules reach them; variables stay live."""
        argument = inputs if len(inputs) > 1 else inputs[0]
        if keras_module(model) is not None:
            return model(argument, training=False)
        if isinstance(model, tf.types.experimental.GenericFunction):
            concrete = model.get_concrete_function(*[tf.TensorSpec(t.shape, t.dtype) for t in inputs])
            return self._inlined(concrete, inputs)
        if not callable(model) or _is_saved_model_object(model):
            return self._inlined(model.signatures["serving_default"], inputs)
        return model(argument)

    @staticmethod
    def _inlined(concrete, inputs: list):
        structure = concrete.structured_outputs
        flat = inline_function(concrete, inputs)
        return tf.nest.pack_sequence_as(structure, flat)

    def _select(self, outputs: list) -> tf.Tensor:
        index = self.output_index or 0
        if isinstance(self.output_index, str):  # a name known only once traced (dict outputs of a callable)
            names = self.output_names or [f"output_{i}" for i in range(len(outputs))]
            index = names.index(self.output_index)
        if not 0 <= index < len(outputs):
            raise InvalidInputError(f"output must index one of {len(outputs)} outputs; got {index}")
        return outputs[index]

    def _output_names(self) -> list | None:
        names = getattr(self.model, "output_names", None)
        if self.keras is not None and names:
            return list(names)
        return None

    def _output_index(self, output):
        if output is None:
            return None
        if isinstance(output, str):
            if self.output_names is not None:
                if output not in self.output_names:
                    raise InvalidInputError(
                        f"output {output!r} is not one of {self.output_names}{closest(output, self.output_names)}"
                    )
                return self.output_names.index(output)
            return output
        if isinstance(output, bool) or not isinstance(output, int | np.integer):
            raise InvalidTypeError(f"output must be an int (an index) or a str (a name); got {output!r}")
        count = len(self.output_names) if self.output_names is not None else None
        if output < 0 or (count is not None and output >= count):
            raise InvalidInputError(f"output must index one of {count} outputs; got {output}")
        return int(output)

    def _layer_path(self, layer, tap: str | None = None):
        """The layer ``layer=`` names, resolved through nested models: the one attributions are taken at, or (with
        ``tap``, the name of a CAM method) the one whose feature maps the method reads, by default the last layer
        with feature maps."""
        if self.keras is None or not hasattr(self.model, "layers"):
            if tap is None:
                raise InvalidTypeError(f"layer= needs a Keras model; got {type(self.model).__name__}")
            raise InvalidTypeError(
                f"{tap} reads a layer's feature maps, so it needs a Keras model; got {type(self.model).__name__} "
                "(in the DeepExplain context, pass layer=<the feature-map tensor>)"
            )
        if tap is not None:
            path = last_spatial_layer(self.model) if layer is None else find_layer(self.model, layer)
            check_spatial(path, tap)
        else:
            path = find_layer(self.model, layer)
            if path.output_shape is None:
                raise InvalidInputError(
                    f"layer {path.name!r} has no single symbolic output; layer= needs a Sequential or functional model "
                    "in which the layer is used once"
                )
        if not tf.executing_eagerly() and len(path.models) > 1:
            raise InvalidInputError(
                f"layer {path.name!r} is inside a nested model, which a TF1 graph (eager execution off) does not "
                "expose; pass a layer of the model itself"
            )
        return path

    def _session_runner(self, explain_logits: bool) -> SessionRunner:
        """A tf_keras model built in a TF1 graph: its own tensors and Keras' session."""
        model = self.model
        if self.keras is None or not hasattr(model, "outputs") or not isinstance(model.outputs[0], tf.Tensor):
            raise InvalidTypeError(
                "With eager execution disabled, deepexplain.Explainer takes a tf_keras model built in the graph; "
                f"got {type(model).__name__}. Use the DeepExplain context with your own tensors instead."
            )
        # tf_keras keeps its TF1 session API internal; it is the session that holds the model's variables
        session = importlib.import_module(f"{self.keras.__name__}.src.backend").get_session()
        outputs = list(model.outputs)
        if self.layer is None and learning_phase_feeds(outputs[0]):  # (a CAM's layer is of the model as built)
            # batch norm/dropout sit inside learning-phase switches (If ops) whose bodies no rule reaches: apply the
            # model once more in inference mode, which builds the inference ops directly
            with session.graph.as_default():
                outputs = as_list(
                    model(list(model.inputs) if len(model.inputs) > 1 else model.inputs[0], training=False)
                )
        output = self._select(outputs)
        logits = softmax_input(output) if explain_logits else None
        output = output if logits is None else logits
        if self.taps_layer:
            return SessionRunner(session, output, list(model.inputs), layer=self.layer.output)
        if self.tap_paths:
            taps = [p.layer.output for p in self.tap_paths]
            return SessionRunner(session, output, list(model.inputs), taps=taps)
        if self.layer is None:
            return SessionRunner(session, output, list(model.inputs))
        _check_layer_separates(self.layer.output, output, model.inputs)
        return SessionRunner(session, output, [self.layer.output], model_inputs=list(model.inputs))


def _check_layer_separates(layer_output, target, inputs) -> None:
    """Refuse layer attributions when the output also depends on the model input around the layer (a mask...)."""
    blocked = layer_output.op
    seen, stack = set(), [target.op]
    input_ops = {t.op for t in inputs}
    while stack:
        op = stack.pop()
        if op in seen or op is blocked:
            continue
        seen.add(op)
        if op in input_ops:
            raise InvalidInputError(
                f"the output depends on the model input {op.name!r} also around layer {blocked.name!r} (a mask or "
                "a skip connection), so attributions to that layer alone would ignore part of the model"
            )
        stack.extend(t.op for t in op.inputs)
