r"""FCN, small-faithful: an exponential and a linear cross network over the embedded fields, logits fused by their
mean, trained with Tri-BCE (``fcn-cross``).

Mechanism. Each of the F categorical ids is looked up in one embedding table (``vocabulary`` rows, ``dim``
columns, shared by all fields: the task's ids carry per-field offsets) and the embeddings are concatenated to
:math:`x_0 \in \mathbb{R}^d`, d = F ``dim``, laid out as the official code lays it out: the first half of every
field's embedding, then the second halves (real-valued inputs, without a vocabulary: :math:`x_0` is the flattened
input). Two explicit cross networks read :math:`x_0`; for layer l of either, with :math:`\odot` elementwise::

    Self-Mask   h   = W_l x_l                 W_l: (d, d/2), no bias              "ecn{l}_kernel", "lcn{l}_kernel"
                m   = ReLU(LayerNorm(h))      the mask: 0 where the normalised h is < 0  "..._mask_norm"
                c_l = [h, h * m]              (d,): half the parameters of a d x d W
    ECN         x_{l+1} = x_l * (c_l + b_l) + x_l     interactions of x_0 of order up to 2^l after l layers
    LCN         x_{l+1} = x_0 * (c_l + b_l) + x_l     order up to l + 1 after l layers
                (b_l: (d,) "..._bias"; dropout after every layer, `ecn_dropout`, `lcn_dropout`)
    logits      y_E = 2 K_E^T x_E + beta,  y_L = 2 K_L^T x_L + beta,  y = (y_E + y_L) / 2 = K^T [x_E; x_L] + beta

The fused logits are one Dense layer, ``logits``, on the concatenated final states (kernel K = [K_E; K_L]): the
mean of two linear heads is a linear head, so the deployed model ends in a ``logits`` Dense layer as every
backbone does; the branch logits y_E, y_L, which only training reads, are the two halves of its kernel, doubled.

With the mask held open (m = 1) and every W_l averaging, the ECN's output after l layers is a polynomial of degree
2^l in a scalar x_0 and the LCN's of degree l + 1 (tested with finite differences).

Tri-BCE, the training loss, with L, L_E, L_L the cross-entropies of y, y_E, y_L::

    L_Tri = L + w_E L_E + w_L L_L,    w_E = max(L_E - L, 0),  w_L = max(L_L - L, 0)

each branch supervised, the more where it lags the fused prediction; gradients flow through the weights too, as
in the official code. On ``ctr-synth`` the model outputs two logits (no click, click), as the task's head expects,
and their softmax cross-entropy is the binary cross-entropy of their difference: this is Tri-BCE; on a
classification task the same with the categorical cross-entropy. :meth:`FcnCross.run` trains through
:class:`TriBCETrainer` (as ``kd``'s distiller does: a training-only wrapper whose ``train_step`` computes the loss,
validating and predicting as the FCN); its history logs ``loss`` (L, what ``val_loss`` reports for the fused
prediction) and ``tri_bce`` (the objective). A training modifier (``+kd``) wraps the trainer, and its own loss
then replaces Tri-BCE.

Paper: Honghao Li et al., "FCN: Fusing Exponential and Linear Cross Network for Click-Through Rate Prediction",
2024, https://arxiv.org/abs/2407.13349 (first posted as "DCNv3"). Details beyond
the abstract follow the official code, FuxiCTR's ``model_zoo/DCNv3/src/DCNv3.py`` (reczoo/FuxiCTR): W_l of width
d/2 without bias, the mask from LayerNorm then ReLU of h, b_l initialised U(0, 1), 4 layers per network, dropout
0.1 (ECN) and 0.3 (LCN), no batch norm, one head (its defaults), Xavier-normal kernels, embeddings normal with
standard deviation 10^-4 (FuxiCTR's ``FeatureEmbedding`` default), the Tri-BCE weights as above.

Scaled down (small-faithful): ``ctr-synth``'s 10 synthetic fields and ``dim`` 16 instead of the paper's public
CTR datasets. Deviations: (1) the two heads share their bias beta (the fused logits are what they are; only the
branch logits' offsets are tied); (2) heads of ``num_classes`` outputs (two on CTR) instead of one click logit,
equivalent up to a redundant column; (3) Keras's Glorot-normal is a truncated normal; (4) LayerNorm's epsilon is
PyTorch's 1e-5. Embedding and cross widths must be even (the Self-Mask halves them).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from effbench.method import ArchitectureMethod, Artifact
from effbench.registry import Paper, TaskSpec, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext, TrainingObjective, fit
from suites.architectures._layers import model_name

L = keras.layers
Branch = Literal["ecn", "lcn"]
# The Concatenate layer of the two networks' final states [x_E; x_L], which the logits layer reads.
BRANCHES = "branches"
LAYER_NORM_EPSILON = 1e-5
EMBEDDING_STD = 1e-4


@keras.utils.register_keras_serializable(package="effbench")
class CrossBias(keras.layers.Layer):
    """Adds a learned vector b_l, one value per feature, initialised U(0, 1) as the official code does."""

    def build(self, input_shape: tf.TensorShape) -> None:
        self.bias = self.add_weight(
            name="bias", shape=(input_shape[-1],), initializer=keras.initializers.RandomUniform(0.0, 1.0)
        )

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs + self.bias

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        return 0, math.prod(outputs[0][1:])  # one add per element


def self_mask(x: tf.Tensor, name: str) -> tf.Tensor:
    """c = [h, h * ReLU(LayerNorm(h))] with h = W x, W of width d / 2 (the Self-Mask)."""
    width = x.shape[-1]
    if width % 2:
        raise ValueError(f"fcn-cross: the Self-Mask halves the cross width, which must be even; it is {width}")
    h = L.Dense(width // 2, use_bias=False, kernel_initializer="glorot_normal", name=f"{name}_kernel")(x)
    mask = L.ReLU()(L.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{name}_mask_norm")(h))
    return L.Concatenate()([h, L.Multiply()([h, mask])])


def cross_network(x0: tf.Tensor, depth: int, branch: Branch, dropout: float) -> tf.Tensor:
    """The final state of the exponential (``ecn``: x_l multiplies) or linear (``lcn``: x_0 does) cross network."""
    x = x0
    for index in range(depth):
        name = f"{branch}{index}"
        crossed = CrossBias(name=f"{name}_bias")(self_mask(x, name))
        x = L.Add()([L.Multiply()([x if branch == "ecn" else x0, crossed]), x])
        if dropout > 0:
            x = L.Dropout(dropout)(x)
    return x


def tri_bce(fused_loss: tf.Tensor, exponential_loss: tf.Tensor, linear_loss: tf.Tensor) -> tf.Tensor:
    """L + w_E L_E + w_L L_L, each branch's weight its loss's excess over the fused one's (0 where below)."""
    exponential_weight = tf.nn.relu(exponential_loss - fused_loss)
    linear_weight = tf.nn.relu(linear_loss - fused_loss)
    return fused_loss + exponential_weight * exponential_loss + linear_weight * linear_loss


