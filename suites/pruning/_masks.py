r"""Weight masks, the mechanism the unstructured pruning methods share.

A mask :math:`M_l \in \{0, 1\}^{|W_l|}` per prunable kernel (every ``Conv1D``/``Conv2D``/``Dense`` kernel;
depthwise kernels are left dense, as TFMOT leaves them, and reported so): the deployed kernel is
:math:`M_l \odot W_l`. :class:`MaskKeeper` keeps it so while a model fine-tunes (it multiplies the kernels by
their masks after every training step: pruned weights stay exactly zero, and the surviving ones train).

- :func:`magnitude_masks`: keep the largest :math:`|W|`, either over all kernels at once (``global``) or per
  layer at the same rate (``layer``), or per layer at given densities (ERK, a layer-adaptive allocation).
- :func:`erk_densities`: Erdős–Rényi-Kernel densities (Evci et al., "Rigging the Lottery", 2020):
  :math:`d_l = \epsilon \cdot \frac{\sum_i n^l_i}{\prod_i n^l_i}` over the kernel's dimensions, with
  :math:`\epsilon` chosen so that :math:`\sum_l d_l |W_l| = (1 - s) \sum_l |W_l|`; layers whose density would
  exceed 1 are kept dense and :math:`\epsilon` is solved again for the rest.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from effbench.tf import keras, tf

PRUNABLE = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Dense)
Masks = dict[str, np.ndarray]


def prunable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers whose kernels are pruned: conv / dense, in the model's order (depthwise convs excluded)."""
    return [layer for layer in model.layers if type(layer) in PRUNABLE]


def magnitude_masks(
    model: keras.Model, sparsity: float, scope: str = "global", densities: Mapping[str, float] | None = None
) -> Masks:
    """Layer name -> mask keeping the largest-magnitude weights (see the module docstring for ``scope``)."""
    kernels = {layer.name: np.abs(np.asarray(layer.kernel)) for layer in prunable_layers(model)}
    if scope == "global" and densities is None:
        values = np.concatenate([k.ravel() for k in kernels.values()])
        pruned = int(round(sparsity * values.size))
        threshold = np.partition(values, pruned - 1)[pruned - 1] if pruned else -np.inf
        return {name: (kernel > threshold).astype(np.float32) for name, kernel in kernels.items()}
    if scope not in ("global", "layer"):
        raise ValueError(f"mask scope '{scope}': expected 'global' or 'layer'")
    rates = densities or {name: 1.0 - sparsity for name in kernels}
    return {name: top_fraction(kernel, rates[name]) for name, kernel in kernels.items()}


def top_fraction(magnitude: np.ndarray, density: float) -> np.ndarray:
    kept = int(round(density * magnitude.size))
    mask = np.zeros(magnitude.size, np.float32)
    # A stable order: ties between equal magnitudes go to the earlier weight.
    mask[np.argsort(-magnitude.ravel(), kind="stable")[:kept]] = 1.0
    return mask.reshape(magnitude.shape)


def erk_densities(shapes: Mapping[str, tuple[int, ...]], sparsity: float) -> dict[str, float]:
    """Per-layer densities of the ERK allocation at overall ``sparsity`` (module docstring)."""
    sizes = {name: float(np.prod(shape)) for name, shape in shapes.items()}
    raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = (1.0 - sparsity) * sum(sizes.values()) - sum(sizes[name] for name in dense)
        scalable = sum(raw[name] * sizes[name] for name in raw if name not in dense)
        epsilon = budget / scalable
        over = {name for name in raw if name not in dense and epsilon * raw[name] > 1.0}
        if not over:
            return {name: 1.0 if name in dense else epsilon * raw[name] for name in raw}
        dense |= over


def apply_masks(model: keras.Model, masks: Mapping[str, np.ndarray]) -> None:
    """Multiply each masked layer's kernel by its mask, in place."""
    for name, mask in masks.items():
        kernel = model.get_layer(name).kernel
        kernel.assign(kernel * tf.constant(mask, kernel.dtype))


class MaskKeeper(keras.callbacks.Callback):
    """Re-applies the masks after every training step, so pruned weights stay zero while the others train."""

    def __init__(self, masks: Mapping[str, np.ndarray]):
        super().__init__()
        self.masks = dict(masks)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._pairs = [(self.model.get_layer(n).kernel, tf.constant(m)) for n, m in self.masks.items()]
        self._apply()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._apply()

    def _apply(self) -> None:
        for kernel, mask in self._pairs:
            kernel.assign(kernel * tf.cast(mask, kernel.dtype))


def sparsity_facts(masks: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Layer name -> the fraction of its kernel that is pruned: the per-layer map a record's facts carry."""
    return {name: round(float(1.0 - mask.mean()), 6) for name, mask in masks.items()}
