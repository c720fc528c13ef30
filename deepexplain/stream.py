"""The streaming engine: a dataset as shards of rows, each mapped by a task that is compiled once per worker, the
results merged in the driver and finished shards checkpointed, in-process or on Ray (``DESIGN.md``: "a streaming pass
over a dataset").

- A :class:`Source` is a dataset as named columns of rows: arrays, a ``.npy`` file (memory-mapped, one shard at a
  time), image files, a ``tf.data.Dataset`` or a Ray Dataset. Arrays, ``.npy`` files and images are read by row
  range (so a Ray worker reads its own shard); the other two are read in order.
- A task is ``setup()`` (once per worker: load the model, compile) and ``task(columns) -> list of arrays`` (one per
  output, first dimension the rows given). Arrays aligned with the rows (per-sample targets) join the source as
  columns (:meth:`Source.with_columns`), so a task sees everything about its rows in one place.
- :class:`Rows` holds the results, in memory or as ``.npy`` files in a directory, written shard by shard with
  positioned writes (no memory map: the driver's memory does not grow with the dataset); :class:`Sums` merges
  statistics by addition in the order of the shards (pattern fitting), the same numbers from any engine.
- :class:`Checkpoint` is ``DIR/manifest.json``: the arguments' digests and the finished row ranges, replaced
  atomically after a shard's rows are on disk, so a job killed at any point resumes without redoing a finished shard
  or writing a row twice.
- :func:`run` maps the shards that are not finished, locally (the next shard read while one is explained) or on a
  Ray Data actor pool (``map_batches``; each actor sets the task up once; a worker that dies is restarted by Ray and
  its shard retried; results go to their rows whatever order they arrive in, so both engines write the same file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from deepexplain.errors import InvalidInputError, InvalidTypeError

__all__ = [
    "ArraySource",
    "Checkpoint",
    "ImageSource",
    "NpySource",
    "RayDatasetSource",
    "Rows",
    "Source",
    "Sums",
    "TFDataSource",
    "digest",
    "run",
    "source_of",
]

ENGINES = ("local", "ray")
MANIFEST = "manifest.json"
SHARD_INPUT_BYTES = 64 * 2**20
"""A shard (the unit of checkpointing, and of work per Ray task) holds at most 1024 samples, this many input bytes."""


def shard_rows(sample_bytes: int) -> int:
    """The default shard size for samples of ``sample_bytes`` bytes of input."""
    return int(max(1, min(1024, SHARD_INPUT_BYTES // max(1, sample_bytes))))


def digest(value) -> str:
    """A short, stable digest of ``value`` (arrays by dtype, shape and bytes; containers element by element) for
    telling whether a resumed job has the arguments of the first one."""
    h = hashlib.blake2b(digest_size=12)

    def feed(v):
        if isinstance(v, np.ndarray) or type(v).__module__.startswith(("tensorflow", "keras")) and hasattr(v, "numpy"):
            array = np.ascontiguousarray(np.asarray(v))
            h.update(f"array{array.dtype}{array.shape}".encode())
            h.update(memoryview(array).cast("B") if array.size else b"")
        elif isinstance(v, dict):
            h.update(b"dict")
            for key in sorted(v, key=repr):
                feed(key)
                feed(v[key])
        elif isinstance(v, list | tuple):
            h.update(f"seq{len(v)}".encode())
            for item in v:
                feed(item)
        elif callable(v):
            h.update(f"callable{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', type(v).__name__)}".encode())
        else:
            h.update(repr(v).encode())

    feed(value)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# Sources


class Source:
    """A dataset as columns of rows. ``n`` rows; ``columns`` their names; random-access sources implement ``read``,
    sequential ones ``iterate``."""

    random_access = True
    n: int
    columns: tuple

    def read(self, lo: int, hi: int) -> dict:
        """Rows ``lo:hi`` of every column."""
        raise NotImplementedError

    def iterate(self, start: int, size: int) -> Iterator[tuple[int, int, dict]]:
        """``(lo, hi, columns)`` for consecutive shards of ``size`` rows from row ``start``."""
        for lo in range(start, self.n, size):
            hi = min(self.n, lo + size)
            yield lo, hi, self.read(lo, hi)

    def fingerprint(self) -> str:
        raise NotImplementedError

    def for_ray(self, shard_size: int, start: int) -> Source:
        """A copy to send to Ray workers, for shards of ``shard_size`` rows from row ``start`` (arrays go to the
        object store once)."""
        return self

    def with_columns(self, arrays: dict) -> Source:
        """This source with more columns, arrays of ``n`` rows."""
        for name, a in arrays.items():
            if len(a) != self.n:
                raise InvalidInputError(f"{name.strip('_')}: expected one entry per sample ({self.n}); got {len(a)}")
        return _Joined(self, ArraySource(arrays)) if arrays else self

    def sliced(self, start: int, stop: int) -> Source:
        """Rows ``start:stop`` of this source, as rows ``0:stop - start`` (random-access sources only)."""
        if not self.random_access:
            raise InvalidInputError("data_start/data_end need data read by row range (arrays, .npy files, images)")
        if not 0 <= start < stop <= self.n:
            raise InvalidInputError(f"data_start and data_end must satisfy 0 <= start < end <= {self.n}; got "
                                    f"{start} and {stop}")  # fmt: skip
        return _Sliced(self, start, stop)


class _Sliced(Source):
    """Rows ``start:stop`` of a random-access source."""

    def __init__(self, base: Source, start: int, stop: int):
        self.base, self.start, self.n, self.columns = base, start, stop - start, base.columns

    def read(self, lo, hi):
        return self.base.read(self.start + lo, self.start + hi)

    def fingerprint(self):
        return digest([self.base.fingerprint(), self.start, self.n])

    def for_ray(self, shard_size, start):
        return _Sliced(self.base.for_ray(shard_size, 0), self.start, self.start + self.n)


class _Joined(Source):
    """Two sources side by side, row for row."""

    def __init__(self, base: Source, extra: Source):
        self.base, self.extra = base, extra
        self.n, self.columns, self.random_access = base.n, base.columns + extra.columns, base.random_access

    def read(self, lo, hi):
        return {**self.base.read(lo, hi), **self.extra.read(lo, hi)}

    def iterate(self, start, size):
        for lo, hi, columns in self.base.iterate(start, size):
            yield lo, hi, {**columns, **self.extra.read(lo, hi)}

    def fingerprint(self):
        return digest([self.base.fingerprint(), self.extra.fingerprint()])

    def for_ray(self, shard_size, start):
        base = self.base.for_ray(shard_size, start)
        if base.random_access:
            return _Joined(base, self.extra.for_ray(shard_size, start))
        import ray

        extra = [ray.data.from_numpy(a).rename_columns({"data": name}) for name, a in self.extra._columns.items()]
        # materialised (in order) before the actor pool starts: a zip still to run would wait for CPUs the actors hold
        with _ordered_and_quiet(base.dataset):
            return RayDatasetSource(base.dataset.zip(*extra).materialize())


class ArraySource(Source):
    """In-memory arrays, one per column, equally many rows."""

    def __init__(self, columns: dict):
        self._columns = dict(columns)
        self.columns = tuple(self._columns)
        lengths = {name: len(a) for name, a in self._columns.items()}
        if len(set(lengths.values())) > 1:
            raise InvalidInputError(f"data: the arrays must have equally many rows; got {lengths}")
        self.n = next(iter(lengths.values()))

    def read(self, lo, hi):
        return {name: a[lo:hi] for name, a in self._columns.items()}

    def fingerprint(self):
        return digest(self._columns)

    def for_ray(self, shard_size, start):
        return _RayArraySource(self)


class _RayArraySource(Source):
    """An :class:`ArraySource` whose arrays live in Ray's object store (a worker maps them without copying)."""

    def __init__(self, source: ArraySource):
        import ray

        self.n, self.columns = source.n, source.columns
        self._refs = [ray.put(source._columns)]  # in a list: Ray resolves only top-level refs by itself

    def read(self, lo, hi):
        import ray

        return {name: a[lo:hi] for name, a in ray.get(self._refs[0]).items()}


