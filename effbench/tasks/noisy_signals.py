r"""``noisy-signals``: SYNTHETIC 1-D signal enhancement, noisy signals in, the clean signals out, generated offline.

Why: speech-enhancement networks (Fast FullSubNet and its kin) map a noisy waveform to a clean one, and no speech
or noise corpus (DNS, VoiceBank) ships with the pinned packages or can be downloaded here. This task keeps what
they are scored on (how much cleaner the output is, in SI-SNR) with signals that are generated, not recorded:
it is synthetic, and its numbers say nothing about speech quality (PESQ, STOI).

One example is :data:`LENGTH` samples (512, 64 ms at a notional 8 kHz). The clean signal is one of three
families, drawn with equal odds, under a smooth envelope (an onset in the first 30%, an offset in the last 30%,
raised-cosine ramps of 32 samples; silence outside), scaled to unit RMS:

- harmonic: a fundamental f0 in [100, 600] Hz with 4 harmonics k f0 below 3.8 kHz, amplitudes r^(k-1) with
  r in [0.3, 0.8], random phases (a voiced sound);
- chirp: a linear sweep between two frequencies in [100, 3000] Hz, plus its second harmonic at 0.3 where
  that stays below 3.8 kHz;
- AM tone: a carrier in [300, 3000] Hz, amplitude-modulated at 8-60 Hz with depth 0.3-1.

The noise is one of three families with equal odds: white Gaussian; coloured (white noise shaped to a
1/f^alpha power spectrum, alpha in [1, 2]: pink to brown); bursts (1 to 4 bursts of 16-96 samples of white
noise over a floor 20 dB below). It is scaled to an SNR drawn uniformly in [-5, 15] dB against the clean signal,
added, and both the noisy and the clean signal are divided by the noisy signal's RMS (one gain per example,
so inputs have unit RMS; SI-SNR does not see the gain).

8,000 training and 2,000 test examples (the last 800 training ones are validation), each split drawn from a
generator seeded by (``SEED``, split), generated in well under a second and cached (:mod:`._generated`).

Quality (the ``accuracy`` track, kind ``enhancement``; :mod:`tracks._quality`): ``si_snr``, the mean SI-SNR
(dB) of the model's outputs against the clean signals; ``noisy_si_snr``, the same for the unprocessed noisy
input (:meth:`NoisySignals.reference_outputs`: the row every enhancer must beat, as bicubic is for
super-resolution); and ``si_snri``, their difference (the SI-SNR improvement enhancement papers report).
Trained on the mean squared error of the waveform.
"""

from __future__ import annotations

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import TaskSpec, register_task
from effbench.tasks._generated import cached_drawn_splits
from effbench.tasks._shared import smoke_recipe
from effbench.tasks.base import Splits, Task

LENGTH = 512
SAMPLE_RATE = 8_000.0
TOP_FREQUENCY = 3_800.0  # below the 4 kHz Nyquist frequency
RAMP = 32
HARMONICS = 4
SNR_RANGE_DB = (-5.0, 15.0)
BURST_FLOOR = 0.1  # the floor under the bursts: 20 dB below them
SEED = 512_2024
TRAIN_EXAMPLES, TEST_EXAMPLES = 8_000, 2_000
VALIDATION_EXAMPLES = 800
VERSION = 1


def envelope(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, LENGTH) gates: 0 before an onset and after an offset, 1 between, raised-cosine ramps."""
    position = np.arange(LENGTH)[None, :]
    onset = rng.integers(0, int(0.3 * LENGTH), size=(count, 1))
    offset = rng.integers(int(0.7 * LENGTH), LENGTH - RAMP, size=(count, 1))
    rise = np.clip((position - onset) / RAMP, 0.0, 1.0)
    fall = np.clip((offset + RAMP - position) / RAMP, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))


def harmonic_tones(rng: np.random.Generator, time: np.ndarray, count: int) -> np.ndarray:
    f0 = rng.uniform(100.0, 600.0, size=(count, 1, 1))
    order = np.arange(1, HARMONICS + 1)[None, :, None]
    decay = rng.uniform(0.3, 0.8, size=(count, 1, 1)) ** (order - 1)
    amplitude = np.where(order * f0 < TOP_FREQUENCY, decay, 0.0)
    phase = rng.uniform(0.0, 2 * np.pi, size=(count, HARMONICS, 1))
    return np.sum(amplitude * np.sin(2 * np.pi * order * f0 * time + phase), axis=1)


def chirps(rng: np.random.Generator, time: np.ndarray, count: int) -> np.ndarray:
    start, end = (rng.uniform(100.0, 3_000.0, size=(count, 1)) for _ in range(2))
    duration = LENGTH / SAMPLE_RATE
    offset = rng.uniform(0, 2 * np.pi, (count, 1))
    phase = 2 * np.pi * (start * time + (end - start) * time**2 / (2 * duration)) + offset
    second = np.where(2 * np.maximum(start, end) < TOP_FREQUENCY, 0.3, 0.0)
    return np.sin(phase) + second * np.sin(2 * phase)


def am_tones(rng: np.random.Generator, time: np.ndarray, count: int) -> np.ndarray:
    carrier = rng.uniform(300.0, 3_000.0, size=(count, 1))
    rate, depth = rng.uniform(8.0, 60.0, size=(count, 1)), rng.uniform(0.3, 1.0, size=(count, 1))
    phases = rng.uniform(0.0, 2 * np.pi, size=(2, count, 1))
    return (1 + depth * np.sin(2 * np.pi * rate * time + phases[0])) * np.sin(2 * np.pi * carrier * time + phases[1])


def clean_signals(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, LENGTH) clean signals of unit RMS: one family each, under an envelope."""
    time = np.arange(LENGTH) / SAMPLE_RATE
    family = rng.integers(0, 3, size=count)
    signals = np.zeros((count, LENGTH))
    for index, make in enumerate((harmonic_tones, chirps, am_tones)):
        members = np.flatnonzero(family == index)
        signals[members] = make(rng, time, len(members))
    signals *= envelope(rng, count)
    return signals / rms(signals)


