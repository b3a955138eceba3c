r"""Quality metrics of the task kinds other than classification, shared by the accuracy and edge tracks.

**Segmentation** (outputs: per-pixel class scores ``(N, H, W, K)``, labels ``(N, H, W)``). With the confusion
matrix :math:`C_{ij}` = pixels of class *i* predicted as *j*, summed over the whole test split:

- ``pixel_accuracy`` = :math:`\sum_i C_{ii} / \sum_{ij} C_{ij}`;
- ``miou`` = mean over the classes with a non-empty union of :math:`C_{ii} / (\sum_j C_{ij} + \sum_j C_{ji} - C_{ii})`
  (the PASCAL VOC / Cityscapes mean IoU, background included as a class);
- ``loss`` = mean over pixels of :math:`-\log p(\text{label})`.

**Super-resolution** (outputs and labels: images ``(N, sH, sW, C)`` in [0, 1]), as SR papers evaluate since
SRCNN: the output is clipped to [0, 1] and rounded to 8 bits, both images are converted to the luma Y of
ITU-R BT.601 (MATLAB's ``rgb2ycbcr``: :math:`Y = 16 + 65.481 R + 128.553 G + 24.966 B`; a grey image has
:math:`Y = 16 + 219 x`), ``scale`` pixels are shaved off every border, and per image

- ``psnr_y`` = :math:`10 \log_{10}(255^2 / \mathrm{MSE}_Y)` (dB; an MSE below 1e-10 counts as 1e-10);
- ``ssim_y`` = SSIM of Wang et al. 2004 on Y: Gaussian window :math:`\sigma = 1.5` (11 x 11), :math:`K_1 = 0.01`,
  :math:`K_2 = 0.03`, :math:`L = 255`, averaged over the positions where the window lies inside the image
  (scikit-image's ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``; tested), or
  over all positions of an image smaller than the window;

both averaged over the test images. Where the test examples are patches of larger images (the task's
``test_groups``, an image index per example), an image's PSNR is that of its pooled squared error (the mean of
its patches' MSEs) and its SSIM the mean of its patches', so every image counts once, as in Set5 / Set14
(a mean of per-patch PSNRs would let flat patches, whose error is near zero, dominate).
``bicubic_psnr_y`` and ``bicubic_ssim_y`` score the task's reference (bicubic upsampling of the input) the
same way.

**Enhancement** (outputs and labels: signals shaped like the input, the label the clean signal). Per example,
with the estimate :math:`\hat s` and the clean signal :math:`s`, both made zero-mean over their samples, the
scale-invariant signal-to-noise ratio of Le Roux et al. ("SDR - half-baked or well done?", ICASSP 2019)

.. math:: s_t = \frac{\langle \hat s, s \rangle}{\lVert s \rVert^2} s, \quad e = \hat s - s_t, \quad
   \mathrm{SI\text{-}SNR} = 10 \log_{10} \frac{\lVert s_t \rVert^2}{\lVert e \rVert^2}

(dB; both energies floored at 1e-10, so a silent or a perfect estimate gives a finite value); rescaling
:math:`\hat s` by any positive factor leaves it unchanged. ``si_snr`` is its mean over the test examples,
``noisy_si_snr`` the same for the task's reference (the unprocessed noisy input), and ``si_snri`` = ``si_snr``
- ``noisy_si_snr``, the mean SI-SNR improvement.

**Regression**: ``rmse``, ``mae`` over every output value;
``r2`` = :math:`1 - \sum (y - \hat y)^2 / \sum (y - \bar y)^2`.

**CTR** (outputs: two logits, no click and click, or one click logit; labels 0/1): with :math:`p_i` the
predicted click probability, ``auc`` = the area under the ROC curve, the probability that a random click
scores above a random non-click (ties count one half; the Mann-Whitney statistic over average ranks), and
``logloss`` = :math:`-\mathrm{mean}(y \log p + (1 - y) \log(1 - p))`, with :math:`p` clipped to
:math:`[10^{-12}, 1 - 10^{-12}]`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

from effbench.track import Metric

PSNR_PEAK = 255.0
MIN_MSE = 1e-10
SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5  # an 11 x 11 window: radius int(3.5 * 1.5 + 0.5) = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PROBABILITY_EPS = 1e-12
# Pixels per chunk when the per-pixel loss is computed (keeps the float64 softmax small).
LOSS_CHUNK = 1 << 20


# ------------------------------------------------------------------------------------------- scores -> probs


def log_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis: ``outputs`` as they are if they are already probabilities
    (non-negative, summing to 1), else taken as logits."""
    outputs = outputs.astype(np.float64)
    if np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-4):
        return np.log(np.clip(outputs, PROBABILITY_EPS, 1.0))
    shifted = outputs - outputs.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def click_probability(outputs: np.ndarray) -> np.ndarray:
    """p(click) per example: the softmax of two scores' second, or the sigmoid of a single logit."""
    outputs = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    if outputs.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-outputs[:, 0]))
    if outputs.shape[1] != 2:
        raise ValueError(f"a CTR model outputs one click logit or two scores; got {outputs.shape[1]} per example")
    return np.exp(log_probabilities(outputs)[:, 1])


