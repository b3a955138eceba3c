r"""UNet++, small-faithful: nested U-Nets sharing one encoder, dense skip pathways, deep supervision, pruning.

Mechanism (Zhou et al., section III). Nodes :math:`X^{i,j}` sit on a grid: level i (resolution 1 / 2^i,
``width`` 2^i channels), column j; the network of depth L (option ``depth``) has the nodes with i + j <= L,
(L + 1)(L + 2) / 2 of them. Each node is a conv unit H (conv3x3-BN-ReLU twice) of

.. math::

    X^{i,0} = H(\mathrm{pool}(X^{i-1,0})),\qquad X^{0,0} = H(\text{input})

    X^{i,j} = H\big([\mathrm{Up}(X^{i+1,j-1}),\ X^{i,0}, X^{i,1}, \dots, X^{i,j-1}]\big),\quad j \ge 1

where pool is a 2x2 max pool, Up a 2x2 transposed convolution with stride 2 (to level i's width) and [ ] a
concatenation along channels: the skip from encoder node :math:`X^{i,0}` to the decoder reaches it through
the dense block of intermediate nodes :math:`X^{i,1..j-1}`, which narrows the semantic gap between the two.
The first column :math:`X^{0..L,0}` is the encoder; the nodes :math:`X^{0,1}, \dots, X^{0,L}` are the outputs
of U-Nets of depths 1..L, nested inside each other and sharing the encoder.

As a diagram in words, for L = 2: X00 -> pool -> X10 -> pool -> X20; X01 = H[Up X10, X00];
X11 = H[Up X20, X10]; X02 = H[Up X11, X00, X01].

Deep supervision (``deep_supervision``, on by default): a 1x1 conv head turns each :math:`X^{0,j}` (j = 1..L)
into per-pixel logits, and the training loss is the mean over the heads of each head's cross-entropy (the
paper's per-head loss with equal weights, averaged rather than summed: a constant factor 1 / L). The core's
``fit`` trains one output against one label, and every track measures one output, so the heads train through
:class:`DeeplySupervised`, a training wrapper whose steps compute the head losses and whose predictions are the
deployed model's, and the deployed model has one output: by ``output``, ``average`` (the paper's "accurate
mode": the mean of the heads' logits) or ``last`` (the deepest head alone).

Pruning at inference (``prune_level`` l, 1..L; 0, the default, is L): the full network is trained with deep
supervision as above, and the deployed model is the sub-network up to :math:`X^{0,l}`, the nodes with
i + j <= l, with the heads 1..l (``average``) or head l (``last``): UNet++ L^l of the paper, whose cost falls
with l. Pruning needs deep supervision (without it the shallower heads are never trained).

Heads by task kind (:mod:`suites.architectures._dense`): segmentation as above (``seg-shapes``); any other kind
gets the classification :meth:`build`, the encoder :math:`X^{0..L,0}`, global average pooling of
:math:`X^{L,0}` and a ``logits`` Dense layer (vectors (L,) as (L, 1, 1) with k x 1 kernels). No
super-resolution head.

Paper: Zhou, Rahman Siddiquee, Tajbakhsh & Liang, "UNet++: Redesigning Skip Connections to Exploit Multiscale
Features in Image Segmentation", IEEE TMI 2019 (https://arxiv.org/abs/1912.05074); the official Keras code
(MrGiovanni/UNetPlusPlus, ``keras/helper_functions.py`` ``UNetPlusPlus``) fixes the details above: the
transposed 2x2 convolution, the concatenation order [up, same-level nodes], heads on X^{0,1..4}.

Scale ``small-faithful``: depth 4 (the paper's L = 4, so 64x64 inputs reach 4x4 at X^{4,0}) and ``width`` 8
(level widths 8, 16, 32, 64, 128; the paper's 32 ... 512). Deviations:

- the conv unit is conv (no bias)-BN-ReLU twice, as the official code's backbone version
  (``segmentation_models/xnet``, ``decoder_use_batchnorm=True``), not the first version's conv-ReLU with
  dropout 0.5 and L2 weight decay 1e-4: batch norm trains from scratch in the short budgets here;
- softmax cross-entropy over the task's classes per head instead of the paper's per-class sigmoid with
  binary cross-entropy + Dice;
- an axis too short or odd to halve is not pooled (nor upsampled back): nothing changes on 64x64 inputs;
- one run deploys one pruning level: a sweep of l trains the (same) full network once per level;
- with a training modifier (``+kd``, ...), the modifier's loss sees the deployed output only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext, TrainingObjective, fit
from suites.architectures._dense import DenseArchitecture, halving_step
from suites.architectures._layers import Geometry, conv_bn_act, logits_model, model_name

OUTPUTS = ("average", "last")


@dataclass(frozen=True)
class NestedNetwork:
    """The built grid: its input and its heads' logits, on X^{0,1..L} (head j at index j - 1) where deeply
    supervised, else on X^{0,L} alone."""

    inputs: tf.Tensor
    heads: list[tf.Tensor]


class DeeplySupervised(TrainingObjective):
    """Trains a network through all its heads; its metrics, ``loss`` and predictions are its deployed model's.

    ``heads`` maps the input to ``[head_1, ..., head_L, deployed output]``. The objective of a step is the
    compiled loss of all heads at once, each head's logits against the same labels: for a mean-reduced loss (the
    cross-entropy of every pixel), the mean of the heads' losses, logged as ``heads_loss``.
    """

    tracked = "heads_loss"

    def __init__(self, heads: keras.Model, deployed: keras.Model, **kwargs: Any):
        super().__init__(deployed, name=f"{deployed.name}-deeply-supervised", **kwargs)
        self.heads = heads

    def objective(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        *heads, prediction = self.heads(x, training=training)
        # The heads stacked along the batch axis, the labels repeated: one mean over every head's pixels.
        loss = self.supervised_loss(tf.concat([y] * len(heads), axis=0), tf.concat(heads, axis=0))
        return prediction, loss, loss


@register_method(
    "unetpp",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "UNet++: Redesigning Skip Connections to Exploit Multiscale Features in Image Segmentation",
        2019,
        "https://arxiv.org/abs/1912.05074",
    ),
    summary="small-faithful UNet++: nested U-Nets X^{i,j} with dense skip pathways, deep supervision on "
    "X^{0,1..L} (heads averaged), pruning to the sub-network up to X^{0,l} at inference",
    taxonomy=Taxonomy(applied="architecture"),
    scale="small-faithful",
)
class UnetPlusPlus(DenseArchitecture):
    default_options = {"depth": 4, "width": 8, "deep_supervision": True, "output": "average", "prune_level": 0}

    def __init__(self, **options: Any):
        super().__init__(**options)
        for name in ("depth", "width"):
            value = self.options[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"unetpp option {name} is {value!r}; expected a positive integer")
        depth, level = self.options["depth"], self.options["prune_level"]
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= depth:
            raise ValueError(f"unetpp prune_level is {level!r}; expected 1..{depth} (the depth), or 0 for none")
        if self.options["output"] not in OUTPUTS:
            raise ValueError(f"unetpp output is {self.options['output']!r}; expected one of {', '.join(OUTPUTS)}")
        if not self.options["deep_supervision"] and self.deployed_level != depth:
            raise ValueError("unetpp prune_level needs deep_supervision: without it the shallower heads are untrained")

    @property
    def deployed_level(self) -> int:
        """The deployed sub-network's level l: the nodes with i + j <= l."""
        return self.options["prune_level"] or self.options["depth"]

    def run(self, context: TrainContext) -> Artifact:
        spec = context.task.spec
        if spec.kind != "segmentation":
            return super().run(context)
        network = self.network(spec.input_shape, spec.num_classes)
        deployed = self.deployed(network)
        if not self.options["deep_supervision"]:
            history, seconds = fit(deployed, context)
        else:
            heads = keras.Model(network.inputs, [*network.heads, deployed.output], name=f"{deployed.name}-heads")
            history, seconds = fit(DeeplySupervised(heads, deployed), context)
        return Artifact(model=deployed, history=history, train_seconds=seconds)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        encoder = [self.unit(x, 0, 0, geometry)]
        for level in range(1, self.options["depth"] + 1):
            pooled, _ = self.pool(encoder[-1], level, geometry)
            encoder.append(self.unit(pooled, level, 0, geometry))
        features = keras.layers.GlobalAveragePooling2D()(encoder[-1])
        return logits_model(inputs, features, num_classes, model_name(self.spec.slug, self.options))

    def segmenter(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        """The deployed model: the sub-network up to X^{0,l} (l = ``prune_level``), its heads combined."""
        return self.deployed(self.network(input_shape, num_classes))

    def network(self, input_shape: tuple[int, ...], num_classes: int) -> NestedNetwork:
        """Every node X^{i,j} (i + j <= L) and, where deeply supervised, a head on each X^{0,j}."""
        geometry = Geometry(tuple(input_shape))
        inputs = keras.Input(shape=input_shape)
        depth = self.options["depth"]
        nodes = {(0, 0): self.unit(inputs, 0, 0, geometry)}
        steps = {}
        for level in range(1, depth + 1):
            pooled, steps[level] = self.pool(nodes[level - 1, 0], level, geometry)
            nodes[level, 0] = self.unit(pooled, level, 0, geometry)
        # Column by column: X^{i,j} needs X^{i+1,j-1} from the previous column.
        for column in range(1, depth + 1):
            for level in range(depth - column + 1):
                up = self.up(nodes[level + 1, column - 1], level, column, steps[level + 1])
                same_level = [nodes[level, previous] for previous in range(column)]
                skips = keras.layers.Concatenate(name=f"x{level}_{column}_skips")([up, *same_level])
                nodes[level, column] = self.unit(skips, level, column, geometry)
        supervised = range(1, depth + 1) if self.options["deep_supervision"] else [depth]
        heads = [keras.layers.Conv2D(num_classes, 1, name=f"head{column}")(nodes[0, column]) for column in supervised]
        return NestedNetwork(inputs, heads)

    def deployed(self, network: NestedNetwork) -> keras.Model:
        """The sub-network up to X^{0,l}: head l, or the mean of heads 1..l (``output``)."""
        level = self.deployed_level
        if not self.options["deep_supervision"]:
            logits = network.heads[0]
        elif self.options["output"] == "last" or level == 1:
            logits = network.heads[level - 1]
        else:
            logits = keras.layers.Average(name=f"heads1_{level}_mean")(network.heads[:level])
        return keras.Model(network.inputs, logits, name=model_name(f"{self.spec.slug}-segmentation", self.options))

    def unit(self, x: tf.Tensor, level: int, column: int, geometry: Geometry) -> tf.Tensor:
        """H: conv3x3-BN-ReLU twice, ``width`` 2^level channels; layers named ``x<i>_<j>a_...``, ``x<i>_<j>b_...``."""
        channels = self.options["width"] * 2**level
        x = conv_bn_act(x, channels, geometry.kernel(3), name=f"x{level}_{column}a")
        return conv_bn_act(x, channels, geometry.kernel(3), name=f"x{level}_{column}b")

    @staticmethod
    def pool(x: tf.Tensor, level: int, geometry: Geometry) -> tuple[tf.Tensor, tuple[int, int]]:
        """The 2x2 max pool into ``level`` (along the axes that halve exactly), and its step."""
        step = halving_step(geometry, x)
        if step == (1, 1):
            return x, step
        return keras.layers.MaxPooling2D(pool_size=step, strides=step, name=f"x{level}_0_pool")(x), step

    def up(self, x: tf.Tensor, level: int, column: int, step: tuple[int, int]) -> tf.Tensor:
        """Up(X^{level+1, column-1}): a transposed conv, kernel and stride ``step``, to ``level``'s width."""
        channels = self.options["width"] * 2**level
        return keras.layers.Conv2DTranspose(channels, step, strides=step, name=f"x{level}_{column}_up")(x)
