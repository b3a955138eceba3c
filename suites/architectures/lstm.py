r"""A recurrent backbone: an LSTM classifier written out in Dense layers (``lstm``).

The reference recurrent model of the sequence tasks (``mnist1d-seq``, ``digits`` rows), and the backbone the
pruning suite's ``rnn-sparsity`` prunes. The LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et
al. 2000, as Keras's ``LSTM`` computes it) reads the input's first axis as time: an ``(L,)`` vector is ``L`` steps
of one value (``mnist1d``), a ``(T, F)`` sequence ``T`` steps of ``F`` (``mnist1d-seq``), an ``(H, W, C)`` image
``H`` rows of ``W * C`` values (``digits``: 8 steps of 8). With :math:`x_t \in \mathbb{R}^F`, hidden size :math:`H`
(option ``units``), :math:`h_0 = c_0 = 0`::

    z_t = x_t W + b + h_{t-1} U                  W: (F, 4H) "lstm_input", U: (H, 4H) "lstm_recurrent"
    i, f, g, o = z_t split in four               (Keras's gate order)
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(c_t)                 logits = h_T V + d   ("logits")

:math:`b` starts at 1 on the forget gate and 0 elsewhere (Keras's ``unit_forget_bias``), :math:`W` Glorot
uniform, :math:`U` orthogonal, as Keras's ``LSTM`` initialises them.

Why Dense layers rather than ``keras.layers.LSTM``: the recurrence is unrolled over the (fixed, short)
sequence, so the model is a plain functional graph whose two kernels are ordinary ``Dense`` kernels. Every
track then measures it as it measures the other backbones: the complexity track counts its MACs (a shared
layer called :math:`T - 1` times counts its MACs that often; the step :math:`t = 1`, where
:math:`h_0 = 0`, skips :math:`h_0 U`, so the MACs are :math:`T F 4H + (T - 1) H 4H`) and, because the
kernels are Dense kernels, its nonzero MACs after pruning; the weight masks of ``_masks`` and TFMOT's
pruning apply to them; TFLite converts it to fully-connected ops (its sparse flatbuffer included). The
complexity track has no rule for Keras's ``LSTM`` layer (it would refuse to count it). The model computes
exactly what ``keras.layers.LSTM(units)`` computes with the same weights (``kernel`` = W,
``recurrent_kernel`` = U, ``bias`` = b; tested). The cost: about :math:`17 T` layers in the graph, so the
unrolled form suits the short sequences of the embedded tasks (8 to 40 steps), not long ones.

Other models reuse the unrolled LSTM (:func:`unrolled_lstm`: the last state; :func:`unrolled_lstm_sequence`: every
state, as ``return_sequences=True``), under their own kernel names where one model holds several, and over
``P`` parallel sequences at once, (batch, T, P, F), that share the weights (``fullsubnet-fast``'s sub-band model
runs one LSTM per frequency band this way: a Dense kernel acts on the last axis, so the P sequences are P
independent LSTMs of the same weights, without folding them into the batch).
"""

from __future__ import annotations

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._layers import logits_model, model_name, sequence_shape

L = keras.layers
# The names of the two kernels: rnn-sparsity prunes these.
INPUT_KERNEL = "lstm_input"
RECURRENT_KERNEL = "lstm_recurrent"
GATES = 4


def forget_bias(units: int) -> list[float]:
    """Keras's ``unit_forget_bias``: 1 on the forget gate, 0 on the input, cell and output gates."""
    return [0.0] * units + [1.0] * units + [0.0] * (2 * units)


def _gate(gates: tf.Tensor, index: int, activation: str) -> tf.Tensor:
    """Gate ``index`` of the ([P,] 4, H) pre-activations, as a ([P,] 1, H) tensor through ``activation``."""
    if len(gates.shape) == 3:
        return L.Activation(activation)(L.Cropping1D((index, GATES - 1 - index))(gates))
    return L.Activation(activation)(L.Cropping2D(((0, 0), (index, GATES - 1 - index)))(gates))


