r"""BiBERT: Bi-Attention ({0, 1} attention weights from the sign of the scores) and Direction-Matching Distillation.

Forward and pseudo-gradient, side by side (sign(0) = +1; scale detached)::

    projections:  y = (alpha_c sign(W)) . sign(x) + b               alpha_c = mean|W| of output unit c
                  dsign(x)/dx := 1[|x| <= 1],  d(alpha_c sign(W))/dW := 1[|W| <= 1]
    attention:    Q_b, K_b, V_b = sign(Q), sign(K), sign(V)          d/dx := 1[|x| <= 1]
                  S   = Q_b K_b^T / sqrt(d)
                  P_b = bool(S) = 1[S > 0]   (no softmax)            dP_b/dS := 1[|S| < 1]
                  O   = P_b V_b

Bi-Attention: a binarized softmax would be almost all zeros (a degenerate, low-entropy attention); the
sign of the scores itself, as {0, 1}, keeps about half of the keys, the binary weights of maximum
information entropy. Both products are 1-bit by 1-bit (``effbench_bits = (1, 1)``); the cost is
:math:`2T^2 d` MACs and one comparison per score.

Direction-Matching Distillation (DMD), the training loss (``run``)::

    L = CE(softmax(z_t), softmax(z_s)) + 0.5 CE(y, z_s)
        + sum over blocks l, X in {Q, K, V}:  || G_s / ||G_s|| - G_t / ||G_t|| ||_2,
    G = X X^T / sqrt(d) per head (the float projections, before the core binarizes them),

the norms taken over the whole batch tensor: the student matches the *directions* of the teacher's
similarity matrices, not their magnitudes, which a binary model cannot reproduce. The teacher is the
float tiny transformer, the upstream of role ``teacher``: the FP32 twin's own training, trained once by
the runner before this method (its time is the record's ``upstream_train_seconds``: BiBERT needs a
full-precision model); the student starts from the same trained weights (BiBERT initialises the binary
model from the fine-tuned float one; this is the operators' ``trained`` start, ``init=scratch`` starts
the student from a fresh initialisation instead) and the teacher is frozen. ``distill=false`` trains on
the labels alone.

What came from where. The abstract names Bi-Attention and DMD. The rules above are from the authors'
code (https://github.com/htqin/BiBERT): ``ZMeanBinaryQuantizer`` (sign with -1 -> 0; gradient zero
where ``|S| >= 1``), the binary Q, K, V and the similarity matrices of ``transformer/modeling_quant.py``,
and ``att_loss_r2b`` / ``direction_matching_distillation`` and the prediction distillation
(soft cross-entropy plus 0.5 times the label cross-entropy) of ``quant_task_glue.py``.

Deviations: the weights are not mean-centred per row before the sign (BiBench's XNOR kernel quantizer,
shared by the operators here, with its unscaled clipped-STE gradient); no hidden-state
distillation (BiBERT's ``intermediate_distill``, not part of DMD); the soft cross-entropy is averaged
over examples, not over classes too; no embedding binarization (the patch embedding stays float, as
the operator protocol keeps the first layer). Small-faithful: tiny transformer on ``digits`` and
``mnist1d``, no BERT pre-training.

Paper: Qin, Ding, Zhang, Yan, Liu, Dang, Liu & Liu, "BiBERT: Accurate Fully Binarized BERT",
ICLR 2022 (https://arxiv.org/abs/2203.06390).
"""

from __future__ import annotations

from typing import Any

from effbench.tf import keras, tf

# isort: split
import larq

from effbench.method import Artifact, MethodRef
from effbench.registry import Paper, TaskSpec, Taxonomy, register_method
from effbench.schedule import EpochSchedule
from effbench.training import TrainContext, TrainingObjective, fit
from suites.architectures._transformer import AttentionCore
from suites.binarization._attention import SignedAttentionCore, windowed_straight_through
from suites.binarization._quantizers import ChannelScaledSign
from suites.binarization.operators import OperatorMethod


@keras.utils.register_keras_serializable(package="effbench")
class BiAttention(SignedAttentionCore):
    """BiBERT's Bi-Attention: :math:`\\pm 1` Q, K, V and {0, 1} weights 1[S > 0] (module docstring)."""

    def probabilities(self, scores: tf.Tensor) -> tf.Tensor:
        return windowed_straight_through(scores, tf.cast(scores > 0, scores.dtype))

    def elementwise_per_score(self) -> int:
        return 1  # the comparison