class NpySource(Source):
    """A ``.npy`` file, memory-mapped for each read only (pages read are released after the shard)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            array = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise InvalidInputError(f"data: cannot read the array file {self.path!r}: {error}") from None
        if array.ndim < 1:
            raise InvalidInputError(f"data: {self.path!r} holds a scalar, not samples")
        self.n, self.columns = len(array), ("x",)
        self._key = (array.shape, str(array.dtype), os.path.getsize(self.path), os.stat(self.path).st_mtime_ns)

    def read(self, lo, hi):
        array = np.load(self.path, mmap_mode="r")
        rows = np.array(array[lo:hi])
        del array
        return {"x": rows}

    def fingerprint(self):
        # the file's bytes, read in blocks (a memory map would keep them all resident)
        h = hashlib.blake2b(digest_size=12)
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        return h.hexdigest()


class ImageSource(Source):
    """Image files, read with scikit-image into [0, 1] and fitted to the model's input shape
    (:func:`deepexplain.files.read_input`)."""

    def __init__(self, paths: Sequence, sample_shape: tuple):
        from deepexplain.files import IMAGE_SUFFIXES

        self.paths = [os.fspath(p) for p in paths]
        for i, path in enumerate(self.paths):
            if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
                raise InvalidInputError(
                    f"data[{i}] {path!r} is not an image ({', '.join(IMAGE_SUFFIXES)}); pass arrays as an array or "
                    "a .npy file"
                )
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise InvalidInputError(f"data[{i}]: cannot read the image {path!r} (no such file, or not readable)")
        self.sample_shape = tuple(sample_shape)
        self.n, self.columns = len(self.paths), ("x",)

    def read(self, lo, hi):
        from deepexplain.files import read_input

        images = []
        for i in range(lo, hi):
            try:
                images.append(read_input(self.paths[i], self.sample_shape))
            except Exception as error:  # noqa: BLE001 (a decoder's own error, named with the file)
                raise InvalidInputError(f"data[{i}]: cannot read the image {self.paths[i]!r}: {error}") from None
            if images[-1].shape != images[0].shape:
                raise InvalidInputError(
                    f"data[{i}] {self.paths[i]!r} gives an input of shape {images[-1].shape}, but "
                    f"data[{lo}] {self.paths[lo]!r} gives {images[0].shape}: images of a model with free height or "
                    "width must have one size (or give the model a fixed input size)"
                )
        return {"x": np.stack(images)}

    def fingerprint(self):
        return digest([(p, os.path.getsize(p), os.stat(p).st_mtime_ns) for p in self.paths] + [self.sample_shape])


class TFDataSource(Source):
    """A ``tf.data.Dataset`` of samples or of batches, read in order; an element is an array (column ``x``), a tuple
    ``(x, y)`` (columns ``x``, ``y``; ``(x, y, w)`` adds ``w``) or a dict of columns."""

    random_access = False

    def __init__(self, dataset, sample_rank: int | None):
        import tensorflow as tf

        spec = dataset.element_spec
        first = tf.nest.flatten(spec)[0]
        rank = first.shape.rank
        batched = first.shape[0] is None if sample_rank is None or rank is None else rank == sample_rank + 1
        self._dataset = dataset.unbatch() if batched else dataset
        self.columns = tuple(self._names(self._dataset.element_spec))
        cardinality = int(self._dataset.cardinality())
        if cardinality == int(tf.data.INFINITE_CARDINALITY):
            raise InvalidInputError("data: the tf.data.Dataset is infinite; take() the part to explain")
        if cardinality < 0:  # unknown (a filter, or unbatch of a dataset of unknown batch sizes): count it once
            cardinality = int(self._dataset.reduce(np.int64(0), lambda count, _: count + 1))
        self.n = cardinality

    @staticmethod
    def _names(spec) -> list:
        if isinstance(spec, dict):
            return list(spec)
        if isinstance(spec, tuple | list):
            if len(spec) > 3:
                raise InvalidInputError(
                    f"data: a tf.data element of {len(spec)} parts; expected x, (x, y), (x, y, w) or a dict"
                )
            return ["x", "y", "w"][: len(spec)]
        return ["x"]

    def iterate(self, start, size):
        lo = start
        for element in self._dataset.skip(start).batch(size).as_numpy_iterator():
            if isinstance(element, dict):
                columns = dict(element)
            elif isinstance(element, tuple | list):
                columns = dict(zip(self.columns, element, strict=True))
            else:
                columns = {"x": element}
            hi = lo + len(next(iter(columns.values())))
            yield lo, hi, columns
            lo = hi

    def fingerprint(self):
        return digest([self.n, repr(self._dataset.element_spec)])

    def for_ray(self, shard_size, start):
        # a tf.data pipeline cannot be sent to other processes: the driver reads it into Ray's object store, a
        # shard per object, and the workers take their shard from there
        return _RayShardsSource(self, shard_size, start)


class _RayShardsSource(Source):
    """An ordered source put into Ray's object store one shard per object, read back by shard."""

    def __init__(self, source: Source, shard_size: int, start: int):
        import ray

        self.n, self.columns, self._size, self._start = source.n, source.columns, shard_size, start
        self._refs = [ray.put(columns) for _, _, columns in source.iterate(start, shard_size)]

    def read(self, lo, hi):
        import ray

        shard, offset = divmod(lo - self._start, self._size)
        columns = ray.get(self._refs[shard])
        if offset or hi - lo != len(next(iter(columns.values()))):
            raise AssertionError(f"rows {lo}:{hi} are not a shard of {self._size} rows from {self._start}")
        return columns