def decisions(kind: str, outputs: np.ndarray) -> np.ndarray:
    """What a model decides, per example (classification, CTR) or per pixel (segmentation)."""
    if kind == "ctr":
        return (click_probability(outputs) > 0.5).astype(int)
    return np.asarray(outputs).argmax(axis=-1)


# --------------------------------------------------------------------------------------------- segmentation


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = pixels of class ``i`` predicted as ``j``."""
    flat = labels.astype(np.int64).ravel() * num_classes + predicted.astype(np.int64).ravel()
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(confusion: np.ndarray) -> float:
    hits = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - hits
    present = union > 0
    return float(np.mean(hits[present] / union[present])) if present.any() else 0.0


def pixel_cross_entropy(outputs: np.ndarray, labels: np.ndarray) -> float:
    scores = outputs.reshape(-1, outputs.shape[-1])
    flat = labels.reshape(-1).astype(np.int64)
    total = 0.0
    for start in range(0, len(flat), LOSS_CHUNK):
        log_p = log_probabilities(scores[start:start + LOSS_CHUNK])
        total -= log_p[np.arange(len(log_p)), flat[start:start + LOSS_CHUNK]].sum()
    return float(total / len(flat))


def segmentation_metrics(outputs: np.ndarray, labels: np.ndarray, num_classes: int) -> list[Metric]:
    confusion = confusion_matrix(outputs.argmax(axis=-1), labels, num_classes)
    return [
        Metric("miou", mean_iou(confusion), "ratio"),
        Metric("pixel_accuracy", float(np.trace(confusion) / confusion.sum()), "ratio"),
        Metric("loss", pixel_cross_entropy(outputs, labels), "nat"),
        Metric("test_samples", len(labels), "count"),
    ]


# ----------------------------------------------------------------------------------------- super-resolution


def luma(images: np.ndarray) -> np.ndarray:
    """BT.601 luma Y in [16, 235] of RGB (or grey) images in [0, 1], shaped (N, H, W)."""
    if images.shape[-1] == 1:
        return 16.0 + 219.0 * images[..., 0]
    red, green, blue = images[..., 0], images[..., 1], images[..., 2]
    return 16.0 + 65.481 * red + 128.553 * green + 24.966 * blue


def as_8bit(images: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and round to the 256 levels an 8-bit image holds (float64)."""
    return np.round(np.clip(images.astype(np.float64), 0.0, 1.0) * 255.0) / 255.0


def shaved_luma(images: np.ndarray, shave: int) -> np.ndarray:
    y = luma(as_8bit(images))
    return y[:, shave:y.shape[1] - shave, shave:y.shape[2] - shave] if shave else y


def mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared difference per image of two (N, H, W) arrays."""
    return np.mean((a - b) ** 2, axis=(1, 2))


def psnr_of_mse(squared_error: np.ndarray, peak: float) -> np.ndarray:
    return 10.0 * np.log10(peak**2 / np.maximum(squared_error, MIN_MSE))


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> np.ndarray:
    """PSNR in dB per image of two (N, H, W) arrays."""
    return psnr_of_mse(mse(a, b), peak)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """SSIM per image of two (N, H, W) arrays (Gaussian window; see the module docstring)."""

    def blur(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, sigma=(0, SSIM_SIGMA, SSIM_SIGMA), truncate=SSIM_TRUNCATE)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    covariance = blur(a * b) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    if min(index.shape[1:]) <= 2 * pad:  # smaller than the window: every position counts
        return index.mean(axis=(1, 2))
    return index[:, pad:index.shape[1] - pad, pad:index.shape[2] - pad].mean(axis=(1, 2))


def super_resolution_scores(
    outputs: np.ndarray, targets: np.ndarray, scale: int, groups: np.ndarray | None = None
) -> tuple[float, float]:
    """(mean PSNR, mean SSIM) on Y with ``scale`` pixels shaved off each border, over images: each example,
    or each group of ``groups`` (the image each example is a patch of)."""
    predicted, truth = shaved_luma(outputs, scale), shaved_luma(targets, scale)
    errors, similarities = mse(predicted, truth), ssim(predicted, truth, PSNR_PEAK)
    if groups is None:
        return float(np.mean(psnr_of_mse(errors, PSNR_PEAK))), float(np.mean(similarities))
    _, group, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    pooled_error = np.bincount(group, weights=errors) / sizes
    mean_similarity = np.bincount(group, weights=similarities) / sizes
    return float(np.mean(psnr_of_mse(pooled_error, PSNR_PEAK))), float(np.mean(mean_similarity))


def super_resolution_metrics(
    outputs: np.ndarray, targets: np.ndarray, scale: int, reference: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> list[Metric]:
    value_psnr, value_ssim = super_resolution_scores(outputs, targets, scale, groups)
    metrics = [Metric("psnr_y", value_psnr, "dB"), Metric("ssim_y", value_ssim, "ratio")]
    if reference is not None:
        reference_psnr, reference_ssim = super_resolution_scores(reference, targets, scale, groups)
        metrics += [Metric("bicubic_psnr_y", reference_psnr, "dB"), Metric("bicubic_ssim_y", reference_ssim, "ratio")]
    return [*metrics, Metric("test_samples", len(targets), "count")]


def output_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of ``a`` against ``b`` over all values, peak 1 (two models' images in [0, 1])."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float(10.0 * np.log10(1.0 / max(mse, MIN_MSE)))


# --------------------------------------------------------------------------------------------- enhancement


def si_snr(estimates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """SI-SNR in dB per example of two (N, ...) arrays of signals (see the module docstring)."""
    estimate = np.asarray(estimates, np.float64).reshape(len(estimates), -1)
    target = np.asarray(targets, np.float64).reshape(len(targets), -1)
    estimate = estimate - estimate.mean(axis=1, keepdims=True)
    target = target - target.mean(axis=1, keepdims=True)
    energy = np.maximum(np.sum(target**2, axis=1, keepdims=True), MIN_MSE)
    projection = np.sum(estimate * target, axis=1, keepdims=True) / energy * target
    error = estimate - projection
    ratio = np.maximum(np.sum(projection**2, axis=1), MIN_MSE) / np.maximum(np.sum(error**2, axis=1), MIN_MSE)
    return 10.0 * np.log10(ratio)


def enhancement_metrics(
    outputs: np.ndarray, targets: np.ndarray, reference: np.ndarray | None = None
) -> list[Metric]:
    value = float(np.mean(si_snr(outputs, targets)))
    metrics = [Metric("si_snr", value, "dB")]
    if reference is not None:
        baseline = float(np.mean(si_snr(reference, targets)))
        metrics += [Metric("noisy_si_snr", baseline, "dB"), Metric("si_snri", value - baseline, "dB")]
    return [*metrics, Metric("test_samples", len(targets), "count")]


def output_snr(a: np.ndarray, b: np.ndarray) -> float:
    """SNR in dB of ``a`` against ``b`` (two models' signals): energy of ``b`` over that of ``a - b``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64).reshape(np.shape(a))
    return float(10.0 * np.log10(max(np.sum(b**2), MIN_MSE) / max(np.sum((a - b) ** 2), MIN_MSE)))


# ---------------------------------------------------------------------------------------------- regression


def regression_metrics(outputs: np.ndarray, targets: np.ndarray) -> list[Metric]:
    predicted = np.asarray(outputs, np.float64).reshape(targets.shape)
    error = predicted - targets
    spread = np.sum((targets - targets.mean()) ** 2)
    r2 = 1.0 - np.sum(error**2) / spread if spread > 0 else 0.0
    return [
        Metric("rmse", float(np.sqrt(np.mean(error**2))), "value"),
        Metric("mae", float(np.mean(np.abs(error))), "value"),
        Metric("r2", float(r2), "ratio"),
        Metric("test_samples", len(targets), "count"),
    ]


# ------------------------------------------------------------------------------------------------------ CTR


def roc_auc(probability: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U over average ranks); 0.5 when one class is absent."""
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = stats.rankdata(probability)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(probability: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probability, PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1.0 - p)))


def ctr_metrics(outputs: np.ndarray, labels: np.ndarray) -> list[Metric]:
    probability = click_probability(outputs)
    return [
        Metric("auc", roc_auc(probability, labels), "ratio"),
        Metric("logloss", log_loss(probability, labels), "nat"),
        Metric("test_samples", len(labels), "count"),
    ]
