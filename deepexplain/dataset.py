"""Explain a whole dataset: :func:`explain_dataset` streams it through one compiled explainer (or one per Ray
worker), writes the attributions shard by shard and resumes a job that was stopped (:mod:`deepexplain.stream`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from deepexplain import stream
from deepexplain.errors import InvalidInputError

__all__ = ["CURVE_METRICS", "DatasetExplanation", "ExplainerTask", "evaluate_dataset", "explain_dataset"]

_TARGET_COLUMN = "__target__"


class DatasetExplanation:
    """The result of :func:`explain_dataset`.

    Attributes
    ----------
    attributions : ndarray or list of ndarray
        ``(N, *shape)`` as ``Explainer.run`` gives for the whole dataset (a list for several model inputs); with
        ``out=DIR`` a read-only memory map of ``DIR/attributions.npy``.
    out : Path or None
        The job's directory.
    n : int
        Samples in the dataset.
    shards_run, shards_total : int
        Shards explained by this call, and in the whole job (a resumed call runs only the unfinished ones).
    seconds : float
        Wall time of this call's explaining (after the checks and the first compilation).
    startup_seconds : float or None
        Of ``seconds``, the time until the first shard was finished (on Ray: starting the workers, each loading the
        model and compiling); None when nothing was left to run.
    """

    def __init__(self, results, out, n, shards_run, shards_total, seconds, rows_run, engine, method, startup_seconds):
        self.attributions = results[0] if len(results) == 1 else results
        self.out, self.n, self.shards_run, self.shards_total = out, n, shards_run, shards_total
        self.seconds, self.rows_run, self.engine, self.method = seconds, rows_run, engine, method
        self.startup_seconds = startup_seconds

    @property
    def throughput(self) -> float:
        """Samples explained per second by this call."""
        return self.rows_run / self.seconds if self.seconds > 0 else float("nan")

    def __repr__(self) -> str:
        where = f"out={os.fspath(self.out)!r}" if self.out is not None else "in memory"
        return (
            f"DatasetExplanation({self.method!r}, n={self.n}, {where}, engine={self.engine!r}, "
            f"shards {self.shards_run} run of {self.shards_total}, {self.throughput:.1f} samples/s)"
        )


def explain_dataset(method, /, model, data, *, target=None, out=None, engine="local", batch_size=None,
                    num_workers=None, progress=True, shard_size=None, input_column=None, output=None, layer=None,
                    **method_kwargs) -> DatasetExplanation:  # fmt: skip
    """Explain every sample of ``data`` with one method, streaming, resumable, locally or on Ray.

    Parameters
    ----------
    method : str
        A name of :data:`deepexplain.METHODS` (positional only, as for :class:`deepexplain.Explainer`).
    model : keras.Model, tf_keras.Model, callable or path
        As for :class:`deepexplain.Explainer`; ``engine='ray'`` needs a Keras model or a saved model's path (each
        worker loads its own copy).
    data : ndarray, list of ndarray, str, list of str, tf.data.Dataset or ray.data.Dataset
        The samples: an array (a list of arrays, one per model input), a ``.npy`` path (memory-mapped one shard at a
        time), a list of image paths (read into [0, 1] with scikit-image, fitted to the model's input: see
        :func:`deepexplain.files.read_input`), a ``tf.data.Dataset`` of samples or batches (elements ``x``,
        ``(x, y)`` or dicts; read in order, counted once if its length is unknown), or a Ray Dataset.
    target : optional
        As for ``Explainer.run`` (default 'max'), or per sample: an array of ``N`` class indices (or ``N`` rows of
        output weights), or the name of a column of ``data`` ('y' of a ``(x, y)`` tf.data dataset, a Ray column).
    out : str or path-like, optional
        A directory for ``attributions.npy`` (``(N, *shape)``, written shard by shard) and ``manifest.json``. A
        second call with the same arguments resumes (finished shards are not redone); other arguments are refused,
        naming what changed; nothing is ever overwritten. None: the results stay in memory.
    engine : {'local', 'ray'}
        'local': this process, one compiled explainer. 'ray': a Ray Data actor pool, one explainer compiled per
        actor, on the cluster ``ray.init()`` finds or on a local one started (and stopped) for this job. The
        results are the same.
    batch_size : int, optional
        Rows per model call, as for ``Explainer.run``.
    num_workers : int, optional
        Ray actors (default: the cluster's CPUs); each takes one CPU.
    progress : bool
        One progress bar for the whole job.
    shard_size : int, optional
        Samples per shard, the unit of checkpointing and of a Ray task (default: up to 1024, at most
        :data:`deepexplain.stream.SHARD_INPUT_BYTES` of input). A resumed job keeps its own.
    input_column : str or list of str, optional
        The column(s) of ``data`` fed to the model (default: 'x'; the one column that is not the target).
    output, layer, **method_kwargs
        As for :class:`deepexplain.Explainer`.

    Returns
    -------
    DatasetExplanation

    Notes
    -----
    The driver holds one compiled explainer, two shards (one being explained, the next being read) and the
    manifest: with ``out`` its memory does not grow with ``N``. Arguments are compared on resuming by digests: the
    method and its arguments, the target, the model's weights (so a model trained further is not mixed in) and the
    data (an array's or ``.npy`` file's bytes, image paths with sizes and times, a pipeline's length and element
    spec). ``batch_size``, ``engine`` and ``num_workers`` may change between calls; the numbers do not depend on them.
    """
    from deepexplain.tensorflow.methods import check_method, method_name

    check_method(method, method_kwargs)
    shard_size = _check_job(model, out, engine, num_workers, batch_size, progress, shard_size, "explain_dataset")
    task = _ExplainTask(method, model, output, layer, method_kwargs, batch_size)
    arguments = {"method": method_name(method), "method_kwargs": stream.digest(method_kwargs), "output": repr(output),
                 "layer": repr(layer)}  # fmt: skip
    job = _run_job(task, data, target, input_column, out, arguments, engine, num_workers, shard_size, progress,
                   method_name(method), {})  # fmt: skip
    return DatasetExplanation(job.results, None if out is None else Path(out), job.n, job.shards_run, job.shards_total,
                              job.seconds, job.rows_run, engine, method_name(method), job.startup_seconds)  # fmt: skip


def _run_job(task, data, target, input_column, out, arguments, engine, num_workers, shard_size, progress, desc,
             columns: dict, names=("attributions",), sink=None) -> SimpleNamespace:  # fmt: skip
    """The part of a dataset job after the arguments are checked: the worker task set up here (the model loaded,
    compiled), the source and its columns (``columns``: more per-row arrays), one sample run as the check of
    everything before any work, the checkpoint of ``out`` (``arguments`` plus the digests of target, model and
    data), then the shards into ``sink`` (default: :class:`stream.Rows` named ``names``, in ``out`` or memory)."""
    explainer = task.setup()
    shapes = explainer.runner.model_specs
    source = stream.source_of(data, None if shapes is None else [s.shape for s in shapes])
    if source.n == 0:
        raise InvalidInputError("data holds no samples")
    task.columns, task.target, extra = _columns_and_target(source, input_column, target, explainer)
    data_digest = source.fingerprint() if out is not None else None  # the data alone: the target is an argument
    source = source.with_columns({**extra, **columns})
    first = next(source.iterate(0, 1))[2] if not source.random_access else source.read(0, 1)
    task(first)  # the target, the inputs' shapes and the method's arguments, checked on one sample before any work

    sample_bytes = sum(int(np.prod(first[c].shape[1:])) * first[c].itemsize for c in task.columns)
    checkpoint = None
    if out is not None:
        arguments = {**arguments, "target": stream.digest(target), "input_column": repr(input_column),
                     "model": _model_digest(explainer.model), "data": data_digest,
                     **{name: stream.digest(a) for name, a in columns.items()}}  # fmt: skip
        checkpoint = stream.Checkpoint(out, arguments, source.n, shard_size)
        shard_size = checkpoint.shard_size
    if shard_size is None:
        shard_size = stream.shard_rows(sample_bytes)
    if checkpoint is not None:
        checkpoint.shard_size = shard_size
    rows = sink if sink is not None else stream.Rows(source.n, None if out is None else Path(out), names)
    done_before = checkpoint.rows_done() if checkpoint is not None else 0
    start = time.perf_counter()
    shards_run, startup = stream.run(task, source, rows, shard_size=shard_size, engine=engine, num_workers=num_workers,
                                     checkpoint=checkpoint, progress=progress, desc=desc)  # fmt: skip
    seconds = time.perf_counter() - start
    return SimpleNamespace(results=rows.result(), n=source.n, shards_run=shards_run, seconds=seconds,
                           shards_total=-(-source.n // shard_size), rows_run=source.n - done_before,
                           startup_seconds=startup)  # fmt: skip


CURVE_METRICS = ("deletion", "insertion", "pixel_flipping")
"""The metrics :func:`evaluate_dataset` runs: per-sample curves that depend on nothing but the sample (the random
ones, such as ROAD's noise and muFidelity's subsets, draw per call and would depend on the sharding)."""

_ATTRIBUTIONS_COLUMN = "__attributions__"


def evaluate_dataset(metric, model, data, attributions, *, target=None, out=None, engine="local", batch_size=None,
                     num_workers=None, progress=True, shard_size=None, input_column=None, output=None,
                     **metric_kwargs):  # fmt: skip
    """A perturbation curve of :mod:`deepexplain.metrics` over a whole dataset, streamed as
    :func:`explain_dataset` streams explanations (resumable with ``out``, locally or on Ray).

    Parameters
    ----------
    metric : {'deletion', 'insertion', 'pixel_flipping'}
        The curve (:func:`deepexplain.metrics.deletion` and the others, with their arguments as
        ``**metric_kwargs``: ``steps``, ``baseline``, ...).
    model, data, target, out, engine, batch_size, num_workers, progress, shard_size, input_column, output
        As for :func:`explain_dataset`; ``target`` is the explained output the curve scores.
    attributions : ndarray or str
        ``(N, ...)`` attributions of ``data`` (a ``.npy`` path is memory-mapped: ``explain_dataset``'s
        ``DIR/attributions.npy``), row for row.

    Returns
    -------
    deepexplain.metrics.Curve
        ``scores`` ``(N, steps + 1)``, equal to the metric on all of ``data`` at once; with ``out``, a read-only
        memory map of ``DIR/scores.npy``.
    """
    from deepexplain import metrics

    if metric not in CURVE_METRICS:
        raise InvalidInputError(f"metric must be one of {CURVE_METRICS}; got {metric!r}")
    shard_size = _check_job(model, out, engine, num_workers, batch_size, progress, shard_size, "evaluate_dataset")
    if isinstance(attributions, str | os.PathLike):
        try:
            attributions = np.load(attributions, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise InvalidInputError(f"attributions: cannot read {os.fspath(attributions)!r}: {error}") from None
    if not isinstance(attributions, np.ndarray):
        raise InvalidInputError(f"attributions must be an ndarray or a .npy path; got {type(attributions).__name__}")
    task = _CurveTask("zero", model, output, None, {}, batch_size)
    task.metric, task.metric_kwargs = metric, dict(metric_kwargs)
    arguments = {"metric": metric, "metric_kwargs": stream.digest(metric_kwargs), "output": repr(output)}
    job = _run_job(task, data, target, input_column, out, arguments, engine, num_workers, shard_size, progress,
                   metric, {_ATTRIBUTIONS_COLUMN: attributions}, names=("scores",))  # fmt: skip
    return metrics.Curve(task.fractions, job.results[0])


def _columns_and_target(source, input_column, target, explainer):
    """The input columns, the target as the task applies it (``('column', name)`` or ``('fixed', value)``) and the
    arrays that join the source as columns (a per-sample target)."""
    from deepexplain import targets

    columns = list(source.columns)
    target_column = None
    extra = {}
    if isinstance(target, str) and target not in targets.NAMES:
        if target not in columns:
            raise InvalidInputError(
                f"target {target!r} is neither one of {targets.NAMES} nor a column of data (columns: {columns})"
            )
        target_column = target
    elif isinstance(target, list | tuple | np.ndarray) and np.ndim(target) >= 1:
        target_array = np.asarray(target)
        if len(target_array) != source.n:
            raise InvalidInputError(
                f"target: an array of targets has one entry per sample of data ({source.n}); got {len(target_array)}"
            )
        extra[_TARGET_COLUMN] = target_array
        target_column = _TARGET_COLUMN
    else:
        targets.parse(target, None, None, explainer._default_target)  # a bad target fails here, before any work
    chosen = _input_columns(source, input_column, exclude=target_column)
    spec = ("column", target_column) if target_column is not None else ("fixed", target)
    return chosen, spec, extra


def _input_columns(source, input_column=None, exclude=None) -> list:
    """The columns of ``source`` fed to the model: ``input_column`` (a name or a list), else 'x' (or 'x0', 'x1', ...
    for several inputs), else the one column that is not ``exclude`` (the target's)."""
    columns = list(source.columns)
    if input_column is None:
        free = [c for c in columns if c != exclude]
        named = [c for c in free if c == "x" or (c[:1] == "x" and c[1:].isdigit())]
        chosen = named or (free if len(free) == 1 else None)
        if not chosen:
            raise InvalidInputError(
                f"data has the columns {columns}: name the model's input(s) with input_column=<column or list>"
            )
        return chosen
    chosen = [input_column] if isinstance(input_column, str) else list(input_column)
    missing = [c for c in chosen if c not in columns]
    if missing:
        raise InvalidInputError(f"input_column {missing} not among the columns of data: {columns}")
    return chosen


def _model_digest(model) -> str:
    """The model's class and every weight's values (variable by variable: no copy of the whole model)."""
    weights = getattr(model, "weights", None)
    if weights is None:  # a plain callable: its name is all there is
        return stream.digest(model)
    return stream.digest([type(model).__qualname__, [np.asarray(w) for w in weights]])


def _check_job(model, out, engine, num_workers, batch_size, progress, shard_size, name) -> int | None:
    """The arguments every dataset job takes, checked before anything is loaded; ``shard_size`` as an int or None."""
    from deepexplain.batching import check_batch_size
    from deepexplain.inputs import check_flag, check_positive_int

    stream.check_engine(engine, num_workers)
    check_batch_size(batch_size)
    check_flag(progress, "progress", name)
    if shard_size is not None:
        shard_size = check_positive_int(shard_size, "shard_size", name)
    stream.check_out(out)
    if engine == "ray" and not (isinstance(model, str | os.PathLike) or hasattr(model, "save")):
        raise InvalidInputError(
            f"engine='ray' sends the model to its workers: pass a Keras model or a saved model's path; got "
            f"{type(model).__name__}"
        )
    return shard_size


class ExplainerTask:
    """A worker's explainer of ``method`` on ``model``, set up once per worker (:mod:`deepexplain.stream`). Pickled
    for Ray with the model as the bytes of its saved file (a Keras model is saved to ``.keras`` for it), never as
    live objects; a SavedModel directory is read where it is."""

    def __init__(self, method, model, output, layer, method_kwargs, batch_size):
        self.method, self.model, self.output, self.layer = method, model, output, layer
        self.method_kwargs, self.batch_size = dict(method_kwargs), batch_size
        self._explainer = None
        self._model_file = None

    def setup(self):
        if self._explainer is None:
            from deepexplain.explainer import Explainer

            with self.local_model() as model:
                self._explainer = Explainer(self.method, model, output=self.output, layer=self.layer, progress=False,
                                            **self.method_kwargs)  # fmt: skip
        return self._explainer

    @contextlib.contextmanager
    def local_model(self):
        """The model to load: the model given, or on a Ray worker the path of its own copy of the saved model's
        file (removed once loaded)."""
        if self._model_file is None:
            yield self.model
            return
        suffix, content = self._model_file
        handle, path = tempfile.mkstemp(suffix=suffix, prefix="deepexplain-model-")
        with os.fdopen(handle, "wb") as f:
            f.write(content)
        try:
            yield path
        finally:
            os.unlink(path)

    def __getstate__(self):
        state = dict(self.__dict__, _explainer=None)
        if isinstance(self.model, str | os.PathLike) and Path(self.model).is_file():  # the file travels, not its path
            state["_model_file"] = (Path(self.model).suffix, Path(self.model).read_bytes())
            state["model"] = None
        elif not isinstance(self.model, str | os.PathLike):
            with tempfile.TemporaryDirectory(prefix="deepexplain-") as directory:
                path = Path(directory) / "model.keras"
                self.model.save(path)
                state["_model_file"] = (".keras", path.read_bytes())
            state["model"] = None
        return state


class _ExplainTask(ExplainerTask):
    """How a shard's columns become ``Explainer.run``'s arguments."""

    columns: list | None = None
    target: tuple = ("fixed", None)

    def arguments(self, columns: dict) -> tuple:
        """``(xs, target)`` of a shard's columns: the model input(s) and the target as ``Explainer.run`` takes them."""
        inputs = [columns[c] for c in self.columns]
        kind, value = self.target
        return inputs if len(inputs) > 1 else inputs[0], columns[value] if kind == "column" else value

    def __call__(self, columns: dict) -> list:
        xs, target = self.arguments(columns)
        result = self._explainer.run(xs, target=target, batch_size=self.batch_size, progress=False)
        return list(result) if isinstance(result, list) else [result]


class _CurveTask(_ExplainTask):
    """A shard's perturbation curves, scored by the worker's compiled forward pass."""

    metric: str = "deletion"
    metric_kwargs: dict | None = None
    fractions = None

    def __call__(self, columns: dict) -> list:
        from deepexplain import metrics

        xs, target = self.arguments(columns)
        curve = getattr(metrics, self.metric)(
            metrics.Scorer(self._explainer), xs,
            np.asarray(columns[_ATTRIBUTIONS_COLUMN]), target=target, batch_size=self.batch_size, progress=False,
            **(self.metric_kwargs or {}),
        )  # fmt: skip
        self.fractions = curve.fractions
        return [curve.scores]