class RayDatasetSource(Source):
    """A Ray Dataset (``ray.data``), read in order; its columns as they are named."""

    random_access = False

    def __init__(self, dataset):
        self.dataset = dataset
        self.columns = tuple(dataset.columns())
        self.n = int(dataset.count())

    def _rest(self, start: int):
        return self.dataset if start == 0 else self.dataset.split_at_indices([start])[1]

    def iterate(self, start, size):
        lo = start
        with _ordered_and_quiet(self.dataset):
            for batch in self._rest(start).iter_batches(batch_size=size, batch_format="numpy"):
                hi = lo + len(next(iter(batch.values())))
                yield lo, hi, dict(batch)
                lo = hi


@contextlib.contextmanager
def _ordered_and_quiet(dataset):
    """Ray Data options for this job, on the dataset's own context (which its derived datasets share) and put back
    afterwards: rows in order (they are placed by their order), no progress bars or start-up lines of Ray's (the
    job's one bar counts every worker's rows)."""
    context = dataset.context
    names = [("execution_options", "preserve_order", True), (None, "enable_progress_bars", False),
             (None, "print_on_execution_start", False)]  # fmt: skip
    saved = []
    for owner, name, value in names:
        holder = getattr(context, owner) if owner else context
        if hasattr(holder, name):
            saved.append((holder, name, getattr(holder, name)))
            setattr(holder, name, value)
    try:
        yield dataset
    finally:
        for holder, name, value in saved:
            setattr(holder, name, value)

    def fingerprint(self):
        return digest([self.n, str(self.dataset.schema())])


