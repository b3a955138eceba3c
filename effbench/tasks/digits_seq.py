"""``digits-seq``: classify a short sequence of handwritten digit frames by their alternating sum mod 10.

Why: CNN + recurrent models (LRCN: a CNN per frame, an LSTM over time) need inputs that are sequences of
images whose label depends on their order. Each example is ``FRAMES`` frames, each an 8x8 digit image from
scikit-learn's bundled digits (input (4, 8, 8, 1), pixels in [0, 1]), and its label is
(d1 - d2 + d3 - d4) mod 10: swapping two neighbouring frames changes it (unless their digits are equal or 5 apart),
so a model must recognise every frame and keep track of its position, which a bag of frames cannot.

Training sequences are drawn from the images the ``digits`` task trains on, test sequences from the images
it tests on (:mod:`effbench.tasks._digits`): 10,000 / 2,000 sequences, with a fixed seed.
"""

from __future__ import annotations

import numpy as np

from effbench.registry import TaskSpec, register_task
from effbench.tasks._digits import ComposedDigitsTask, draw_groups

FRAMES = 4
TRAIN_SEQUENCES, TEST_SEQUENCES = 10_000, 2_000
SEED = 4_2024
# +1, -1, +1, -1: the sign each frame's digit enters the label with.
SIGNS = np.array([(-1) ** frame for frame in range(FRAMES)])


def digit_sequences(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` sequences: frames (count, FRAMES, 8, 8, 1) float32 and labels (alternating sum mod 10) int32."""
    members = draw_groups(np.random.default_rng(seed), len(labels), count, FRAMES)
    return images[members], (np.mod(labels[members] @ SIGNS, 10)).astype(np.int32)


@register_task(
    TaskSpec(
        slug="digits-seq",
        summary="sequences of 4 bundled 8x8 digit frames, label = (d1 - d2 + d3 - d4) mod 10: order matters "
        "(10,000 train / 2,000 test; test digits held out)",
        input_shape=(FRAMES, 8, 8, 1),
        num_classes=10,
        default_backbone="mlp",
        modality="frames",
        embedded=True,
        target_accuracy=0.5,
    )
)
class DigitsSeq(ComposedDigitsTask):
    """Sequences generated from the two digit pools with fixed seeds; 10% of the training ones are validation."""

    compose = staticmethod(digit_sequences)
    train_count, test_count, seed = TRAIN_SEQUENCES, TEST_SEQUENCES, SEED
