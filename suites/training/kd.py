r"""Knowledge distillation: train any method's model against a trained teacher's softened outputs.

For a student's logits :math:`z_s`, the frozen teacher's logits :math:`z_t`, the label :math:`y`, the
temperature :math:`T` (option ``temperature``) and the soft-target weight :math:`\alpha` (``alpha``)::

    L = (1 - alpha) * CE(y, softmax(z_s))
        + alpha * T^2 * KL( softmax(z_t / T) || softmax(z_s / T) )

    dL/dz_s (soft term) = alpha * T * (softmax(z_s / T) - softmax(z_t / T))     (no gradient to the teacher)

The :math:`T^2` factor keeps the soft term's gradient on the scale of the hard term's as :math:`T` changes
(Hinton et al., section 2). The label loss is the recipe's (the task's cross-entropy) and the student keeps
its own regularization losses; validation and the deployed model are the student alone.

A training modifier (:mod:`effbench.modifiers`): ``--method resnet-cifar+kd:teacher=vgg-small`` trains
``resnet-cifar`` with this loss. The teacher (option ``teacher``, a method reference) is an upstream of role
``teacher``: trained once by the runner on the same task, seed and budget, and shared with every run that
names it; the training-cost track reports it as ``upstream_train_seconds``.

Paper: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", NIPS 2014 Deep Learning
Workshop, 2015 (https://arxiv.org/abs/1503.02531). Deviation: none in the loss; the paper's temperature
and weights were tuned per task, the defaults here (T = 4, alpha = 0.9) are common choices, not the paper's.
"""

from __future__ import annotations

from typing import Any, ClassVar

from effbench.method import MethodRef
from effbench.modifiers import Modifier, register_modifier
from effbench.registry import Paper, RegistryError, TaskSpec
from effbench.tf import keras, tf
from effbench.training import TrainContext, TrainingObjective


def soft_target_loss(student_logits: tf.Tensor, teacher_logits: tf.Tensor, temperature: float) -> tf.Tensor:
    """:math:`T^2 \\mathrm{KL}(\\mathrm{softmax}(z_t/T) \\| \\mathrm{softmax}(z_s/T))`, averaged over the batch."""
    teacher = tf.nn.softmax(teacher_logits / temperature)
    student_log = tf.nn.log_softmax(student_logits / temperature)
    kl = tf.reduce_sum(teacher * (tf.math.log(teacher + 1e-12) - student_log), axis=-1)
    return temperature**2 * tf.reduce_mean(kl)


class Distiller(TrainingObjective):
    """Trains ``student`` on the distillation loss against a frozen ``teacher``; is the student otherwise."""

    tracked = "soft_loss"

    def __init__(self, student: keras.Model, teacher: keras.Model, temperature: float, alpha: float, **kwargs: Any):
        super().__init__(student, **kwargs)
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature, self.alpha = temperature, alpha

    def objective(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        teacher_logits = tf.stop_gradient(self.teacher(x, training=False))
        logits = self.deployed(x, training=training)
        soft = soft_target_loss(logits, teacher_logits, self.temperature)
        return logits, (1.0 - self.alpha) * self.supervised_loss(y, logits) + self.alpha * soft, soft


@register_modifier(
    "kd",
    summary="distillation: (1-alpha) CE(y, z_s) + alpha T^2 KL(softmax(z_t/T) || softmax(z_s/T)) against a "
    "trained teacher",
    paper=Paper("Distilling the Knowledge in a Neural Network", 2015, "https://arxiv.org/abs/1503.02531"),
)
class KnowledgeDistillation(Modifier):
    """Options: ``teacher`` (a method reference, required), ``temperature`` (T, 4), ``alpha`` (0.9)."""

    default_options: ClassVar[dict[str, Any]] = {"teacher": None, "temperature": 4.0, "alpha": 0.9}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if not self.options["teacher"]:
            raise RegistryError("modifier 'kd' needs a teacher: write +kd:teacher=<method>, e.g. +kd:teacher=vgg-small")
        if not self.options["temperature"] > 0 or not 0 <= self.options["alpha"] <= 1:
            raise RegistryError(
                f"modifier 'kd': temperature must be > 0 and alpha in [0, 1], not {self.options['temperature']} "
                f"and {self.options['alpha']}"
            )

    def requires(self, task: TaskSpec) -> dict[str, MethodRef]:
        return {"teacher": MethodRef.parse(str(self.options["teacher"]))}

    def training_model(self, model: keras.Model, context: TrainContext) -> keras.Model:
        teacher = context.upstream["teacher"].model
        return Distiller(model, teacher, float(self.options["temperature"]), float(self.options["alpha"]))
