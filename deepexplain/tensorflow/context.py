"""The DeepExplain context: the original DeepExplain API on a TF1-style graph and session."""

from __future__ import annotations

import tensorflow as tf

from deepexplain.errors import InvalidInputError, InvalidTypeError
from deepexplain.explainer import Explainer
from deepexplain.tensorflow.methods import check_method, declaration_of
from deepexplain.tensorflow.runners import SessionRunner


class DeepExplain:
    """Context in which attribution methods are available for a graph and its session.

    Parameters
    ----------
    graph : tf.Graph, optional
        The graph holding the model (default: the session's graph).
    session : tf.compat.v1.Session, optional
        The session that holds the model's variables (default: the default session).

    Raises
    ------
    RuntimeError
        When no session is given and there is no default session.

    Examples
    --------
    >>> with DeepExplain(session=sess) as de:                       # doctest: +SKIP
    ...     attributions = de.explain('deeplift', logits, X, xs, ys=ys)
    ...     explainer = de.get_explainer('intgrad', logits, X, steps=50)
    ...     for batch in batches:
    ...         explainer.run(batch, ys)

    Notes
    -----
    Unlike the original DeepExplain, the model need not be (re)built inside the context: the rules are applied to
    the ops between ``X`` and ``T`` while an explainer is compiled, and only then. Gradients requested elsewhere
    (training steps, other ``tf.gradients`` calls) are TensorFlow's own, inside the context and out.
    """

    def __init__(self, graph=None, session=None):
        session = session if session is not None else tf.compat.v1.get_default_session()
        if session is None:
            raise RuntimeError("DeepExplain: could not retrieve a session. Use DeepExplain(session=your_session).")
        self.session = session
        self.graph = graph if graph is not None else session.graph
        self._graph_contexts: list = []  # one per `with`, so that the context can be entered again inside itself

    @property
    def context_on(self) -> bool:
        """Whether a ``with`` block of this context is open."""
        return bool(self._graph_contexts)

    def __enter__(self):
        context = self.graph.as_default()
        context.__enter__()
        self._graph_contexts.append(context)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self._graph_contexts.pop().__exit__(exc_type, exc_value, traceback)
        return False

    def get_explainer(self, method, /, T, X, **kwargs) -> Explainer:
        """Compile ``method`` once for target ``T`` and input(s) ``X``; run it with ``explainer.run(xs, ys)``.

        Parameters
        ----------
        method : str
            One of :data:`deepexplain.tensorflow.methods.METHODS` ('saliency', 'grad*input', 'intgrad', 'elrp',
            'deeplift', 'smoothgrad', 'expected_gradients', 'deepshap', 'occlusion', 'shapley_sampling', ...).
        T : tf.Tensor
            Target tensor (e.g. the logits), first dimension the batch.
        X : tf.Tensor or list of tf.Tensor
            Input tensor(s) to attribute to.
        **kwargs
            The method's arguments (see the README's table), and ``progress`` (bool, default True).

        Returns
        -------
        deepexplain.Explainer
            ``run(xs, ys, batch_size)`` as in the original DeepExplain (``ys`` default: all units of ``T`` summed).

        Raises
        ------
        RuntimeError
            Outside the context ('Explain can be called only within a DeepExplain context.') or for an unknown
            method ('Method must be in [...]', also a ValueError).
        TypeError
            When ``T`` or ``X`` is not a TensorFlow tensor (also a RuntimeError, as in DeepExplain).
        ValueError
            For a method argument that does not fit (also a RuntimeError), or when ``T`` does not depend on ``X``.
        """
        if not self.context_on:
            raise RuntimeError("Explain can be called only within a DeepExplain context.")
        progress = kwargs.pop("progress", True)
        return Explainer(method, self._runner(method, T, X, kwargs), progress=progress, **kwargs)

    def explain(self, method, /, T, X, xs, ys=None, batch_size=None, neuron_selection=None, **kwargs):
        """Attributions of ``T`` (weighted by ``ys``) with respect to ``X`` for the batch ``xs``.

        Equivalent to ``get_explainer(method, T, X, **kwargs).run(xs, ys, batch_size, neuron_selection=...)``;
        compile an explainer with :meth:`get_explainer` to explain many batches. ``neuron_selection``
        ('max_activation', 'all', an int or one int per sample) picks the explained output instead of ``ys``, as
        in iNNvestigate.

        Returns
        -------
        ndarray or list of ndarray
            Shaped like ``xs`` (a list when ``X`` is a list).
        """
        explainer = self.get_explainer(method, T, X, **kwargs)
        return explainer.run(xs, batch_size=batch_size, ys=ys, neuron_selection=neuron_selection)

    def cond_attribution(self, T, X, method="lrp.epsilon_plus", progress=True, **kwargs):
        """Concept Relevance Propagation of ``T`` with respect to ``X`` (:class:`deepexplain.crp.CondAttribution`):
        conditions name layers by tensor name (``'conv1/Relu:0'``) or op name (``'conv1/Relu'``).

        Examples
        --------
        >>> ca = de.cond_attribution(logits, X)                                  # doctest: +SKIP
        >>> ca(xs, [{'y': [3], 'conv1/Relu': [c]} for c in range(8)]).heatmap    # doctest: +SKIP
        """
        from deepexplain.crp import CondAttribution

        if not self.context_on:
            raise RuntimeError("Explain can be called only within a DeepExplain context.")
        check_method(method, kwargs)
        self._check_tensors(T, X)
        return CondAttribution.of_graph(self.session, T, X, method, progress=progress, **kwargs)

    def fit_patterns(self, T, X, data, pattern_type="relu", batch_size=256, progress=True):
        """Fit the patterns of every kernel op between ``X`` and ``T`` on ``data`` (one streaming pass),
        for the methods 'pattern.net', 'pattern.attribution' and 'pattern.net.guided'.

        See :func:`deepexplain.fit_patterns` for the arguments and the estimator.

        Returns
        -------
        deepexplain.Patterns
            Keyed by the name of each kernel op (``'dense/MatMul'``).
        """
        from deepexplain.patterns import _fitted
        from deepexplain.tensorflow.methods.patterns import PatternStatistics

        kwargs = {"pattern_type": pattern_type}
        runner = self._runner(PatternStatistics, T, X, kwargs)
        return _fitted(Explainer(PatternStatistics, runner, progress=progress, **kwargs), data, batch_size)

    def signal_quality(self, T, X, data, patterns=None, batch_size=256, per_unit=False, progress=True) -> dict:
        """How well a signal estimator separates signal from distractor at each kernel op (dense, convolutions of
        any kind, einsum) between ``X`` and ``T`` (Kindermans et al. 2018, Eq. 3), rated on ``data``.

        See :func:`deepexplain.signal_quality` for the arguments and the measure; ``patterns`` are those of
        :meth:`fit_patterns` (keyed by kernel op name), None rates the gradient's estimator.

        Returns
        -------
        dict
            Kernel op name -> rho (an array per unit with ``per_unit``).
        """
        from deepexplain.patterns import Patterns, _quality
        from deepexplain.tensorflow.methods.patterns import QualityStatistics

        if patterns is not None and not isinstance(patterns, Patterns):  # before any op is added
            raise InvalidInputError(f"patterns must be a deepexplain.Patterns or None; got {type(patterns).__name__}")
        runner = self._runner(QualityStatistics, T, X, {})
        return _quality(Explainer(QualityStatistics, runner, progress=progress), data, patterns, batch_size, per_unit)

    def _runner(self, method, T, X, kwargs) -> SessionRunner:
        """The runner of ``T`` and ``X`` in this context's session, after every argument was checked."""
        if not self.context_on:
            raise RuntimeError("Explain can be called only within a DeepExplain context.")
        if getattr(self.session, "_closed", False):
            raise InvalidInputError("the session of this DeepExplain context is closed; open the context on a live one")
        layer = kwargs.pop("layer", None) if getattr(declaration_of(method), "uses_layer", False) else None
        check_method(method, kwargs)
        self._check_tensors(T, X)
        if layer is not None:
            self._check_layer(layer)
        inputs = list(X) if isinstance(X, list | tuple) else [X]
        return SessionRunner(self.session, T, inputs, multiple_inputs=isinstance(X, list | tuple), layer=layer)

    def _check_layer(self, layer):
        """The feature maps a CAM method reads: a tensor of this graph, (N, H, W, C) or (N, T, C)."""
        if not isinstance(layer, tf.Tensor):
            raise InvalidTypeError(
                f"layer must be the Tensorflow tensor of the feature maps; got {type(layer).__name__}"
            )
        if layer.graph is not self.graph:
            raise InvalidInputError(f"layer {layer.name} belongs to another graph than this DeepExplain context's")
        if layer.shape.rank is None or layer.shape.rank < 3:
            raise InvalidInputError(
                f"layer must be feature maps (N, H, W, C) or (N, T, C); {layer.name} has shape {layer.shape}"
            )

    def _check_tensors(self, T, X):
        if isinstance(X, list | tuple):
            if not X or not all(isinstance(x, tf.Tensor) for x in X):
                raise InvalidTypeError("If a list, X must contain only Tensorflow Tensor objects")
        elif not isinstance(X, tf.Tensor):
            raise InvalidTypeError(f"X must be a Tensorflow Tensor object or a list of them; got {type(X).__name__}")
        if not isinstance(T, tf.Tensor):
            raise InvalidTypeError(f"T must be a Tensorflow Tensor object; got {type(T).__name__}")
        for tensor in [T, *(X if isinstance(X, list | tuple) else [X])]:
            if tensor.graph is not self.graph:
                raise InvalidInputError(f"{tensor.name} belongs to another graph than this DeepExplain context's")
            if tensor.shape.rank is None or (tensor is not T and tensor.shape.rank < 1):
                raise InvalidInputError(
                    f"{tensor.name} must have a known rank with a batch dimension; got shape {tensor.shape}"
                )
