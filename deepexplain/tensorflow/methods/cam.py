"""The class activation map family: Grad-CAM, Grad-CAM++, LayerCAM, Score-CAM and Guided Grad-CAM.

A CAM weighs the feature maps ``A^k`` of one layer (``layer=``; default the last layer with feature maps, found
through nested models) by how much the explained score ``y`` depends on them, sums over channels, keeps the positive
part and stretches the map to the input's resolution. Notation: ``g^k = dy/dA^k``, ``Z`` positions per map.

- Grad-CAM (Selvaraju et al. 2017, Eqs. 1-2): ``ReLU(sum_k alpha_k A^k)``, ``alpha_k = mean_ij g^k_ij``. For a
  global-average-pooling -> dense head the map before the ReLU sums to ``y - b`` (CAM of Zhou et al. 2016, / Z).
- Grad-CAM++ (Chattopadhay et al. 2018, Eq. 19): ``w_k = sum_ij alpha^k_ij ReLU(g^k_ij)`` with
  ``alpha^k_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3)`` (0 where that denominator is 0), the higher derivatives of
  ``exp(y)`` written as powers of ``g`` as the paper does for piecewise-linear networks.
- LayerCAM (Jiang et al. 2021, Eq. 5): ``ReLU(sum_k ReLU(g^k) * A^k)``, weights per position.
- Score-CAM (Wang et al. 2020, Eq. 8, Alg. 1): ``w_k = softmax(f(x * H_k))_c`` with ``H_k`` the map ``A^k``
  upsampled to the input and min-max scaled to [0, 1]; ``max_channels`` keeps the channels of largest spatial
  standard deviation (Faster Score-CAM).
- Guided Grad-CAM (Selvaraju et al. 2017, Sec. 3.1): guided backpropagation times the upsampled Grad-CAM map.

The score is the logit (the papers' pre-softmax ``y^c``): on a model that ends in a softmax its input is explained,
as for LRP. Results are ``(N, H, W)`` at the input's resolution (``(N, T)`` for sequences; the layer's own
resolution with ``upsample=None``); ``guided_gradcam`` is shaped like ``xs``.

Where the peers differ, we pick and offer the other:

- ``normalize=False``: maps keep their units (comparable across samples, fit for metrics), as Captum's
  ``LayerGradCam``; ``normalize=True`` scales each map to [0, 1] after upsampling, as tf-keras-vis does.
- ``upsample='bilinear'``: half-pixel bilinear (``tf.image.resize``, torch ``align_corners=False``);
  ``'bilinear_align_corners'`` is tf-keras-vis's ``scipy.ndimage.zoom(order=1)``; ``'nearest'`` is Captum's
  ``LayerAttribution.interpolate`` default.
- Grad-CAM++: the paper's Eq. 19 by default; ``normalize_alpha=True`` scales ``alpha^k`` to sum to 1 per channel as
  the authors' code and tf-keras-vis do. Neither multiplies by ``exp(y)``, which tf-keras-vis does: that is a
  positive factor per sample (removed by ``normalize=True``) that overflows float32 for logits above 88.
- Score-CAM: ``max_channels`` is chosen per sample (tf-keras-vis pools the choice over the batch, so its result
  depends on the batch); the softmax is applied to the logits once (tf-keras-vis applies it to the model's output,
  a second time on a softmax model).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from deepexplain import batching
from deepexplain.errors import InvalidInputError
from deepexplain.inputs import check_choice, check_flag, check_positive_int
from deepexplain.resampling import EINSUM, UPSAMPLING, interpolation, stretch
from deepexplain.tensorflow.methods.base import GradientMethod
from deepexplain.tensorflow.rules import guided as guided_rules


def upsample(maps, size, mode: str):
    """Maps ``(N, h, w)`` (or ``(N, t)``) stretched to ``size`` (``(H, W)`` or ``(T,)``) by ``mode`` (see
    :func:`interpolation`): an array for an array, a tensor of the graph for a tensor (sizes the graph does not know
    are computed when it runs)."""
    if not isinstance(maps, tf.Tensor):
        return stretch(maps, size, mode).astype(np.float32)
    matrices = []
    for axis, target in enumerate(tf.unstack(tf.cast(size, tf.int32)) if not _static(size) else list(size)):
        source = maps.shape[axis + 1]
        if _static(size) and source is not None:
            matrices.append(tf.constant(interpolation(source, int(target), mode), maps.dtype))
        else:
            shapes = [tf.shape(maps)[axis + 1], target]
            computed = tf.numpy_function(lambda a, b: interpolation(int(a), int(b), mode), shapes, tf.float64)
            matrices.append(tf.cast(computed, maps.dtype))
    return tf.einsum(EINSUM[maps.shape.rank], maps, *matrices)


def _static(size) -> bool:
    return not isinstance(size, tf.Tensor) and all(isinstance(s, int | np.integer) for s in size)


def minmax(maps):
    """Each map scaled to [0, 1] over all its positions (a constant map becomes 0); arrays or tensors."""
    if not isinstance(maps, tf.Tensor):
        axes = tuple(range(1, maps.ndim))
        low = maps.min(axis=axes, keepdims=True)
        span = maps.max(axis=axes, keepdims=True) - low
        return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)
    axes = list(range(1, maps.shape.rank))
    low = tf.reduce_min(maps, axis=axes, keepdims=True)
    span = tf.reduce_max(maps, axis=axes, keepdims=True) - low
    return tf.math.divide_no_nan(maps - low, span)


class LayerMapMethod(GradientMethod):
    """A method that maps a layer's feature maps (``layer=``) to one heatmap per sample.

    ``maps(activations, gradients)`` gives the map before the ReLU at the layer's resolution; the Explainer
    computes ``activations`` (the layer's output) and ``gradients`` (of the weighted score with respect to it) in one
    trace of the model and finishes the map with :meth:`finish`.
    """

    uses_layer = True
    explains_logits = True
    name = "cam"

    def __init__(self, sample_shapes, relu=True, upsample="bilinear", normalize=False):
        super().__init__(sample_shapes)
        self.relu = check_flag(relu, "relu", self.name)
        if upsample is not None:
            check_choice(upsample, "upsample", self.name, UPSAMPLING)
        self.upsample = upsample
        self.normalize = check_flag(normalize, "normalize", self.name)

    def maps(self, activations, gradients):
        raise NotImplementedError

    def finish(self, maps, input_size):
        """ReLU, upsampling to ``input_size`` (spatial sizes of the input), then min-max scaling, as configured."""
        if self.relu:
            maps = tf.nn.relu(maps) if isinstance(maps, tf.Tensor) else np.maximum(maps, 0)
        if self.upsample is not None:
            maps = upsample(maps, input_size, self.upsample)
        return minmax(maps) if self.normalize else maps


def _spatial_axes(tensor) -> list:
    return list(range(1, tensor.shape.rank - 1))


class GradCAM(LayerMapMethod):
    """Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV, Eqs. 1-2); see :mod:`deepexplain.tensorflow.methods.cam`.

    Parameters
    ----------
    relu : bool
        Keep the positive part of the map (the paper; Captum's ``relu_attributions=True``).
    upsample : {'bilinear', 'bilinear_align_corners', 'nearest'} or None
        How the map is stretched to the input's resolution; None keeps the layer's.
    normalize : bool
        Scale each map to [0, 1] (tf-keras-vis's ``normalize_cam``).
    """

    name = "gradcam"

    def maps(self, activations, gradients):
        weights = tf.reduce_mean(gradients, axis=_spatial_axes(gradients), keepdims=True)
        return tf.reduce_sum(weights * activations, axis=-1)


class GradCAMPlusPlus(LayerMapMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018, "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
    Networks", WACV, Eq. 19); see :mod:`deepexplain.tensorflow.methods.cam`.

    Parameters
    ----------
    relu, upsample, normalize
        As :class:`GradCAM`.
    normalize_alpha : bool
        Scale the position weights ``alpha^k`` to sum to 1 per channel, as the authors' code and tf-keras-vis do
        (default: the paper's Eq. 19 as written).
    """

    name = "gradcam++"

    def __init__(self, sample_shapes, relu=True, upsample="bilinear", normalize=False, normalize_alpha=False):
        super().__init__(sample_shapes, relu=relu, upsample=upsample, normalize=normalize)
        self.normalize_alpha = check_flag(normalize_alpha, "normalize_alpha", self.name)

    def maps(self, activations, gradients):
        axes = _spatial_axes(gradients)
        square = tf.square(gradients)
        total = tf.reduce_sum(activations, axis=axes, keepdims=True)
        alpha = tf.math.divide_no_nan(square, 2.0 * square + total * square * gradients)
        if self.normalize_alpha:
            alpha = tf.math.divide_no_nan(alpha, tf.reduce_sum(alpha, axis=axes, keepdims=True))
        weights = tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=axes, keepdims=True)
        return tf.reduce_sum(weights * activations, axis=-1)


class LayerCAM(LayerMapMethod):
    """LayerCAM (Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
    IEEE TIP 30, Eq. 5), one layer; see :mod:`deepexplain.tensorflow.methods.cam`.

    Parameters
    ----------
    relu, upsample, normalize
        As :class:`GradCAM`.
    """

    name = "layercam"

    def maps(self, activations, gradients):
        return tf.reduce_sum(tf.nn.relu(gradients) * activations, axis=-1)


class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM (Selvaraju et al. 2017, Sec. 3.1): guided backpropagation (Springenberg et al. 2015) of the
    input times the upsampled Grad-CAM map (broadcast over the input's channels); shaped like ``xs``.

    Parameters
    ----------
    relu, upsample, normalize
        Of the Grad-CAM map, as :class:`GradCAM`; ``upsample`` cannot be None.
    """

    name = "guided_gradcam"
    rules = guided_rules.GUIDED_RULES
    gradient_rule_types = frozenset({"MaxPool", "MaxPoolV2"})

    def __init__(self, sample_shapes, relu=True, upsample="bilinear", normalize=False):
        if upsample is None:
            raise InvalidInputError("upsample of guided_gradcam cannot be None: the map multiplies the input's")
        super().__init__(sample_shapes, relu=relu, upsample=upsample, normalize=normalize)


class ScoreCAM(LayerMapMethod):
    """Score-CAM (Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR workshops, Eq. 8 and Alg. 1); with ``max_channels``, Faster Score-CAM. See
    :mod:`deepexplain.tensorflow.methods.cam`.

    One forward pass per sample and channel (``max_channels`` per sample with it), in calls of at most
    ``batch_size`` rows; no gradient.

    Parameters
    ----------
    relu, normalize
        As :class:`GradCAM`.
    upsample : {'bilinear', 'bilinear_align_corners', 'nearest'} or None
        How the maps are stretched to the input, for the masks and for the result (None: the result stays at the
        layer's resolution; the masks are then stretched bilinearly).
    max_channels : int, optional
        Keep, per sample, the channels whose maps have the largest spatial standard deviation (Faster Score-CAM);
        the others weigh 0. Default: every channel.
    softmax : bool
        Weigh a channel by the softmax of the logits of the masked input (the paper); False: by the explained
        score itself (logits, or a regression or segmentation score).
    """

    name = "scorecam"
    needs_gradient = False

    def __init__(self, sample_shapes, relu=True, upsample="bilinear", normalize=False, max_channels=None,
                 softmax=True):  # fmt: skip
        super().__init__(sample_shapes, relu=relu, upsample=upsample, normalize=normalize)
        self.max_channels = None if max_channels is None else check_positive_int(max_channels, "max_channels",
                                                                                  self.name)  # fmt: skip
        self.softmax = check_flag(softmax, "softmax", self.name)

    def channels(self, activations: np.ndarray) -> np.ndarray:
        """``(N, K')`` channel indices scored per sample: all, or the ``max_channels`` most varied."""
        n, count = len(activations), activations.shape[-1]
        if self.max_channels is None or self.max_channels >= count:
            return np.broadcast_to(np.arange(count), (n, count))
        spread = activations.reshape(n, -1, count).std(axis=1)
        return np.sort(np.argsort(-spread, axis=1, kind="stable")[:, : self.max_channels], axis=1)

    def attribute_maps(self, forward, xs: list, activations: np.ndarray, batch_size: int, progress: bool):
        """Score-CAM maps from the layer's ``activations`` ``(N, *spatial, K)`` and ``forward(rows, owners)``, the
        explained score of rows of model inputs."""
        x = xs[0]
        n = len(x)
        input_size = x.shape[1 : activations.ndim - 1]
        chosen = self.channels(activations)
        owners = np.repeat(np.arange(n), chosen.shape[1])
        channels = chosen.reshape(-1)
        scores = np.empty(len(owners))
        mode = self.upsample or "bilinear"
        with tqdm(total=len(owners), delay=2, disable=not progress, desc=self.name, unit="row") as bar:
            for lo, hi in batching.chunks(len(owners), batch_size):
                maps = activations[owners[lo:hi], ..., channels[lo:hi]]
                masks = minmax(upsample(maps, input_size, mode))
                rows = [x[owners[lo:hi]] * masks[..., None].astype(x.dtype)]  # the first input is masked
                rows += [other[owners[lo:hi]] for other in xs[1:]]
                scores[lo:hi] = forward(rows, owners[lo:hi])
                bar.update(hi - lo)
        weights = np.zeros((n, activations.shape[-1]))
        weights[owners, channels] = scores
        raw = np.einsum("n...k,nk->n...", activations.astype(np.float64), weights).astype(np.float32)
        return self.finish(raw, input_size)


__all__ = ["UPSAMPLING", "GradCAM", "GradCAMPlusPlus", "GuidedGradCAM", "LayerCAM", "LayerMapMethod", "ScoreCAM",
           "minmax", "upsample"]  # fmt: skip