def coloured_noise(rng: np.random.Generator, count: int) -> np.ndarray:
    """White noise shaped to a 1/f^alpha power spectrum, alpha in [1, 2], no DC."""
    spectrum = np.fft.rfft(rng.standard_normal((count, LENGTH)), axis=1)
    frequency = np.fft.rfftfreq(LENGTH)
    alpha = rng.uniform(1.0, 2.0, size=(count, 1))
    gain = np.zeros((count, len(frequency)))
    gain[:, 1:] = frequency[None, 1:] ** (-alpha / 2)
    return np.fft.irfft(spectrum * gain, n=LENGTH, axis=1)


def burst_noise(rng: np.random.Generator, count: int) -> np.ndarray:
    """1-4 bursts of 16-96 samples of white noise over a floor ``BURST_FLOOR`` as loud."""
    position = np.arange(LENGTH)[None, :]
    gate = np.full((count, LENGTH), BURST_FLOOR)
    bursts = rng.integers(1, 5, size=(count, 1))
    for slot in range(4):
        start = rng.integers(0, LENGTH, size=(count, 1))
        width = rng.integers(16, 97, size=(count, 1))
        inside = (position >= start) & (position < start + width) & (slot < bursts)
        gate = np.where(inside, 1.0, gate)
    return gate * rng.standard_normal((count, LENGTH))


def noises(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, LENGTH) noises of unit RMS: white, coloured or bursts, with equal odds."""
    family = rng.integers(0, 3, size=count)
    noise = rng.standard_normal((count, LENGTH))
    for index, make in ((1, coloured_noise), (2, burst_noise)):
        members = np.flatnonzero(family == index)
        noise[members] = make(rng, len(members))
    return noise / rms(noise)


def rms(signals: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(signals**2, axis=1, keepdims=True))


def noisy_pairs(seed: int, split: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) float32 signals, (count, LENGTH) each, both divided by the noisy signal's RMS."""
    rng = np.random.default_rng([seed, split])
    clean = clean_signals(rng, count)
    snr_db = rng.uniform(*SNR_RANGE_DB, size=(count, 1))
    noisy = clean + noises(rng, count) * 10.0 ** (-snr_db / 20.0)  # both of unit RMS before the noise's gain
    gain = rms(noisy)
    return (noisy / gain).astype(np.float32), (clean / gain).astype(np.float32)


def generate(seed: int = SEED, train: int = TRAIN_EXAMPLES, test: int = TEST_EXAMPLES) -> dict[str, np.ndarray]:
    return cached_drawn_splits("noisy-signals", VERSION, noisy_pairs, seed, train, test)


@register_task(
    TaskSpec(
        slug="noisy-signals",
        summary="SYNTHETIC 1-D enhancement: 512-sample harmonic / chirp / AM signals plus white, coloured or burst "
        "noise at -5..15 dB SNR -> the clean signal; SI-SNR (dB), the noisy input as reference (8,000 / 2,000)",
        input_shape=(LENGTH,),
        num_classes=0,
        default_backbone="fcn-small",
        modality="vector",
        embedded=True,
        target_accuracy=0.0,
        kind="enhancement",
        output_shape=(LENGTH,),
    )
)
class NoisySignals(Task):
    """Noisy signals in, clean signals out; the last ``VALIDATION_EXAMPLES`` training examples are validation."""

    recipes = {
        "smoke": smoke_recipe(),
        "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=8, batch_size=64),
        # FullSubNet's optimizer (Adam 1e-3), shortened to this data's size.
        "paper": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=60, batch_size=32),
    }

    def load_splits(self) -> Splits:
        data = generate()
        cut = len(data["x_train"]) - VALIDATION_EXAMPLES
        x_train, y_train = data["x_train"], data["y_train"]
        return Splits(x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:], data["x_test"], data["y_test"])

    def reference_outputs(self, x: np.ndarray) -> np.ndarray:
        """The noisy input itself: what doing nothing scores (``noisy_si_snr``)."""
        return x
