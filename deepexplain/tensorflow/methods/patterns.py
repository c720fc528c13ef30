"""PatternNet, PatternAttribution and the pattern estimator they need (Kindermans et al. 2018, ICLR).

- :class:`PatternStatistics` fits the patterns: one streaming pass over data, sums in float64 (see
  :mod:`deepexplain.tensorflow.rules.patterns` for what is summed and why no patch is materialised).
- :class:`PatternNet` back-projects the estimated signal: the gradient with every kernel ``W`` replaced by its pattern
  ``A``; :class:`PatternAttribution` uses ``W * A`` (Deep Taylor with the root point ``x - A y``);
  :class:`GuidedPatternNet` also keeps only the positive signal at ReLUs. The forward pass's ReLU and max-pool
  switches are kept; batch norm, residual additions and average pooling pass the signal as their gradient does.
"""

from __future__ import annotations

import numpy as np

from deepexplain.errors import InvalidInputError, InvalidTypeError
from deepexplain.tensorflow.methods.base import GradientMethod
from deepexplain.tensorflow.rules import guided as guided_rules
from deepexplain.tensorflow.rules import patterns as pattern_rules


def _safe(values: np.ndarray) -> np.ndarray:
    """Denominators with 0 replaced by 1 (a unit never active has mean 0, not NaN; upstream's safe divide)."""
    return values + (values == 0)


def _accumulate(sums: dict, keys: list, values: list, count: int, keep_first: bool = False) -> None:
    """Add one batch's statistics (``count`` arrays per key, in order) to ``sums`` in float64, in place; with
    ``keep_first`` the first array of each key is not a sum but the same at every batch (a kernel) and is kept as it
    comes."""
    for i, key in enumerate(keys):
        batch = values[i * count : (i + 1) * count]
        total = sums.get(key)
        if total is None:
            sums[key] = [np.array(v, np.float64) for v in batch]  # copies: the sums are added to in place
            continue
        for j, value in enumerate(batch):
            if keep_first and j == 0:
                total[0] = np.array(value, np.float64)
            else:
                np.add(total[j], value, out=total[j])


