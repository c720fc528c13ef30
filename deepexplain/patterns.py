"""Patterns: the signal directions PatternNet and PatternAttribution explain with, learned from data.

Kindermans et al. 2018, "Learning how to explain neural networks: PatternNet and PatternAttribution", ICLR
(arXiv 1705.05598). A layer's kernel ``w`` is a *filter*: it cancels the distractor in its input and so shows it,
which is what the gradient shows. The *signal* direction of each unit is its pattern ``a = cov[x, y] / w^T cov[x, y]``
(Eq. 7; Haufe et al. 2014), or, for a ReLU unit, the same statistics over the samples where it is active (Eq. 8).

>>> patterns = deepexplain.fit_patterns(model, x_train)                       # doctest: +SKIP
>>> a = deepexplain.Explainer('pattern.attribution', model, patterns=patterns).run(xs)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from deepexplain.errors import InvalidInputError


class Patterns(Mapping):
    """Fitted patterns: a read-only mapping from a layer's name (a Keras model) or its kernel op's name (a TF1
    graph) to an array of the layer kernel's shape.

    Parameters
    ----------
    arrays : mapping
        Name -> pattern array.
    pattern_type : str, optional
        The estimator they were fitted with ('linear', 'relu', 'relu.negative'), or None when not known.
    """

    def __init__(self, arrays: Mapping, pattern_type: str | None = None):
        self._arrays = {}
        for key, value in arrays.items():
            array = np.array(value, dtype=np.float32, copy=True)
            if not np.all(np.isfinite(array)):
                raise InvalidInputError(f"patterns[{key!r}] has {int(np.sum(~np.isfinite(array)))} non-finite values")
            array.setflags(write=False)
            self._arrays[str(key)] = array
        self.pattern_type = pattern_type

    def __getitem__(self, key) -> np.ndarray:
        return self._arrays[key]

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.shape}" for k, v in self._arrays.items())
        return f"Patterns(pattern_type={self.pattern_type!r}, {{{shapes}}})"

    def save(self, path: str | os.PathLike) -> None:
        """Write the patterns to ``path`` (an ``.npz`` file, read back by :meth:`load`)."""
        names = list(self._arrays)
        np.savez(path, names=np.array(names, dtype=str), pattern_type=np.array(self.pattern_type or "", dtype=str),
                 **{f"pattern_{i}": self._arrays[name] for i, name in enumerate(names)})  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike) -> Patterns:
        """Patterns written by :meth:`save`.

        Raises
        ------
        InvalidInputError
            When the file does not exist or was not written by :meth:`save`.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                names = [str(n) for n in data["names"]]
                arrays = {name: data[f"pattern_{i}"] for i, name in enumerate(names)}
                pattern_type = str(data["pattern_type"]) or None
        except (OSError, KeyError, ValueError) as error:
            raise InvalidInputError(f"cannot read patterns from {os.fspath(path)!r}: {error}") from None
        return cls(arrays, pattern_type)


def fit_patterns(model, data, *, pattern_type="relu", batch_size=256, progress=True, output=None) -> Patterns:
    """Fit the pattern of every dense and convolution layer of ``model`` on ``data``, in one streaming pass.

    Parameters
    ----------
    model : keras.Model, callable or path
        As for :class:`deepexplain.Explainer` (a model ending in a softmax is fitted on its logits).
    data : ndarray, list of ndarray, tf.data.Dataset or iterable of batches
        Inputs of the model (a batched dataset; one array per input for several inputs).
    pattern_type : {'relu', 'linear', 'relu.negative'}
        The signal estimator (Kindermans et al. 2018): 'linear' (Eq. 7, ``S_a``), 'relu' (the positive component
        ``a+`` of Eq. 8, over the samples where the unit's activation is > 0; what PatternNet on ReLU networks
        uses), 'relu.negative' (``a-``, activation <= 0).
    batch_size : int
        Rows per model call when ``data`` is an array; the patterns do not depend on it.
    progress : bool
        Show a progress bar.
    output : int or str, optional
        Which output of a model with several outputs.

    Returns
    -------
    Patterns
        Keyed by layer name; each pattern has its kernel's shape and ``w_o^T a_o = 1`` for every unit ``o`` that is
        active on some sample (a unit never active gets 0).

    Notes
    -----
    Each batch costs the model's forward pass and, per layer, two kernel-gradient products (``sum x m`` and
    ``sum x y m``, computed as the op's kernel gradient, so convolutions materialise no patches); what is held is
    six kernel-sized float64 sums per layer. Statistics are sums, so fits of parts of a dataset merge exactly.
    """
    from deepexplain.explainer import Explainer
    from deepexplain.tensorflow.methods.patterns import PatternStatistics

    explainer = Explainer(PatternStatistics, model, output=output, progress=progress, pattern_type=pattern_type)
    return _fitted(explainer, data, batch_size)


def _fitted(explainer, data, batch_size) -> Patterns:
    explainer.fit(data, batch_size=batch_size)
    method = explainer.method
    return Patterns(method.patterns(), method.pattern_type)


__all__ = ["Patterns", "fit_patterns"]
