r"""Epoch schedules of methods: the state lives in the model, a callback advances it from the recipe.

Several methods change with training progress: ReCU anneals its clamp quantile :math:`\tau`, ReSTE its
exponent :math:`o`, FDA the number of Fourier terms and the weight of its noise adaptation, BiPer its
frequency stage. Each such layer (a Keras layer or a larq quantizer, which is a Keras layer) mixes in
:class:`EpochScheduled`: it holds two non-trainable scalars, ``schedule_epoch`` :math:`e` and
``schedule_epochs`` :math:`E`, and computes its schedule from them, for example from
:attr:`EpochScheduled.progress` :math:`= e / E \in [0, 1)`. Being weights, they are saved with the model
(``.keras`` and SavedModel alike), so a reloaded model quantizes exactly as it did in its last training
epoch, and they are graph variables, so a compiled ``tf.function`` reads the current value without a
retrace.

:class:`EpochSchedule` is the Keras callback that sets them: at the start of every epoch :math:`e` of
``fit`` it assigns :math:`(e, E)` to every :class:`EpochScheduled` module of the model, :math:`E` being
the recipe's epoch count. :class:`suites.binarization.operators.OperatorMethod` adds it to every training.
"""

from __future__ import annotations

from effbench.tf import keras, tf


class EpochScheduled:
    """Mixin for a Keras layer whose behaviour follows the training epoch (see the module docstring).

    Call :meth:`build_schedule` from the layer's ``build``; read :attr:`progress` (or the two weights)
    in ``call``.
    """

    schedule_epoch: tf.Variable
    schedule_epochs: tf.Variable

    def build_schedule(self) -> None:
        self.schedule_epoch = self.add_weight(name="schedule_epoch", shape=(), initializer="zeros", trainable=False)
        self.schedule_epochs = self.add_weight(name="schedule_epochs", shape=(), initializer="ones", trainable=False)

    def set_epoch(self, epoch: int, epochs: int) -> None:
        if epochs < 1 or not 0 <= epoch < epochs:
            raise ValueError(f"epoch {epoch} of {epochs}: expected 0 <= epoch < epochs")
        self.schedule_epoch.assign(float(epoch))
        self.schedule_epochs.assign(float(epochs))

    @property
    def progress(self) -> tf.Tensor:
        """:math:`e / E`: 0 in the first epoch, :math:`(E - 1)/E` in the last."""
        return self.schedule_epoch / self.schedule_epochs


def scheduled_modules(model: keras.Model) -> list[EpochScheduled]:
    """Every :class:`EpochScheduled` layer or quantizer inside ``model``, nested ones included."""
    return [module for module in model.submodules if isinstance(module, EpochScheduled)]


class EpochSchedule(keras.callbacks.Callback):
    """Sets ``(epoch, epochs)`` on every scheduled module of the model at the start of each epoch."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for module in scheduled_modules(self.model):
            module.set_epoch(epoch, self.epochs)