def similarity(x: tf.Tensor, heads: int) -> tf.Tensor:
    """:math:`XX^T/\\sqrt{d}` per head of a (batch, tokens, dim) tensor: (batch, heads, tokens, tokens)."""
    tokens, dim = x.shape[1], x.shape[2]
    per_head = tf.transpose(tf.reshape(x, [-1, tokens, heads, dim // heads]), [0, 2, 1, 3])
    return tf.matmul(per_head, per_head, transpose_b=True) / (dim // heads) ** 0.5


def direction_matching_loss(student: tf.Tensor, teacher: tf.Tensor, heads: int) -> tf.Tensor:
    """:math:`\\| G_s/\\|G_s\\| - G_t/\\|G_t\\| \\|_2` of the similarity matrices (BiBERT's ``att_loss_r2b``)."""
    g_s, g_t = similarity(student, heads), similarity(teacher, heads)
    return tf.norm(g_s / (tf.norm(g_s) + 1e-12) - g_t / (tf.norm(g_t) + 1e-12))


def attention_taps(model: keras.Model) -> tuple[keras.Model, list[int]]:
    """A model from ``model``'s input to [logits, Q, K, V of every attention core...], and each core's heads."""
    cores = [layer for layer in model.layers if isinstance(layer, AttentionCore)]
    if not cores:
        raise ValueError(f"model '{model.name}' has no attention core to distil")
    tensors = [tensor for core in cores for tensor in core.input]
    return keras.Model(model.input, [model.output, *tensors]), [core.heads for core in cores]


class DirectionMatchingDistiller(TrainingObjective):
    """Trains ``student`` on BiBERT's loss against a frozen ``teacher`` (module docstring); is the student otherwise."""

    tracked = "dmd_loss"

    def __init__(self, student: keras.Model, teacher: keras.Model, label_weight: float = 0.5, **kwargs: Any):
        super().__init__(student, **kwargs)
        self.student_taps, self.heads = attention_taps(student)
        self.teacher_taps, teacher_heads = attention_taps(teacher)
        if teacher_heads != self.heads:
            raise ValueError(f"student attention heads {self.heads} differ from the teacher's {teacher_heads}")
        self.teacher_taps.trainable = False
        self.label_weight = label_weight

    def distillation_loss(self, student_outputs: list[tf.Tensor], teacher_outputs: list[tf.Tensor]) -> tf.Tensor:
        """Prediction distillation plus DMD over Q, K, V of every block."""
        soft = tf.reduce_mean(
            keras.losses.categorical_crossentropy(
                tf.nn.softmax(teacher_outputs[0]), student_outputs[0], from_logits=True
            )
        )
        heads = [h for h in self.heads for _ in range(3)]
        dmd = tf.add_n([
            direction_matching_loss(s, t, h)
            for s, t, h in zip(student_outputs[1:], teacher_outputs[1:], heads, strict=True)
        ])  # fmt: skip
        return soft, dmd

    def objective(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        teacher_outputs = [tf.stop_gradient(t) for t in self.teacher_taps(x, training=False)]
        student_outputs = self.student_taps(x, training=training)
        soft, dmd = self.distillation_loss(student_outputs, teacher_outputs)
        return student_outputs[0], soft + self.label_weight * self.supervised_loss(y, student_outputs[0]) + dmd, dmd


@register_method(
    "bibert",
    suite="binarization",
    kind="operator",
    paper=Paper("BiBERT: Accurate Fully Binarized BERT", 2022, "https://arxiv.org/abs/2203.06390"),
    summary="Bi-Attention ({0,1} weights = 1[Q_b K_b^T > 0], no softmax) + direction-matching distillation "
    "of QQ^T, KK^T, VV^T from the trained float twin as teacher",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
    scale="small-faithful",
)
class BiBERT(OperatorMethod):
    """Options: ``distill`` (distil from the trained float twin, true; false trains on labels only),
    ``backbone``."""

    default_options = {**OperatorMethod.default_options, "backbone": "tiny-transformer", "distill": True}

    def input_quantizer(self) -> larq.quantizers.SteSign:
        return larq.quantizers.SteSign(clip_value=1.0)

    def kernel_quantizer(self) -> ChannelScaledSign:
        return ChannelScaledSign()

    def replace_layer(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if type(layer) is AttentionCore:
            return BiAttention(layer.heads, name=layer.name)
        return None

    def requires(self, task: TaskSpec) -> dict[str, MethodRef]:
        """The operators' ``trained`` start and, to distil from, the teacher: both the FP32 twin's training,
        shared with the plan's twin (trained once)."""
        teacher = {"teacher": MethodRef.parse(self.backbone(task.default_backbone))} if self.options["distill"] else {}
        return {**super().requires(task), **teacher}

    def run(self, context: TrainContext) -> Artifact:
        if not self.options["distill"]:
            return super().run(context)
        teacher = context.upstream["teacher"].model
        student = self.initial_model(context)
        distiller = DirectionMatchingDistiller(student, teacher, name=f"{student.name}_dmd")
        callbacks = [EpochSchedule(context.recipe.epochs), *self.callbacks(student, context)]
        history, seconds = fit(distiller, context, callbacks=callbacks)
        return Artifact(model=student, history=history, train_seconds=seconds)