def source_of(data, sample_shapes: list | None) -> Source:
    """The :class:`Source` of ``data``: an ndarray (or one per model input), a ``.npy`` path, a list of image paths,
    a ``tf.data.Dataset`` or a Ray Dataset. ``sample_shapes``: the model's input shapes (no batch dimension), None
    where unknown; they fit images and tell samples from batches in a ``tf.data.Dataset``."""
    shape = sample_shapes[0] if sample_shapes else None
    if isinstance(data, Source):
        return data
    if isinstance(data, np.ndarray):
        return ArraySource({"x": data})
    if isinstance(data, str | os.PathLike):
        if Path(data).is_dir():
            raise InvalidInputError(f"data: {os.fspath(data)!r} is a directory; pass a .npy file or a list of images")
        if Path(data).suffix.lower() != ".npy":
            raise InvalidInputError(f"data: a path must name a .npy file; got {os.fspath(data)!r}")
        return NpySource(data)
    if isinstance(data, list | tuple) and data and all(isinstance(p, str | os.PathLike) for p in data):
        if shape is None:
            raise InvalidInputError("data: reading images needs a model whose input shape is known (H, W, C)")
        return ImageSource(data, shape)
    if isinstance(data, list | tuple) and data and all(isinstance(a, np.ndarray) for a in data):
        if sample_shapes is not None and len(data) != len(sample_shapes):
            shapes = [a.shape for a in data]
            raise InvalidInputError(
                f"data: a list of arrays is one array per model input; the model has {len(sample_shapes)} input(s) "
                f"but data has {len(data)} arrays of shapes {shapes} (stack samples into one array)"
            )
        return ArraySource({f"x{i}": a for i, a in enumerate(data)} if len(data) > 1 else {"x": data[0]})
    if hasattr(data, "element_spec") and hasattr(data, "as_numpy_iterator"):
        return TFDataSource(data, None if shape is None else len(shape))
    if type(data).__module__.startswith("ray.data"):
        return RayDatasetSource(data)
    raise InvalidTypeError(
        "data must be an ndarray (or a list of them, one per model input), a .npy path, a list of image paths, a "
        f"tf.data.Dataset or a Ray Dataset; got {type(data).__name__}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Results and checkpoints


class Rows:
    """Row-aligned results ``(n, *shape)``, one array per output: in memory, or as ``.npy`` files in ``out``
    (created at the first shard, when the shapes are known; an existing file of the right shape is continued)."""

    def __init__(self, n: int, out: Path | None = None, names: Sequence[str] = ("attributions",)):
        self.n, self.out, self.names = n, out, tuple(names)
        self._arrays = None
        self._files = None  # (path, offset of the data, bytes per row) per output

    def paths(self) -> list[Path]:
        return [self.out / f"{name}.npy" for name in self.names]

    def open(self, meta: list) -> None:
        """Use the files described by ``meta`` (``[(shape, dtype)]`` per output) of a job being resumed."""
        self._create([np.empty((0, *shape), dtype) for shape, dtype in meta], keep=True)

    def meta(self) -> list:
        """``[(row shape, dtype name)]`` per output, for the manifest."""
        if self._files is not None:
            return [(list(shape), dtype) for _, _, _, shape, dtype in self._files]
        return [(list(a.shape[1:]), a.dtype.name) for a in self._arrays]

    def _create(self, first: list, keep: bool = False) -> None:
        if len(first) != len(self.names):
            self.names = ("attributions",) if len(first) == 1 else tuple(f"attributions_{i}" for i in range(len(first)))
        if self.out is None:
            self._arrays = [np.empty((self.n, *a.shape[1:]), a.dtype) for a in first]
            return
        self._files = []
        self.out.mkdir(parents=True, exist_ok=True)
        for path, a in zip(self.paths(), first, strict=True):
            shape, dtype = tuple(a.shape[1:]), np.dtype(a.dtype)
            if not keep:
                with open(path, "wb") as f:  # a header, then the file grown (sparse) to its full length
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                              "shape": (self.n, *shape)}  # fmt: skip
                    np.lib.format.write_array_header_2_0(f, header)
                    f.truncate(f.tell() + self.n * int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                header = read_header(f)  # (shape, fortran order, dtype)
                offset = f.tell()
            if tuple(header[0]) != (self.n, *shape) or np.dtype(header[2]) != dtype:
                raise InvalidInputError(f"out: {path} holds an array of another shape or dtype than this job's")
            self._files.append((path, offset, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, shape, dtype.name))

    def write(self, lo: int, hi: int, arrays: list) -> None:
        """Rows ``lo:hi`` of every output; on disk they are flushed before this returns."""
        if self._arrays is None and self._files is None:
            self._create(arrays)
        for i, a in enumerate(arrays):
            expected = self._arrays[i].shape[1:] if self._files is None else self._files[i][3]
            if tuple(a.shape) != (hi - lo, *expected):
                raise InvalidInputError(
                    f"rows {lo}:{hi} gave results of shape {a.shape}; the first shard gave ({hi - lo}, *{expected}): "
                    "a dataset must give results of one shape (inputs of one shape)"
                )
            if self._files is None:
                self._arrays[i][lo:hi] = a
                continue
            path, offset, row_bytes, _, dtype = self._files[i]
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, np.ascontiguousarray(a, dtype).tobytes(), offset + lo * row_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)

    def result(self) -> list:
        """The results: arrays in memory, or read-only memory maps of the files."""
        if self.out is None:
            return self._arrays or []
        return [np.load(path, mmap_mode="r") for path in self.paths()]


