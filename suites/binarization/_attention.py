r"""Binary attention mechanisms shared by the transformer binarizers (BiViT, BiBERT, BiPFT, EcoFormer).

The tiny transformer's :class:`~suites.architectures._transformer.AttentionCore` computes, per head,
:math:`S = QK^\top/\sqrt{d}`, :math:`P = \operatorname{softmax}(S)`, :math:`O = PV` from the float outputs
of the (binary) query / key / value projections. What the methods share is written here once:

* :class:`SignedAttentionCore` (BiViT, BiBERT, BiPFT): :math:`Q, K, V` are binarized to :math:`\pm 1`
  by the clipped-STE sign of :mod:`suites.binarization._quantizers` before both products, so
  :math:`Q_b K_b^\top` is an XNOR-popcount; a subclass picks the binary attention weights
  (:meth:`~suites.architectures._transformer.AttentionCore.probabilities`), which take values in
  :math:`\{0, \alpha\}` (one bit times a scale), so :math:`P_b V_b` is 1-bit by 1-bit as well.
  ``effbench_bits = (1, 1)``. Forward and pseudo-gradient of the sign (sign(0) = +1)::

      x_b = sign(x)          dx_b/dx := 1[|x| <= 1]

* :func:`softmax_straight_through`: the binary weights forward, the softmax's gradient backward
  (:math:`P_b + P - \operatorname{sg}(P)`), used by BiViT (and available to any softmax-based binarizer).
* :func:`rewire_attention`: the replacement of a float core by several layers. A method whose
  attention mixes float work (EcoFormer's kernel hashing, BiPFT's low-rank residual estimators) with
  binary products puts each kind in a layer of its own, so the complexity track counts every layer at
  its own bit widths. ``OperatorMethod.replace_layer`` swaps one layer for one layer (through
  ``keras.models.clone_model``), so these methods re-trace the binarized graph instead; every new
  layer is registered, so the model saves and reloads without custom objects.

Private module (the registry skips names starting with ``_``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from effbench.tf import keras, tf
from suites.architectures._transformer import AttentionCore
from suites.binarization._quantizers import clipped_ste_sign, straight_through


def softmax_straight_through(scores: tf.Tensor, binarize: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """``binarize(softmax(scores))`` forward; the gradient of ``softmax(scores)`` backward."""
    probabilities = tf.nn.softmax(scores, axis=-1)
    return straight_through(probabilities, binarize(probabilities))


def windowed_straight_through(x: tf.Tensor, binary: tf.Tensor) -> tf.Tensor:
    """``binary`` forward; the incoming gradient where :math:`|x| < 1`, zero elsewhere, backward.

    The pseudo-gradient of BiBERT's ``BinaryQuantizer`` / ``ZMeanBinaryQuantizer`` (it zeroes the
    gradient where ``x >= 1`` or ``x <= -1``).
    """
    passing = x * tf.stop_gradient(tf.cast(tf.abs(x) < 1.0, x.dtype))
    return straight_through(passing, binary)


@keras.utils.register_keras_serializable(package="effbench")
class SignedAttentionCore(AttentionCore):
    """Attention over :math:`\\pm 1` queries, keys and values (see the module docstring).

    Subclasses override :meth:`probabilities` with binary attention weights; this class alone (softmax
    weights) is not binary and is not used by any method.
    """

    effbench_bits: tuple[int, int] = (1, 1)

    def binarize_inputs(self, inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        """:math:`Q_b, K_b, V_b`, each split into heads."""
        return [self.split_heads(clipped_ste_sign(x)) for x in inputs[:3]]

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        query, key, value = self.binarize_inputs(inputs)
        return self.merge_heads(self.mix(self.probabilities(self.scores(query, key)), value))

    def elementwise_per_score(self) -> int:
        """Elementwise operations per attention score of :meth:`probabilities` (for ``effbench_cost``)."""
        return 3

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        tokens, dim = inputs[0][1], inputs[0][2]
        scores = self.heads * tokens * tokens
        return 2 * tokens * tokens * dim, self.elementwise_per_score() * scores + tokens * dim


def rewire_attention(model: keras.Model, wire: Callable[[AttentionCore, list[tf.Tensor]], tf.Tensor]) -> keras.Model:
    """``model`` with every float :class:`AttentionCore` replaced by the layers ``wire`` builds.

    ``wire(core, [Q, K, V])`` returns the attention output, computed by new layers (the method's binary
    core named like ``core``, plus any float layers beside it). The graph is re-traced layer by layer in
    the functional model's order, calling the same layer objects (so every other layer keeps its
    weights) on the same inputs; the result is a flat functional model, which ``clone_model``-based
    replacement cannot give for a one-to-many swap.
    """
    in_graph = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
    tensors = {id(tensor): tensor for tensor in model.inputs}

    def mapped(structure: Any) -> Any:
        return tf.nest.map_structure(
            lambda t: tensors.get(id(t), t) if keras.backend.is_keras_tensor(t) else t, structure
        )

    for layer in model.layers:
        for node in layer.inbound_nodes:
            if id(node) not in in_graph or node.is_input:
                continue
            args, kwargs = mapped(node.call_args), mapped(node.call_kwargs)
            if type(layer) is AttentionCore:
                outputs = wire(layer, list(args[0]))
            else:
                outputs = layer(*args, **kwargs)
            for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs), strict=True):
                tensors[id(old)] = new
    return keras.Model(model.inputs, mapped(model.outputs), name=model.name)