class PatternStatistics(GradientMethod):
    """Fits the patterns of every kernel layer (used by :func:`deepexplain.fit_patterns`).

    For each layer and unit ``o`` (Kindermans et al. 2018, Eq. 7 for 'linear', Eq. 8 for the two-component
    estimator; the mixed form both reference implementations compute):

        A_o = (E+[x y] - E+[x] E[y]) / (E+[y^2] - E+[y] E[y])

    ``E+`` is the mean over the samples where the unit is active ('relu': the activation after it is > 0;
    'relu.negative': <= 0; 'linear': all samples), ``E`` over all samples, ``y = w_o^T x`` the layer's output
    without bias. The denominator is ``w_o^T (E+[x y] - E+[x] E[y])``, so ``w_o^T A_o = 1``; it is computed from the
    sums of ``y``, which needs no copy of the kernel. Sums are accumulated in float64 over every row of the data, so
    the patterns do not depend on the batch size (nn-patterns drops the last partial batch; we do not); a live
    model's batches are added up inside its traced function (:class:`~deepexplain.tensorflow.rules.patterns.GraphSums`,
    read at :meth:`fit_end`), a TF1 graph's are fetched and added up in numpy (:meth:`fit_batch`).
    """

    name = "fit_patterns"
    needs_fit = True
    needs_gradient = False
    explains_logits = True  # the logit layer's mask is z + b > 0 also when the model ends in a softmax

    def __init__(self, sample_shapes, pattern_type="relu"):
        super().__init__(sample_shapes)
        if pattern_type not in pattern_rules.PATTERN_TYPES:
            raise InvalidInputError(
                f"pattern_type must be one of {list(pattern_rules.PATTERN_TYPES)}; got {pattern_type!r}"
            )
        self.pattern_type = pattern_type
        self._layers: list = []
        self._finish: list = []  # per layer: (its number of tensors, their values -> its STATISTICS)
        self._sums: dict = {}
        self._graph_sums: list = []  # per trace summing in the graph: (GraphSums, layer keys, its finish list)

    def fit_tensors(self, path, valid) -> list:
        layers, others = pattern_rules.kernel_layers(path)
        pattern_rules.check_layers(layers, others, path, "fit_patterns")
        batch = pattern_rules.Batch(valid, path)
        sums = [pattern_rules.statistics(k, path, batch, self.pattern_type) for k in layers]
        self._layers = [(k.key, k.layout) for k in layers]
        self._finish = [(len(s.tensors), s.finish) for s in sums]
        tensors = [t for s in sums for t in s.tensors]
        if not pattern_rules.GraphSums.supports(tensors):
            return tensors  # a TF1 graph (or XLA): each batch's sums are fetched and added up by fit_batch
        graph_sums = pattern_rules.GraphSums(tensors)
        self._graph_sums.append((graph_sums, [key for key, _ in self._layers], self._finish))
        return graph_sums.add(tensors)

    def fit_batch(self, values: list) -> None:
        if not values:  # added up in the graph (GraphSums), read at fit_end
            for graph_sums, _, _ in self._graph_sums:
                graph_sums.state = "added"
            return
        self._add(self._finish, [key for key, _ in self._layers], values)

    def _add(self, finishes: list, keys: list, values: list) -> None:
        statistics, start = [], 0
        for count, finish in finishes:
            statistics.extend(finish(values[start : start + count]))
            start += count
        _accumulate(self._sums, keys, statistics, len(pattern_rules.STATISTICS))

    def _take_graph_sums(self) -> None:
        """Add the totals the traced functions hold to the sums (``finish`` is linear: applied once to the float64
        totals it gives the sum of its values on each batch, the per-position sums taken once)."""
        for graph_sums, keys, finishes in self._graph_sums:
            values = graph_sums.take()
            if values is not None:
                self._add(finishes, keys, values)

    def fit_end(self) -> None:
        self._take_graph_sums()
        super().fit_end()

    def reset(self) -> None:
        """Forget the sums so far (a new fit starts)."""
        self._sums = {}
        for graph_sums, _, _ in self._graph_sums:
            graph_sums.arm()
        self.fitted = False

    def release(self) -> None:
        """Forget the sums so far and hold nothing kernel-sized until :meth:`reset` (a kept fitter between fits)."""
        self._sums = {}
        for graph_sums, _, _ in self._graph_sums:
            graph_sums.release()
        self.fitted = False

    def take_statistics(self) -> list:
        """The sums so far, flattened in layer order (float64), and start anew: one worker's part of a fit."""
        self._take_graph_sums()
        flat = [a for key, _ in self._layers for a in self._sums[key]]
        self._sums = {}
        return flat

    def set_statistics(self, flat: list) -> None:
        """Fit on the sums ``flat`` (:meth:`take_statistics`'s layout, added over the parts of a dataset)."""
        k = len(pattern_rules.STATISTICS)
        self._sums = {key: [np.array(a, np.float64) for a in flat[i * k : (i + 1) * k]]
                      for i, (key, _) in enumerate(self._layers)}  # fmt: skip
        self.fit_end()

    def patterns(self) -> dict:
        """Layer key -> pattern (float32, the kernel's shape)."""
        result = {}
        for key, layout in self._layers:
            sum_xm, sum_xym, count, sum_ym, sum_yym, sum_y, rows = self._sums[key]
            mean_y = sum_y / _safe(rows)
            covariance = (sum_xym - sum_xm * mean_y) / _safe(count)
            normaliser = (sum_yym - sum_ym * mean_y) / _safe(count)  # w^T covariance
            result[key] = layout.to_model(covariance / _safe(normaliser)).astype(np.float32)
        return result