class Sums:
    """Statistics merged by addition (float64), one list of arrays per shard, added in the order of the shards
    whatever order they arrive in: the same numbers from any engine and any number of workers."""

    def __init__(self):
        self._parts: dict = {}

    def write(self, lo: int, hi: int, arrays: list) -> None:
        self._parts[lo] = [np.asarray(a, np.float64) for a in arrays]

    def result(self) -> list:
        total = None
        for lo in sorted(self._parts):
            part = self._parts[lo]
            total = part if total is None else [t + p for t, p in zip(total, part, strict=True)]
        return total or []


class Checkpoint:
    """``DIR/manifest.json`` of a job: the digest of each argument, the shard size, the shapes of the results and
    the finished row ranges. Constructing it checks, before anything is written, that ``out`` can hold this job: a
    directory (made if missing) with no manifest, or with one of the same arguments."""

    def __init__(self, out, arguments: dict, n: int, shard_size: int | None):
        check_out(out)
        self.out = Path(out)
        self.path = self.out / MANIFEST
        self.arguments, self.n = dict(arguments), int(n)
        self.done: list = []
        self.results: list | None = None
        self.shard_size = shard_size
        manifest = self._read()
        if manifest is None:
            clashes = [p.name for p in self.out.glob("attributions*.npy")] if self.out.is_dir() else []
            if clashes:
                raise InvalidInputError(
                    f"out: {os.fspath(out)!r} holds {', '.join(clashes)} but no {MANIFEST}: not a job of "
                    "explain_dataset; choose an empty directory (nothing was overwritten)"
                )
            return
        changed = [k for k in sorted(set(manifest["arguments"]) | set(self.arguments))
                   if manifest["arguments"].get(k) != self.arguments.get(k)]  # fmt: skip
        if manifest["n"] != self.n:
            changed.insert(0, "data (number of samples)")
        if changed:
            raise InvalidInputError(
                f"out: {os.fspath(out)!r} holds a job with other arguments ({', '.join(changed)} changed); resume it "
                "with the same arguments, or choose another directory (nothing was overwritten)"
            )
        if shard_size is not None and shard_size != manifest["shard_size"]:
            raise InvalidInputError(
                f"shard_size={shard_size} differs from the {manifest['shard_size']} of the job in {os.fspath(out)!r}; "
                "leave it out to resume"
            )
        self.shard_size, self.done, self.results = manifest["shard_size"], manifest["done"], manifest["results"]

    def _read(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            manifest = json.loads(self.path.read_text())
            _ = manifest["arguments"], manifest["n"], manifest["shard_size"], manifest["done"], manifest["results"]
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidInputError(f"out: {self.path} is not a manifest of explain_dataset ({error})") from None
        return manifest

    def mark(self, lo: int, hi: int, results: list) -> None:
        """Record rows ``lo:hi`` as finished (their results already written): the manifest is replaced atomically."""
        self.done.append([int(lo), int(hi)])
        self.results = results
        manifest = {"arguments": self.arguments, "n": self.n, "shard_size": self.shard_size,
                    "results": results, "done": sorted(self.done)}  # fmt: skip
        self.out.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.out, prefix=".manifest.", suffix=".json")
        with os.fdopen(handle, "w") as f:
            json.dump(manifest, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)

    def rows_done(self) -> int:
        return sum(hi - lo for lo, hi in self.done)


