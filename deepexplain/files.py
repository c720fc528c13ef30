"""Model inputs from files: images (scikit-image, resized to the model's input) and ``.npy`` arrays, and the input
shape of a saved model. Used by the command line and by :func:`deepexplain.explain_dataset`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepexplain.errors import InvalidInputError

__all__ = ["IMAGE_SUFFIXES", "UnreadableInputError", "model_sample_shape", "read_input"]


class UnreadableInputError(InvalidInputError):
    """An input file that cannot be read as one model input; the message starts with the file's path."""


# What scikit-image's default plugin (imageio) reads; anything else must be a .npy array.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_input(path: str | Path, sample_shape: Sequence[int | None]) -> np.ndarray:
    """One model input from an image or a ``.npy`` file.

    Parameters
    ----------
    path : str or path-like
        An image (any of :data:`IMAGE_SUFFIXES`) or a ``.npy`` array.
    sample_shape : sequence of int or None
        The model's input shape without the batch dimension, e.g. ``(28, 28, 1)``; None for a free dimension.

    Returns
    -------
    numpy.ndarray, float32
        An image is scaled to [0, 1], its alpha channel dropped, converted to the model's channels (RGB → grey
        when the model takes one channel, grey → RGB when it takes three) and resized (anti-aliased) to the model's
        height and width. An array is returned as stored (a leading batch dimension of 1 is dropped).

    Raises
    ------
    UnreadableInputError
        (a ``ValueError``) If the suffix is neither an image's nor ``.npy``, the file does not decode (truncated, not
        an image, not an array), the array's shape does not fit ``sample_shape``, or an image cannot be fitted to a
        model input that is not (H, W, C) with C in (1, 3); the message starts with the path.
    """
    path = Path(path)
    shape = tuple(sample_shape)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path)
        except (OSError, ValueError) as error:
            raise UnreadableInputError(f"{path}: not a readable .npy array ({_first_line(error)})") from None
        if array.ndim == len(shape) + 1 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != len(shape) or any(d is not None and d != a for d, a in zip(shape, array.shape, strict=True)):
            raise UnreadableInputError(
                f"{path}: expected an array of shape {shape} (one model input), got {array.shape}"
            )
        return array.astype(np.float32)
    if suffix not in IMAGE_SUFFIXES:
        raise UnreadableInputError(f"{path}: expected an image ({', '.join(IMAGE_SUFFIXES)}) or a .npy array")
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise UnreadableInputError(
            f"{path}: an image fits a model input (H, W, 1) or (H, W, 3), but the model takes {shape}"
        )

    from skimage import io
    from skimage.color import gray2rgb, rgb2gray
    from skimage.transform import resize
    from skimage.util import img_as_float

    try:
        image = img_as_float(io.imread(path))
    except Exception as error:  # noqa: BLE001 (imageio and Pillow raise many types for a file that is no image)
        raise UnreadableInputError(f"{path}: not a readable image ({_first_line(error)})") from None
    if image.ndim == 3 and image.shape[-1] in (2, 4):  # grey + alpha, RGB + alpha: the alpha channel is dropped
        image = image[..., :-1] if image.shape[-1] == 4 else image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise UnreadableInputError(f"{path}: an image of shape {image.shape}; expected grey or RGB(A) pixels")
    if shape[-1] == 1:
        image = (rgb2gray(image) if image.ndim == 3 else image)[..., None]
    elif image.ndim == 2:
        image = gray2rgb(image)
    height = shape[0] if shape[0] is not None else image.shape[0]
    width = shape[1] if shape[1] is not None else image.shape[1]
    if (height, width) != image.shape[:2]:
        image = resize(image, (height, width), anti_aliasing=True)
    return np.clip(image, 0, 1).astype(np.float32)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def model_sample_shape(model) -> tuple[int | None, ...]:
    """The shape of one input of ``model`` (no batch dimension), None for free dimensions.

    Parameters
    ----------
    model : keras.Model, tf_keras.Model or loaded SavedModel
        A model with one input: a Keras model whose inputs are known (Sequential with an ``Input``, functional), or
        a SavedModel with a ``serving_default`` signature.

    Raises
    ------
    ValueError
        If the model has several inputs, or its input shape cannot be told before it runs (a subclassed Keras model
        that was never built).
    """
    shapes = None
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        shapes = [tuple(t.shape) for t in inputs]
    elif getattr(model, "signatures", None) and "serving_default" in model.signatures:
        import tensorflow as tf

        args, kwargs = model.signatures["serving_default"].structured_input_signature
        shapes = [tuple(spec.shape.as_list()) for spec in tf.nest.flatten((args, kwargs))]
    if shapes is None:
        raise ValueError(
            f"cannot tell the input shape of this {type(model).__name__}; save a Sequential model with an Input, a "
            "functional model, or a SavedModel with a serving signature"
        )
    if len(shapes) != 1:
        raise ValueError(f"the command line explains models with one input; this one has {len(shapes)}: {shapes}")
    return tuple(None if d is None else int(d) for d in shapes[0][1:])
