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
from effbench.training import TrainContext


def soft_target_loss(student_logits: tf.Tensor, teacher_logits: tf.Tensor, temperature: float) -> tf.Tensor:
    """:math:`T^2 \\mathrm{KL}(\\mathrm{softmax}(z_t/T) \\| \\mathrm{softmax}(z_s/T))`, averaged over the batch."""
    teacher = tf.nn.softmax(teacher_logits / temperature)
    student_log = tf.nn.log_softmax(student_logits / temperature)
    kl = tf.reduce_sum(teacher * (tf.math.log(teacher + 1e-12) - student_log), axis=-1)
    return temperature**2 * tf.reduce_mean(kl)


class Distiller(keras.Model):
    """Trains ``student`` on the distillation loss against a frozen ``teacher``; predicts as the student."""

    def __init__(self, student: keras.Model, teacher: keras.Model, temperature: float, alpha: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.student, self.teacher = student, teacher
        self.teacher.trainable = False
        self.temperature, self.alpha = temperature, alpha
        self.soft_tracker = keras.metrics.Mean(name="soft_loss")

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.student(inputs, training=training)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y = data[0], data[1]
        teacher_logits = tf.stop_gradient(self.teacher(x, training=False))
        with tf.GradientTape() as tape:
            logits = self.student(x, training=True)
            labels = self.compiled_loss(y, logits, regularization_losses=self.student.losses)
            soft = soft_target_loss(logits, teacher_logits, self.temperature)
            loss = (1.0 - self.alpha) * labels + self.alpha * soft
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        self.compiled_metrics.update_state(y, logits)
        self.soft_tracker.update_state(soft)
        return {metric.name: metric.result() for metric in self.metrics}


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