# ---------------------------------------------------------------------------------------------------------------------
# The engines


def run(task, source: Source, rows: Rows, *, shard_size: int, engine: str = "local", num_workers: int | None = None,
        checkpoint: Checkpoint | None = None, progress: bool = True, desc: str = "explain") -> tuple:  # fmt: skip
    """Map the unfinished shards of ``source`` through ``task`` into ``rows``; returns the number of shards run and
    the seconds until the first of them was finished (the workers' set-up, on Ray).

    ``task.setup()`` runs once per worker (in the driver for the local engine); ``task(columns)`` returns one array
    per output with as many rows as the columns. After a shard's rows are written, ``checkpoint`` records it.
    """
    done = {tuple(r) for r in checkpoint.done} if checkpoint is not None else set()
    if checkpoint is not None and checkpoint.results is not None:
        rows.open([(tuple(shape), dtype) for shape, dtype in checkpoint.results])
    finished = sum(hi - lo for lo, hi in done)
    start = 0 if source.random_access else finished  # an ordered source's finished rows are a prefix (written in order)
    bar = tqdm(total=source.n, initial=finished, disable=not progress, desc=desc,
               unit="sample", delay=1)  # fmt: skip
    count, began, first = 0, time.perf_counter(), None

    def finish(lo, hi, results):
        nonlocal count, first
        rows.write(lo, hi, results)
        if checkpoint is not None:
            checkpoint.mark(lo, hi, rows.meta())
        count += 1
        first = first if first is not None else time.perf_counter() - began
        bar.update(hi - lo)

    try:
        if engine == "ray":
            _run_ray(task, source, shard_size, num_workers, done, start, finish)
        else:
            _run_local(task, source, shard_size, done, start, finish)
    finally:
        bar.close()
    return count, first


