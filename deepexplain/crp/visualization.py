"""Relevance and Activation Maximization: the reference samples that show what a concept is (Achtibat et al. 2023,
Sec. 4.2; zennit-crp's ``FeatureVisualization``).

For every sample ``x_n`` of a dataset and every channel ``c`` of the chosen layers, one conditional LRP pass (the
relevance seeded at the sample's label, or its predicted class) gives

- RelMax: ``sum_j R_j(x_n | y = t_n)`` ('sum') or ``max_j R_j`` ('max') over the channel's units ``j``;
- ActMax: ``sum_j a_j(x_n)`` or ``max_j a_j`` (the layer's output as Keras names it: after a fused activation);

each divided per sample by the sum of its absolute values over the layer's channels when ``abs_norm`` (zennit-crp's
default, for activations too), with the unit of the largest value (the "rf neuron"). The top ``k`` samples per
channel (and per class) are kept by a merge that never holds the dataset: a shard's rows join the running top-k,
sorted by score then by dataset index (ties are deterministic, so any sharding, engine or resumption gives the same
sets). Reference images are cropped to where the relevance of one unit (or channel) lands in the input.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from deepexplain import stream
from deepexplain.crp.concepts import STATS, ChannelConcept
from deepexplain.dataset import ExplainerTask, _check_job, _run_job
from deepexplain.errors import InvalidInputError, InvalidTypeError

MODES = ("relevance", "activation")
STATE_FILE = "features.npz"
_EMPTY = np.iinfo(np.int64).max  # the index of a slot no sample has filled yet (sorts last)


class TopK:
    """The running top-``k`` of each channel: ``(channels, k)`` scores, dataset indices and rf units per key,
    merged deterministically (score descending, then index ascending; a sample merged twice counts once)."""

    def __init__(self, k: int):
        self.k = k
        self.state: dict = {}  # key -> (scores, indices, rf), each (channels, <= k)

    def merge(self, key, scores: np.ndarray, indices: np.ndarray, rf: np.ndarray) -> None:
        """Merge candidates ``(rows, channels)`` (scores, rf) of the samples ``indices`` ``(rows,)``."""
        scores = np.asarray(scores, np.float64).T
        indices = np.broadcast_to(np.asarray(indices, np.int64)[None], scores.shape)
        self._merge(key, scores, indices, np.asarray(rf, np.int64).T)

    def _merge(self, key, scores: np.ndarray, indices: np.ndarray, rf: np.ndarray) -> None:
        """Merge ``(channels, m)`` candidates, each channel its own samples."""
        scores = np.where(np.isnan(scores), -np.inf, scores)
        if key in self.state:
            new = (scores, indices, rf)
            scores, indices, rf = (np.concatenate([a, b], axis=1) for a, b in zip(self.state[key], new, strict=True))
        scores, indices, rf = _sorted(scores, indices, rf)
        repeated = np.zeros(indices.shape, bool)
        repeated[:, 1:] = indices[:, 1:] == indices[:, :-1]  # a sample merged twice: equal (score, index) neighbours
        if repeated.any():
            scores, indices = np.where(repeated, -np.inf, scores), np.where(repeated, _EMPTY, indices)
            scores, indices, rf = _sorted(scores, indices, rf)
            width = int((~repeated).sum(axis=1).max())
            scores, indices, rf = scores[:, :width], indices[:, :width], rf[:, :width]
        self.state[key] = (scores[:, : self.k], indices[:, : self.k], rf[:, : self.k])

    def merged(self, other: TopK) -> TopK:
        """Both top-k sets as one (the same as one run over the samples of both)."""
        result = TopK(self.k)
        result.state = dict(self.state)
        for key, values in other.state.items():
            result._merge(key, *values)
        return result


def _sorted(scores, indices, rf) -> tuple:
    """Each channel's candidates by score, descending, then by dataset index: a total order, so the top-k does
    not depend on the order the samples came in."""
    order = np.lexsort((indices, -scores), axis=1)
    return tuple(np.take_along_axis(a, order, axis=1) for a in (scores, indices, rf))


class _Sink:
    """The stream's sink of :meth:`FeatureVisualization.run`: shard rows -> :class:`TopK`, saved after each shard
    (atomically, before the manifest marks the shard done) when the run has a directory."""

    def __init__(self, fv: FeatureVisualization, out: Path | None, offset: int):
        self.fv, self.out, self.offset = fv, out, offset

    def open(self, meta) -> None:
        path = self.out / STATE_FILE
        if path.is_file():
            self.fv._load(path)

    def meta(self) -> list:
        return []

    def write(self, lo: int, hi: int, arrays: list) -> None:
        self.fv._merge_rows(np.arange(lo, hi) + self.offset, arrays)
        if self.out is not None:
            self.fv._save(self.out / STATE_FILE)

    def result(self) -> list:
        return []


class _FeatureTask(ExplainerTask):
    """One shard's per-sample, per-channel scores: ``[classes, then per layer: relevance sum, max, rf, activation
    sum, max, rf]``, each ``(rows, channels)`` (classes ``(rows,)``)."""

    columns: list | None = None
    target: tuple = ("fixed", None)

    def __init__(self, model, method, method_kwargs, output, layers, abs_norm, preprocess_fn, batch_size):
        super().__init__(method, model, output, None, method_kwargs, batch_size)
        self.layers, self.abs_norm, self.preprocess_fn = list(layers), bool(abs_norm), preprocess_fn
        self._attribution = None

    def setup(self):
        if self._attribution is None:
            from deepexplain.crp.attribution import CondAttribution

            with self.local_model() as model:
                self._attribution = CondAttribution(model, self.method, output=self.output, progress=False,
                                                    **self.method_kwargs)  # fmt: skip
            self._explainer = self._attribution.explainer(sorted(self.layers))
        return self._explainer

    def __getstate__(self):
        return dict(super().__getstate__(), _attribution=None)

    def __call__(self, columns: dict) -> list:
        inputs = [columns[c] for c in self.columns]
        xs = inputs if len(inputs) > 1 else inputs[0]
        if self.preprocess_fn is not None:
            xs = self.preprocess_fn(xs)
        kind, value = self.target
        labels = np.asarray(columns[value]).reshape(-1) if kind == "column" else None
        n = len(inputs[0])
        conditions = [{"y": [int(t)]} for t in labels] if labels is not None else [{}] * n
        result = self._attribution(xs, conditions, record_layer=self.layers, exclude_parallel=False,
                                   batch_size=self.batch_size, pair=True, progress=False)  # fmt: skip
        classes = labels if labels is not None else result.prediction.reshape(n, -1).argmax(axis=1)
        out = [np.asarray(classes, np.int64)]
        for layer in self.layers:
            for values in (result.relevances[layer], result.activations[layer]):
                total, rf = ChannelConcept.reference_sampling(values, "sum", self.abs_norm)
                top, _ = ChannelConcept.reference_sampling(values, "max", self.abs_norm)
                out.extend([total, top, rf])
        return out


class FeatureVisualization:
    """RelMax and ActMax reference sets of a dataset (zennit-crp's ``FeatureVisualization``).

    Parameters
    ----------
    attribution : CondAttribution
        The conditional LRP of the model (its method and arguments are used).
    data : ndarray, list of ndarray, str, list of str, tf.data.Dataset or ray.data.Dataset
        The samples, as :func:`deepexplain.explain_dataset` takes them, *before* ``preprocess_fn`` (so that
        reference images show them as they are).
    layer_map : dict
        Layer name -> concept (:class:`ChannelConcept`), the layers whose channels get reference sets.
    targets : array of int, str or None
        Each sample's class (an array of ``N`` labels, or the name of a column of ``data``: 'y' of a ``(x, y)``
        tf.data dataset), at whose logit the relevance is seeded; None: each sample's predicted class.
    k : int
        References kept per channel (and per class); zennit-crp keeps 40.
    abs_norm : bool
        Rank by each channel's share of the sample's total absolute relevance (activation), zennit-crp's default.
    preprocess_fn : callable, optional
        ``preprocess_fn(xs) -> model inputs``, applied to each batch before the model.
    input_column : str or list of str, optional
        The column(s) of ``data`` fed to the model (as for ``explain_dataset``).
    """

    def __init__(self, attribution, data, layer_map: dict, targets=None, k: int = 40, abs_norm: bool = True,
                 preprocess_fn=None, input_column=None):  # fmt: skip
        from deepexplain.crp.attribution import CondAttribution
        from deepexplain.inputs import check_positive_int

        if not isinstance(attribution, CondAttribution):
            raise InvalidTypeError(f"attribution must be a CondAttribution; got {type(attribution).__name__}")
        if not isinstance(layer_map, dict) or not layer_map:
            raise InvalidInputError(f"layer_map must be a non-empty dict {{'<layer>': ChannelConcept()}}; got "
                                    f"{layer_map!r}")  # fmt: skip
        if attribution.model is None:
            raise InvalidTypeError("FeatureVisualization needs a CondAttribution of a Keras model")
        for name in layer_map:
            attribution.layer_shape(name)
        if preprocess_fn is not None and not callable(preprocess_fn):
            raise InvalidTypeError(f"preprocess_fn must be callable; got {type(preprocess_fn).__name__}")
        self.attribution, self.data, self.layer_map = attribution, data, dict(layer_map)
        self.layers = list(self.layer_map)
        self.targets, self.k, self.abs_norm = targets, check_positive_int(k, "k", "FeatureVisualization"), abs_norm
        self.preprocess_fn, self.input_column = preprocess_fn, input_column
        self._topk = TopK(self.k)
        self._source = None

    # ------------------------------------------------------------------------------------------------------------

    def run(self, batch_size=32, *, engine="local", num_workers=None, out=None, progress=True, shard_size=None,
            data_start=None, data_end=None) -> FeatureVisualization:  # fmt: skip
        """Accumulate the reference sets over ``data`` (samples ``data_start:data_end``; indices stay those of the
        whole dataset), streaming, locally or on Ray (:func:`deepexplain.explain_dataset`'s engine).

        Parameters
        ----------
        batch_size : int
            Rows per model call.
        engine, num_workers, progress, shard_size
            As for :func:`deepexplain.explain_dataset`.
        out : str or path-like, optional
            A directory: the reference sets are saved there after every shard (``features.npz``) with the job's
            ``manifest.json``; a second call with the same arguments resumes, other arguments are refused.
        data_start, data_end : int, optional
            A range of the samples (data read by row range: arrays, ``.npy``, images), for splitting a run; merge
            the parts with :meth:`merge`.

        Returns
        -------
        FeatureVisualization
            ``self``, with its reference sets.
        """
        attribution = self.attribution
        _check_job(attribution.model, out, engine, num_workers, batch_size, progress, shard_size,
                   "FeatureVisualization.run")  # fmt: skip
        task = _FeatureTask(attribution.model, attribution.method, attribution.method_kwargs, attribution.output,
                            self.layers, self.abs_norm, self.preprocess_fn, batch_size)  # fmt: skip
        source = self._data_source(task)
        start, targets = 0, self.targets
        if data_start is not None or data_end is not None:
            start = 0 if data_start is None else int(data_start)
            stop = source.n if data_end is None else int(data_end)
            source = source.sliced(start, stop)
            if isinstance(targets, list | tuple | np.ndarray):
                targets = np.asarray(targets)[start:stop]
        self._topk = TopK(self.k)
        sink = _Sink(self, None if out is None else Path(out), start)
        arguments = {"method": attribution.method, "method_kwargs": stream.digest(attribution.method_kwargs),
                     "output": repr(attribution.output), "layers": repr(self.layers), "k": str(self.k),
                     "abs_norm": str(self.abs_norm), "data_start": str(start),
                     "preprocess_fn": getattr(self.preprocess_fn, "__qualname__", repr(self.preprocess_fn)),
                     }  # fmt: skip
        _run_job(task, source, targets, self.input_column, out, arguments, engine, num_workers, shard_size,
                 progress, "feature visualization", {}, sink=sink)  # fmt: skip
        return self

    def merge(self, other: FeatureVisualization) -> FeatureVisualization:
        """The reference sets of two runs over parts of the same dataset (``data_start``/``data_end``), as one run
        over both parts gives them (a new object; the same layers and ``k``)."""
        if other.layers != self.layers or other.k != self.k or other.abs_norm != self.abs_norm:
            raise InvalidInputError("merge needs runs with the same layer_map, k and abs_norm")
        merged = FeatureVisualization(self.attribution, self.data, self.layer_map, self.targets, self.k,
                                      self.abs_norm, self.preprocess_fn, self.input_column)  # fmt: skip
        merged._topk = self._topk.merged(other._topk)
        return merged

    # ------------------------------------------------------------------------------------------------------------

    def reference_indices(self, layer: str, mode: str = "relevance", stat: str = "sum", target=None) -> np.ndarray:
        """``(channels, k)`` int64 dataset indices of each channel's top samples, best first (fewer columns when the
        data has fewer samples; with ``target``, among the samples of that class)."""
        return self._entry(layer, mode, stat, target)[1].copy()

    def reference_scores(self, layer: str, mode: str = "relevance", stat: str = "sum", target=None) -> np.ndarray:
        """``(channels, k)`` float64 scores of :meth:`reference_indices`."""
        return self._entry(layer, mode, stat, target)[0].copy()

    def reference_rf(self, layer: str, mode: str = "relevance", stat: str = "sum", target=None) -> np.ndarray:
        """``(channels, k)`` int64: the flat spatial index of the most relevant (active) unit of each reference."""
        return self._entry(layer, mode, stat, target)[2].copy()

    def targets_seen(self, layer: str, mode: str = "relevance", stat: str = "sum") -> list:
        """The classes with per-class reference sets."""
        self._check_key(layer, mode, stat)
        return sorted(key[3] for key in self._topk.state if key[:3] == (layer, mode, stat) and key[3] is not None)

    def compute_stats(self, concept_id: int, layer: str, mode: str = "relevance", stat: str = "sum", top_N: int = 5,
                      mean_N: int = 10, norm: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The classes for which the concept matters most: per class, the mean of its top ``mean_N`` scores; the
        ``top_N`` classes and their values, largest first (``norm``: divided by the first), as zennit-crp."""
        classes = self.targets_seen(layer, mode, stat)
        values = []
        for t in classes:
            scores = self._entry(layer, mode, stat, t)[0][concept_id, :mean_N]
            values.append(np.mean(scores[np.isfinite(scores)]) if np.isfinite(scores).any() else -np.inf)
        order = np.argsort(-np.asarray(values), kind="stable")[:top_N]
        values = np.asarray(values)[order]
        if norm and len(values) and values[0] != 0:
            values = values / values[0]
        return np.asarray(classes, np.int64)[order], values

    def get_max_reference(self, concept_ids, layer: str, mode: str = "relevance", stat: str = "sum", n_ref: int = 8,
                          rf: bool = True, heatmaps: bool = False, batch_size: int = 32, crop_th: float = 0.1,
                          blur_sigma: float | None = None) -> dict:  # fmt: skip
        """Reference images of concepts, cropped to where the concept's relevance lands in them.

        Each reference's heatmap is an LRP pass that starts at the layer with the activation of the reference's
        most relevant (active) unit (``rf=True``) or of the whole channel as the relevance, to the input
        (zennit-crp's ``get_max_reference`` with a composite); it is blurred (Gaussian, ``blur_sigma``, default
        zennit-crp's 19-pixel kernel, sigma 3.2, on images larger than 64 pixels, else none), divided by its
        largest value and thresholded at ``crop_th``; the image is cropped to the box of the pixels above it,
        the box's last row and column included (zennit-crp's slice leaves them out). An empty box gives the
        whole image.

        Returns
        -------
        dict
            Concept -> list of ``n_ref`` image crops (``(crop, heatmap crop)`` pairs with ``heatmaps=True``).
        """
        ids = [concept_ids] if np.isscalar(concept_ids) else list(concept_ids)
        indices, units = self.reference_indices(layer, mode, stat), self.reference_rf(layer, mode, stat)
        shape = self.attribution.layer_shape(layer)
        wanted = sorted({int(i) for c in ids for i in indices[c, :n_ref] if i != _EMPTY})
        samples = dict(zip(wanted, self._samples(wanted), strict=True))
        result = {}
        for c in ids:
            chosen = [(int(i), int(u)) for i, u in zip(indices[c, :n_ref], units[c, :n_ref], strict=True)
                      if i != _EMPTY]  # fmt: skip
            images = [samples[i] for i, _ in chosen]
            if not images:
                result[c] = []
                continue
            xs = np.stack(images)
            model_xs = self.preprocess_fn(xs) if self.preprocess_fn is not None else xs
            spatial = rf and len(shape) > 1
            conditions = [{layer: {c: [u]}} if spatial else {layer: [c]} for _, u in chosen]
            heat = self.attribution(model_xs, conditions, start_layer=layer, pair=True, batch_size=batch_size,
                                    progress=False).heatmap  # fmt: skip
            crops = [_crop(image, h, crop_th, blur_sigma) for image, h in zip(images, np.asarray(heat), strict=True)]
            result[c] = crops if heatmaps else [image for image, _ in crops]
        return result

    # ------------------------------------------------------------------------------------------------------------

    def _data_source(self, task):
        if self._source is None:
            explainer = task.setup()
            shapes = explainer.runner.model_specs
            self._source = stream.source_of(self.data, None if shapes is None else [s.shape for s in shapes])
        return self._source

    def _samples(self, indices: list) -> list:
        """The data's samples at ``indices`` (the model input column, before ``preprocess_fn``)."""
        from deepexplain.dataset import _input_columns

        source = self._source if self._source is not None else stream.source_of(self.data, None)
        column = _input_columns(source, self.input_column, exclude="y" if "y" in source.columns else None)[0]
        if source.random_access:
            return [source.read(i, i + 1)[column][0] for i in indices]
        found, wanted = {}, set(indices)
        for lo, hi, columns in source.iterate(0, 1024):
            for i in wanted & set(range(lo, hi)):
                found[i] = columns[column][i - lo]
            if len(found) == len(wanted):
                break
        return [found[i] for i in indices]

    def _merge_rows(self, indices: np.ndarray, arrays: list) -> None:
        classes = arrays[0]
        for position, layer in enumerate(self.layers):
            parts = arrays[1 + 6 * position : 7 + 6 * position]
            for m, mode in enumerate(MODES):
                total, top, rf = parts[3 * m : 3 * m + 3]
                for stat, scores in zip(STATS, (total, top), strict=True):
                    self._topk.merge((layer, mode, stat, None), scores, indices, rf)
                    for t in np.unique(classes):
                        rows = classes == t
                        self._topk.merge((layer, mode, stat, int(t)), scores[rows], indices[rows], rf[rows])

    def _check_key(self, layer, mode, stat):
        if layer not in self.layer_map:
            raise InvalidInputError(f"layer {layer!r} is not in the layer_map {self.layers}")
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}; got {mode!r}")
        if stat not in STATS:
            raise InvalidInputError(f"stat must be one of {STATS}; got {stat!r}")

    def _entry(self, layer, mode, stat, target):
        self._check_key(layer, mode, stat)
        key = (layer, mode, stat, None if target is None else int(target))
        if key not in self._topk.state:
            if (layer, mode, stat, None) not in self._topk.state:
                raise InvalidInputError("no reference sets yet: call run() first")
            raise InvalidInputError(f"no sample of class {target} was seen; classes seen: "
                                    f"{self.targets_seen(layer, mode, stat)}")  # fmt: skip
        return self._topk.state[key]

    def _save(self, path: Path) -> None:
        arrays = {}
        for number, (key, values) in enumerate(sorted(self._topk.state.items(), key=lambda kv: repr(kv[0]))):
            arrays[f"key{number}"] = np.array(repr(key))
            for name, value in zip(("scores", "indices", "rf"), values, strict=True):
                arrays[f"{name}{number}"] = value
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".features-", suffix=".npz")
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)

    def _load(self, path: Path) -> None:
        import ast

        with np.load(path) as stored:
            count = sum(1 for name in stored.files if name.startswith("key"))
            self._topk.state = {
                ast.literal_eval(str(stored[f"key{i}"])): tuple(stored[f"{n}{i}"] for n in ("scores", "indices", "rf"))
                for i in range(count)
            }


def _crop(image: np.ndarray, heatmap: np.ndarray, threshold: float, sigma: float | None) -> tuple:
    """``(image crop, heatmap crop)``: the box of the blurred, max-normalised heatmap's values above
    ``threshold``, inclusive of its last row and column; the whole image for an empty box or a non-image."""
    from scipy.ndimage import gaussian_filter

    heatmap = np.asarray(heatmap, np.float64)
    if heatmap.ndim != 2 or image.ndim < 2:
        return image, heatmap
    if sigma is None:
        sigma = 3.2 if min(heatmap.shape) > 64 else 0.0
    blurred = gaussian_filter(heatmap, sigma, truncate=9.0 / sigma) if sigma > 0 else heatmap
    peak = blurred.max()
    if not np.isfinite(peak) or peak <= 0:
        return image, heatmap
    rows, cols = np.nonzero(blurred / peak > threshold)
    if len(rows) == 0:
        return image, heatmap
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    return image[box], heatmap[box]


__all__ = ["MODES", "FeatureVisualization", "TopK"]