def _time_step(projected: tf.Tensor, step: int) -> tf.Tensor:
    """Step ``step`` of a (batch, T, [P,] 4H) tensor, as (batch, 1, [P,] 4H)."""
    steps = projected.shape[1]
    if len(projected.shape) == 3:
        return L.Cropping1D((step, steps - 1 - step))(projected)
    return L.Cropping2D(((step, steps - 1 - step), (0, 0)))(projected)


def lstm_states(sequence: tf.Tensor, units: int, name: str | None = None) -> list[tf.Tensor]:
    """The hidden states h_1 .. h_T of the LSTM above over a (batch, T, F) ``sequence``, each (batch, 1, ``units``);
    or over a (batch, T, P, F) one, P sequences sharing the weights, each state (batch, 1, P, ``units``).

    Its kernels are the Dense layers ``INPUT_KERNEL`` (W and b, applied to all T steps at once) and
    ``RECURRENT_KERNEL`` (U, one shared layer called T - 1 times), or ``<name>_input`` and ``<name>_recurrent``
    where ``name`` is given; every other layer is weightless.
    """
    parallel = sequence.shape[2] if len(sequence.shape) == 4 else None
    projected = L.Dense(
        GATES * units,
        bias_initializer=keras.initializers.Constant(forget_bias(units)),
        name=f"{name}_input" if name else INPUT_KERNEL,
    )(sequence)
    recurrent = L.Dense(
        GATES * units, use_bias=False, kernel_initializer="orthogonal",
        name=f"{name}_recurrent" if name else RECURRENT_KERNEL,
    )  # fmt: skip
    states, hidden, cell = [], None, None
    for step in range(sequence.shape[1]):
        z = _time_step(projected, step)
        if hidden is not None:
            z = L.Add()([z, recurrent(hidden)])
        gates = L.Reshape((GATES, units) if parallel is None else (parallel, GATES, units))(z)
        update = L.Multiply()([_gate(gates, 0, "sigmoid"), _gate(gates, 2, "tanh")])
        cell = update if cell is None else L.Add()([L.Multiply()([_gate(gates, 1, "sigmoid"), cell]), update])
        hidden = L.Multiply()([_gate(gates, 3, "sigmoid"), L.Activation("tanh")(cell)])
        if parallel is not None:  # the gates' (P, 1, H) layout back to the sequence's (1, P, H)
            hidden = L.Reshape((1, parallel, units))(hidden)
        states.append(hidden)
    return states


def unrolled_lstm(sequence: tf.Tensor, units: int) -> tf.Tensor:
    """The last hidden state h_T, (batch, ``units``), of the LSTM above over a (batch, T, F) ``sequence``."""
    return L.Flatten()(lstm_states(sequence, units)[-1])


def unrolled_lstm_sequence(sequence: tf.Tensor, units: int, name: str) -> tf.Tensor:
    """Every hidden state of the LSTM above (``return_sequences``): (batch, T, [P,] ``units``) over a
    (batch, T, [P,] F) ``sequence``, with kernels ``<name>_input`` and ``<name>_recurrent``."""
    states = lstm_states(sequence, units, name)
    return states[0] if len(states) == 1 else L.Concatenate(axis=1)(states)


@register_method(
    "lstm",
    suite="architectures",
    kind="architecture",
    paper=Paper("Long Short-Term Memory", 1997, "https://doi.org/10.1162/neco.1997.9.8.1735"),
    summary="LSTM classifier over the input's first axis as time, unrolled into Dense layers (countable, prunable)",
    taxonomy=Taxonomy(applied="architecture"),
)
class LSTMClassifier(ArchitectureMethod):
    """An LSTM of ``units`` hidden units over the input's first axis, then the ``logits`` Dense layer."""

    default_options = {"units": 32}

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        steps, features = sequence_shape(tuple(input_shape))
        inputs = keras.Input(shape=input_shape)
        x = inputs if tuple(input_shape) == (steps, features) else L.Reshape((steps, features))(inputs)
        hidden = unrolled_lstm(x, self.options["units"])
        return logits_model(inputs, hidden, num_classes, model_name(self.spec.slug, self.options))