def _todo(source: Source, shard_size: int, done: set, start: int = 0) -> list:
    return [(lo, min(source.n, lo + shard_size)) for lo in range(start, source.n, shard_size)
            if (lo, min(source.n, lo + shard_size)) not in done]  # fmt: skip


def _run_local(task, source, shard_size, done, start, finish) -> None:
    task.setup()
    if source.random_access:
        shards = iter((lo, hi, lambda lo=lo, hi=hi: source.read(lo, hi)) for lo, hi in _todo(source, shard_size, done))
    else:
        shards = iter((lo, hi, lambda c=c: c) for lo, hi, c in source.iterate(start, shard_size))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepexplain-read") as reader:
        # the next shard is read (files decoded, pages faulted in) while this one is explained
        pending = _next_read(shards, reader)
        while pending is not None:
            lo, hi, future = pending
            columns = future.result()
            pending = _next_read(shards, reader)
            finish(lo, hi, task(columns))


def _next_read(shards, reader):
    item = next(shards, None)
    if item is None:
        return None
    lo, hi, read = item
    return lo, hi, reader.submit(read)


def _ray():
    try:
        import ray
    except ImportError:
        raise InvalidInputError("engine='ray' needs Ray: pip install 'deepexplain[ray]'") from None
    return ray


def _run_ray(task, source, shard_size, num_workers, done, start, finish) -> None:
    ray = _ray()
    from ray.data import ActorPoolStrategy

    started = not ray.is_initialized()
    if started:  # the cluster ray.init() finds, else a local one for this job
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        workers = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = source.for_ray(shard_size, start)
        payload = [ray.put((task, remote))]
        compute = ActorPoolStrategy(size=workers)
        if remote.random_access:
            todo = _todo(source, shard_size, done, start)
            if not todo:
                return
            shards = ray.data.from_items([{"lo": lo, "hi": hi} for lo, hi in todo], override_num_blocks=len(todo))
            with _ordered_and_quiet(shards):
                mapped = shards.map_batches(_RayShards, batch_size=1, compute=compute, num_cpus=1,
                                            fn_constructor_kwargs={"payload": payload})  # fmt: skip
                for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
                    outputs = sorted(k for k in batch if k.startswith("out"))  # per shard (1, rows, ...)
                    for j in range(len(batch["lo"])):
                        finish(int(batch["lo"][j]), int(batch["hi"][j]), [np.asarray(batch[k][j]) for k in outputs])
            return
        with _ordered_and_quiet(remote.dataset):  # rows in order, cut into the shards the local engine makes
            mapped = remote._rest(start).map_batches(_RayRows, batch_size=shard_size, compute=compute, num_cpus=1,
                                                     fn_constructor_kwargs={"payload": payload})  # fmt: skip
            lo = start
            for batch in mapped.iter_batches(batch_size=shard_size, batch_format="numpy"):
                outputs = sorted(k for k in batch if k.startswith("out"))
                hi = lo + len(batch[outputs[0]])
                finish(lo, hi, [np.asarray(batch[k]) for k in outputs])
                lo = hi
    finally:
        if started:
            ray.shutdown()


