r"""A stack of residual conv layers of one width, deep (composed) or shallow (in parallel): the block that
``shallow-again`` builds and ``deep-wide-grid`` sweeps (a private module: the registry skips it).

With :math:`f_i(x) = \mathrm{ReLU}(\mathrm{BN}(W_i * x))` (a k x k conv from ``width`` to ``width`` channels,
layer :math:`i` of ``depth``), the two forms of the stack are

.. math::

    \text{deep:}\quad x_{i+1} = x_i + f_i(x_i),\quad i = 0 \ldots L - 1
    \qquad\qquad
    \text{shallow:}\quad y = x_0 + \sum_{i=0}^{L-1} f_i(x_0)

The deep stack expands like a Taylor series, :math:`x_L = x_0 + \sum_i f_i(x_0) + \sum_{i<j} f_j'(x_0) f_i(x_0)
+ \ldots`; the shallow one keeps its first two terms: one broad layer of all L convs side by side, each reading
the stack's input, summed with it. Both have the same layers (the same names and weights, so one's weights load
into the other) and so the same parameters and MACs; what differs is the wiring, so the deep one runs its L convs
one after the other and the shallow one can run them at once (one wide layer: a single conv of L x ``width``
filters, BN and ReLU, then a sum over its L groups of channels, would compute the same; see :func:`residual_stack`
for why it is built as L convs).

Around the stack: a stem (a k x k conv-BN-ReLU from the input's channels to ``width``, since the stack needs one
width throughout) before it, global average pooling and the ``logits`` Dense layer after it. No downsampling:
the stack runs at the input's resolution. Vectors (L,) are laid out as (L, 1, 1) with k x 1 kernels (``Geometry``).
"""

from __future__ import annotations

from effbench.registry import Paper
from effbench.tf import keras, tf
from suites.architectures._layers import Geometry, conv_bn_act, logits_model

# The paper of both methods that build the stack.
PAPER = Paper("Make Deep Networks Shallow Again", 2023, "https://arxiv.org/abs/2309.08414")
FORMS = ("deep", "shallow")


def check_form(slug: str, form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"{slug} form must be one of {', '.join(FORMS)}; got '{form}'")


def residual_layer_name(index: int) -> str:
    """The name prefix of the stack's layer ``index`` (``layer0_conv``, ``layer0_bn``, ``layer0_relu``)."""
    return f"layer{index}"


def residual_stack(x: tf.Tensor, depth: int, kernel: tuple[int, int], form: str) -> tf.Tensor:
    """``depth`` residual conv layers of ``x``'s width, composed (``deep``) or side by side (``shallow``)."""
    width = int(x.shape[-1])
    if form == "deep":
        for index in range(depth):
            x = keras.layers.Add(name=f"{residual_layer_name(index)}_add")(
                [x, conv_bn_act(x, width, kernel, name=residual_layer_name(index))]
            )
        return x
    # Separate convs, not one conv of depth * width filters split afterwards: the layers keep the deep stack's
    # names and shapes, so the two forms count and load alike.
    branches = [conv_bn_act(x, width, kernel, name=residual_layer_name(index)) for index in range(depth)]
    return keras.layers.Add(name="stack_add")([x, *branches])


def residual_stack_model(
    input_shape: tuple[int, ...], num_classes: int, depth: int, width: int, kernel: int, form: str, name: str
) -> keras.Model:
    """Stem, the residual stack of ``depth`` layers of ``width`` channels in ``form``, pooling, logits."""
    if depth < 1 or width < 1 or kernel < 1:
        raise ValueError(f"depth, width and kernel must be positive; got {depth}, {width}, {kernel}")
    geometry = Geometry(tuple(input_shape))
    inputs, x = geometry.inputs()
    x = conv_bn_act(x, width, geometry.kernel(kernel), name="stem")
    x = residual_stack(x, depth, geometry.kernel(kernel), form)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return logits_model(inputs, x, num_classes, name)