class TriBCETrainer(TrainingObjective):
    """Trains an FCN on Tri-BCE; predicts and validates as the FCN (whose layers it trains in place)."""

    tracked = "tri_bce"

    def __init__(self, fcn: keras.Model, **kwargs: Any):
        super().__init__(fcn, **kwargs)
        self.branches = keras.Model(fcn.inputs, fcn.get_layer(BRANCHES).input)

    def branch_logits(self, x: tf.Tensor, training: bool | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(fused y, exponential y_E, linear y_L) logits of one forward pass."""
        exponential_state, linear_state = self.branches(x, training=training)
        head = self.deployed.get_layer("logits")
        width = exponential_state.shape[-1]
        exponential = 2.0 * tf.matmul(exponential_state, head.kernel[:width]) + head.bias
        linear = 2.0 * tf.matmul(linear_state, head.kernel[width:]) + head.bias
        return (exponential + linear) / 2.0, exponential, linear

    def objective(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Tri-BCE of the three logits under the compiled loss (the task's cross-entropy), plus regularization."""
        logits = self.branch_logits(x, training=training)
        loss = keras.losses.get(self.loss)
        objective = tri_bce(*(loss(y, z) for z in logits))
        if self.deployed.losses:
            objective += tf.add_n(self.deployed.losses)
        return logits[0], objective, objective


@register_method(
    "fcn-cross",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "FCN: Fusing Exponential and Linear Cross Network for Click-Through Rate Prediction",
        2024,
        "https://arxiv.org/abs/2407.13349",
    ),
    summary="small-faithful: embeddings -> exponential (order 2^l) and linear (order l+1) cross networks with "
    "Self-Mask, logits fused by their mean, trained with Tri-BCE; no DNN",
    taxonomy=Taxonomy(applied="architecture"),
    scale="small-faithful",
)
class FcnCross(ArchitectureMethod):
    """Options: ``dim`` (16), ``ecn_layers`` / ``lcn_layers`` (4 / 4), ``ecn_dropout`` / ``lcn_dropout``
    (0.1 / 0.3), ``vocabulary`` (0: the task's)."""

    default_options = {
        "dim": 16, "ecn_layers": 4, "lcn_layers": 4, "ecn_dropout": 0.1, "lcn_dropout": 0.3, "vocabulary": 0,
    }  # fmt: skip

    def build_for(self, spec: TaskSpec) -> keras.Model:
        return self.build_with(spec.input_shape, spec.num_classes, self.options["vocabulary"] or spec.vocabulary)

    def run(self, context: TrainContext) -> Artifact:
        model = self.build_for(context.task.spec)
        history, seconds = fit(TriBCETrainer(model), context)
        return Artifact(model=model, history=history, train_seconds=seconds)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        return self.build_with(input_shape, num_classes, self.options["vocabulary"])

    def build_with(self, input_shape: tuple[int, ...], num_classes: int, vocabulary: int) -> keras.Model:
        """The FCN on ids of ``vocabulary`` values, or on real values where it is 0."""
        inputs = keras.Input(shape=input_shape)
        x0 = self.embedded(inputs, vocabulary) if vocabulary else L.Flatten()(inputs)
        exponential = cross_network(x0, self.options["ecn_layers"], "ecn", self.options["ecn_dropout"])
        linear = cross_network(x0, self.options["lcn_layers"], "lcn", self.options["lcn_dropout"])
        states = L.Concatenate(name=BRANCHES)([exponential, linear])
        logits = L.Dense(num_classes, kernel_initializer="glorot_normal", name="logits")(states)
        return keras.Model(inputs, logits, name=model_name(self.spec.slug, self.options))

    def embedded(self, ids: tf.Tensor, vocabulary: int) -> tf.Tensor:
        """x_0: the fields' embeddings, the first half of each field's, then the second halves."""
        fields, dim = math.prod(ids.shape[1:]), self.options["dim"]
        if dim % 2:
            raise ValueError(f"fcn-cross: dim must be even (x_0 takes each field's embedding in halves), not {dim}")
        initializer = keras.initializers.RandomNormal(stddev=EMBEDDING_STD)
        # Ids arrive as float32 (as every task input does); the layer casts them to int32.
        embedded = L.Embedding(vocabulary, dim, embeddings_initializer=initializer, name="embedding")(ids)
        halves = L.Permute((2, 1, 3))(L.Reshape((fields, 2, dim // 2))(embedded))
        return L.Flatten()(halves)