class _RayWorker:
    """A Ray Data actor: the task is set up once; TensorFlow takes the one CPU the actor holds."""

    def __init__(self, payload: list):
        import ray
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already started in this worker process
            pass
        self.task, self.source = ray.get(payload[0])
        self.task.setup()


class _RayShards(_RayWorker):
    def __call__(self, batch: dict) -> dict:
        outputs: dict = {"lo": batch["lo"], "hi": batch["hi"]}
        ranges = zip(batch["lo"].tolist(), batch["hi"].tolist(), strict=True)
        results = [self.task(self.source.read(lo, hi)) for lo, hi in ranges]
        for i in range(len(results[0])):
            outputs[f"out{i:03d}"] = np.stack([r[i] for r in results])
        return outputs


class _RayRows(_RayWorker):
    def __call__(self, batch: dict) -> dict:
        results = self.task(dict(batch))
        return {f"out{i:03d}": r for i, r in enumerate(results)}


def check_out(out) -> None:
    """``out`` None, or a directory for a job's results (made when missing): not a file."""
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise InvalidInputError(f"out must be a directory for the results; {os.fspath(out)!r} is a file")


def check_engine(engine, num_workers) -> None:
    """``engine`` one of :data:`ENGINES`; ``num_workers`` a positive int or None, for Ray only."""
    if engine not in ENGINES:
        raise InvalidInputError(f"engine must be one of {ENGINES}; got {engine!r}")
    if num_workers is not None:
        from deepexplain.inputs import check_positive_int

        check_positive_int(num_workers, "num_workers", f"engine={engine!r}")
        if engine != "ray" and num_workers != 1:
            raise InvalidInputError(f"num_workers={num_workers} needs engine='ray' (the local engine is one process)")
    if engine == "ray":
        _ray()
