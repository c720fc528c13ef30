"""Concept Relevance Propagation on the digits CNN: which channels the model used for a digit, and what they are.

Achtibat et al. 2023 ("From attribution maps to human-understandable explanations through Concept Relevance
Propagation", Nature Machine Intelligence): a heatmap says *where* the evidence is; masking the LRP relevance at a
layer to one channel says where *that channel's* evidence is, and the samples where the channel is most relevant
(RelMax) show what it stands for. This script

1. trains the Keras digits CNN of ``keras_eager.py`` (seconds);
2. checks completeness: the conditional heatmaps of all channels of the second convolution sum to the heatmap;
3. collects the RelMax reference digits of every channel over the training digits (``FeatureVisualization``, one
   streaming pass, resumable with ``out=``);
4. draws the four most relevant channels of a test digit, each with its heatmap and its reference crops
   (``top_concepts`` + ``plot.concepts``), and prints the attribution graph of the most relevant one.

Run::

    python examples/concepts_digits.py [--out DIR] [--smoke]

Writes ``concepts_digits.png`` to ``--out`` (default ``examples/out``).
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_eager import build_cnn, load_data, train  # noqa: E402

from deepexplain import plot  # noqa: E402
from deepexplain.crp import AttributionGraph, ChannelConcept, CondAttribution, FeatureVisualization, top_concepts  # noqa: E402


def main(argv=None):
    """Train, check completeness, collect the reference sets, draw the concepts of one digit.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="fewer epochs and samples: a smoke test")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load_data()
    model = train(build_cnn(), x_train, y_train, epochs=2 if args.smoke else 10)
    print(f"test accuracy {model.evaluate(x_test, y_test, verbose=0)[1]:.1%}")
    first, second = [layer.name for layer in model.layers if "conv" in layer.name]

    # The model ends in a softmax: the LRP family explains its logits by itself.
    attribution = CondAttribution(model, "lrp.epsilon_plus", progress=False)

    # 2. Completeness at a bottleneck: the channels' conditional heatmaps add up to the unconditional one.
    x, label = x_test[:1], int(y_test[0])
    whole = attribution(x, {"y": [label]}).heatmap
    channels = model.get_layer(second).output.shape[-1]
    parts = attribution(x, [{"y": [label], second: [c]} for c in range(channels)]).heatmap
    print(f"sum over {channels} channels of {second!r} - heatmap: {np.abs(parts.sum(axis=0) - whole[0]).max():.1e}")

    # 3. RelMax over the training digits, conditioned on each digit's label.
    data = x_train[:400] if args.smoke else x_train
    layer_map = {first: ChannelConcept(), second: ChannelConcept()}
    fv = FeatureVisualization(attribution, data, layer_map, targets=y_train[: len(data)], k=8)
    fv.run(batch_size=128, progress=False)

    # 4. The concepts behind one test digit.
    concepts = top_concepts(attribution, x_test[0], second, target=label, n_concepts=4, fv=fv, n_ref=6)
    for c, share in zip(concepts.ids, concepts.shares, strict=True):
        print(f"digit {label}: channel {c} of {second!r} carries {100 * share:+.0f}% of the relevance")
    graph = AttributionGraph(attribution, layer_map)
    top = next(c for c, share in zip(concepts.ids, concepts.shares, strict=True) if share > 0)  # evidence for
    for lower, channel, share in graph(x_test[0], label, second, top, width=(3,)).connections[(second, top)]:
        print(f"  channel {top} <- channel {channel} of {lower!r}: {100 * share:+.0f}%")
    args.out.mkdir(parents=True, exist_ok=True)
    plot.concepts(concepts, save=args.out / "concepts_digits.png")
    print(f"wrote {args.out / 'concepts_digits.png'}")


if __name__ == "__main__":
    main()
