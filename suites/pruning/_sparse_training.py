r"""Training a network through masks of its kernels: the mechanism nm-srste and lottery-jackpot share.

Both train a backbone whose conv / dense kernels are seen, in the forward pass, through a mask that changes
while it trains: nm-srste recomputes an N:M mask from the dense weights at every step (and trains the dense
weights through SR-STE), lottery-jackpot keeps the weights frozen and searches the mask (through scores).
:class:`MaskedKernels` is that training model: it wraps the functional backbone and, in each call, puts
:meth:`MaskedKernels.forward_kernel` (a tensor computed from the kernel variable, differentiable as the method
defines) in the place of each masked layer's ``kernel`` attribute, runs the backbone, and puts the variables
back (TFMOT's quantization wrapper swaps a layer's kernel for its quantized tensor the same way; here past
Keras's attribute tracking, so the layer's weights keep their order). The backbone
keeps its own layers, names and weights, so what the methods deploy is the backbone itself with
:math:`M \odot W` assigned into its kernels (:meth:`MaskedKernels.deploy`): a plain model, zeros in place.

It also counts how the masks move, the *sparse architecture divergence* of Zhou et al. (2021):
:math:`\mathrm{SAD}_{t-1,t} = \sum_l \lVert M_l^{t} - M_l^{t-1} \rVert_1`, the number of mask entries that
flipped between two consecutive training steps, summed over the steps of an epoch into the history's ``sad``
curve by :class:`SadLogger`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from effbench.tf import keras, tf


class MaskedKernels(keras.Model):
    """Trains ``base`` with the kernels of ``layer_names`` replaced, in the forward pass, by
    :meth:`forward_kernel`; subclasses define it and :meth:`masks` (the current mask of each layer)."""

    def __init__(self, base: keras.Model, layer_names: Sequence[str]):
        super().__init__()
        self.base = base
        self.layer_names = tuple(layer_names)
        # The masks of the previous step, and the mask flips counted since the epoch began (SAD).
        self.previous = [
            tf.Variable(tf.zeros_like(base.get_layer(name).kernel), trainable=False) for name in self.layer_names
        ]
        self.sad = tf.Variable(0.0, trainable=False, dtype=tf.float32)

    @abc.abstractmethod
    def forward_kernel(self, index: int, kernel: tf.Variable) -> tf.Tensor:
        """What layer ``layer_names[index]`` computes with in place of its ``kernel`` variable."""

    @abc.abstractmethod
    def masks(self) -> list[tf.Tensor]:
        """The mask (0 / 1, the kernel's shape) each masked layer uses now, in ``layer_names`` order."""

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        layers = [self.base.get_layer(name) for name in self.layer_names]
        kernels = [layer.kernel for layer in layers]
        # Past Keras's attribute tracking, which would drop the variable from the layer's weights and append it
        # again at the end (changing their order, and so the saved file's).
        try:
            for index, (layer, kernel) in enumerate(zip(layers, kernels, strict=True)):
                object.__setattr__(layer, "kernel", self.forward_kernel(index, kernel))
            return self.base(inputs, training=training)
        finally:
            for layer, kernel in zip(layers, kernels, strict=True):
                object.__setattr__(layer, "kernel", kernel)

    def start_counting(self) -> None:
        """Take the current masks as the previous step's, so the first step counts no flip."""
        for previous, mask in zip(self.previous, self.masks(), strict=True):
            previous.assign(mask)

    def train_step(self, data: tuple) -> dict[str, tf.Tensor]:
        flips = tf.constant(0.0)
        for previous, mask in zip(self.previous, self.masks(), strict=True):
            flips += tf.reduce_sum(tf.abs(mask - previous))
            previous.assign(mask)
        self.sad.assign_add(flips)
        return self.update(data)

    def update(self, data: tuple) -> dict[str, tf.Tensor]:
        """One optimisation step (Keras's own by default: every trainable variable of the backbone)."""
        return super().train_step(data)

    def deploy(self) -> keras.Model:
        """The backbone with each masked kernel set to mask times kernel: what the method ships."""
        for name, mask in zip(self.layer_names, self.masks(), strict=True):
            kernel = self.base.get_layer(name).kernel
            kernel.assign(kernel * tf.cast(mask, kernel.dtype))
        return self.base


class SadLogger(keras.callbacks.Callback):
    """Writes the epoch's mask flips (:attr:`MaskedKernels.sad`) into the logs, so the history has a ``sad`` curve."""

    def __init__(self, masked: MaskedKernels):
        super().__init__()
        self.masked = masked

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.masked.start_counting()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.masked.sad.assign(0.0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["sad"] = float(self.masked.sad.numpy())