class PatternNet(GradientMethod):
    """PatternNet (Kindermans et al. 2018, Sec. 4): the signal ``y A`` of the explained output projected back to
    the input, layer by layer, with each kernel replaced by its pattern and the ReLU/max-pool switches of the
    forward pass kept. The backward pass starts from the explained output's value (the logit).

    Parameters
    ----------
    patterns : deepexplain.Patterns or mapping
        Layer name -> pattern, from :func:`deepexplain.fit_patterns` (required).
    project_bottlenecks : bool
        Divide the signal per sample by its largest magnitude after every convolution layer (iNNvestigate 1.x's
        default, on for parity with it; off by default because it makes the result defined up to scale only and
        breaks PatternAttribution's conservation). Dense layers' 1-D signals are not projected, as there.
    """

    seeds_relevance = True
    explains_logits = True
    uses_weights = False

    def __init__(self, sample_shapes, patterns=None, project_bottlenecks=False):
        super().__init__(sample_shapes)
        from deepexplain.patterns import Patterns

        if patterns is None:
            raise InvalidInputError(
                f"{self._name()} needs patterns=: fit them first with patterns = deepexplain.fit_patterns(model, data) "
                "(or de.fit_patterns(T, X, data) in a DeepExplain context)"
            )
        if not isinstance(patterns, Patterns):
            if not hasattr(patterns, "keys"):
                raise InvalidTypeError(
                    f"patterns must be a deepexplain.Patterns (or a mapping of layer name to array); got "
                    f"{type(patterns).__name__}"
                )
            patterns = Patterns(patterns)
        if not isinstance(project_bottlenecks, bool | np.bool_):
            raise InvalidTypeError(f"project_bottlenecks must be True or False; got {project_bottlenecks!r}")
        self.patterns = patterns
        self.project_bottlenecks = bool(project_bottlenecks)

    def _name(self) -> str:
        return {PatternNet: "pattern.net", PatternAttribution: "pattern.attribution"}.get(
            type(self), "pattern.net.guided"
        )

    def op_rules(self, path) -> dict:
        layers, others = pattern_rules.kernel_layers(path)
        pattern_rules.check_patterns(layers, others, self.patterns, path, self._name())
        rules = {}
        for kernel in layers:
            pattern = kernel.layout.to_op(self.patterns[kernel.key])
            tensor = pattern_rules.constant(pattern, kernel.layer.weights.dtype)
            rules[kernel.op] = pattern_rules.pattern_rule(self._kernel(tensor), self.project_bottlenecks)
        return rules

    def _kernel(self, pattern):
        if self.uses_weights:
            return lambda layer: layer.weights * pattern
        return lambda layer: pattern


class PatternAttribution(PatternNet):
    """PatternAttribution (Kindermans et al. 2018, Sec. 4): Deep Taylor decomposition with the root point
    ``x0 = x - A y`` of each layer, i.e. the backward pass with each kernel ``W`` replaced by ``W * A``
    (elementwise). Because ``w_o^T a_o = 1``, a linear layer's relevance sums to the output it starts from. There is
    no final multiplication by the input. Arguments as :class:`PatternNet`."""

    uses_weights = True


class GuidedPatternNet(PatternNet):
    """Guided PatternNet (nn-patterns' ``patternnet.guided``): PatternNet whose signal passes ReLUs only where it is
    positive, as in guided backpropagation. Arguments as :class:`PatternNet`."""

    rules = guided_rules.GUIDED_RULES
    gradient_rule_types = frozenset({"MaxPool", "MaxPoolV2"})


class QualityStatistics(GradientMethod):
    """The moments :func:`deepexplain.signal_quality` rates signal estimators with (one streaming pass, float64
    sums), for every kernel layer of the path (``rules.patterns.quality_rows`` says how each op's samples are
    read)."""

    name = "signal_quality"
    needs_fit = True
    needs_gradient = False
    explains_logits = True

    def __init__(self, sample_shapes):
        super().__init__(sample_shapes)
        self.layers: list = []
        self.layouts: dict = {}  # key -> KernelLayout: where the op's kernel lies in the model's
        self.perms: dict = {}  # key -> the op kernel's axes in the order of its (groups, inputs, units) matrices
        self.sums: dict = {}

    def fit_tensors(self, path, valid) -> list:
        layers, others = pattern_rules.kernel_layers(path)
        pattern_rules.check_layers(layers, others, path, "signal_quality")
        self.layers = [k.key for k in layers]
        self.layouts = {k.key: k.layout for k in layers}
        self.perms = {k.key: pattern_rules.quality_rows(k, path).perm for k in layers}
        return [t for k in layers for t in pattern_rules.quality_statistics(k, path, valid)]

    def fit_batch(self, values: list) -> None:
        _accumulate(self.sums, self.layers, values, len(pattern_rules.QUALITY_STATISTICS), keep_first=True)

    def matrices(self, key: str, kernel: np.ndarray) -> np.ndarray:
        """``kernel`` (the model's layout of layer ``key``) as the ``(groups, inputs, units)`` matrices the sums
        were taken with."""
        groups, _, units = self.sums[key][0].shape
        return self.layouts[key].to_op(kernel).transpose(self.perms[key]).reshape(groups, -1, units)
