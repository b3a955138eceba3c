"""The tiny transformer backbone: patch tokens, the swappable attention core, its complexity and binarization."""

import larq
import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures._transformer import AttentionCore, patches
from suites.binarization.operators import binarize, binarized_layer_names
from tracks.complexity import count_complexity


def build(input_shape, options=""):
    return MethodRef.parse(f"tiny-transformer{options}").create().build(input_shape, 10)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_images_become_patch_tokens_in_row_major_order():
    image = np.arange(4 * 4 * 2, dtype=np.float32).reshape(1, 4, 4, 2)
    inputs = keras.Input((4, 4, 2))
    tokens = keras.Model(inputs, patches(inputs, 2))(image).numpy()
    assert tokens.shape == (1, 4, 8)
    for index, (row, col) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
        np.testing.assert_array_equal(tokens[0, index], image[0, row : row + 2, col : col + 2, :].reshape(-1))


def test_vectors_become_consecutive_segments():
    vector = np.arange(12, dtype=np.float32).reshape(1, 12)
    inputs = keras.Input((12,))
    tokens = keras.Model(inputs, patches(inputs, 3))(vector).numpy()
    np.testing.assert_array_equal(tokens[0], vector.reshape(4, 3))


@pytest.mark.parametrize("shape", [(7, 8, 1), (41,), (4, 4)])
def test_inputs_that_do_not_cut_into_patches_are_errors(shape):
    with pytest.raises(ValueError, match="patches of 2|images or"):
        build(shape)


def test_the_attention_core_is_multi_head_scaled_dot_product_attention():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, 5, 8)).astype(np.float32) for _ in range(3))
    out = AttentionCore(heads=2)([q, k, v]).numpy()
    for head in range(2):
        part = slice(4 * head, 4 * head + 4)
        weights = softmax(q[:, :, part] @ k[:, :, part].transpose(0, 2, 1) / 2.0)
        np.testing.assert_allclose(out[:, :, part], weights @ v[:, :, part], rtol=1e-5, atol=1e-6)


def test_complexity_counts_projections_and_both_attention_products():
    model = build((8, 8, 1))
    rows = {row.name: row for row in count_complexity(model).layers}
    tokens, dim = 16, 64
    assert rows["block0_attention"].macs == 2 * tokens * tokens * dim
    assert rows["block0_query"].macs == tokens * dim * dim
    assert rows["patch_embedding"].macs == tokens * 4 * dim
    assert rows["block0_mlp_in"].macs == tokens * dim * 2 * dim


def test_the_operator_protocol_binarizes_every_projection_but_the_patch_embedding_and_the_classifier():
    model = build((40,))
    names = binarized_layer_names(model)
    assert "patch_embedding" not in names and "logits" not in names
    assert len(names) == 2 * 6  # query, key, value, output, mlp_in, mlp_out per block

    class DoubledAttention(AttentionCore):
        def probabilities(self, scores):
            return 2.0 * super().probabilities(scores)

    def replace(layer):
        return DoubledAttention(layer.heads, name=layer.name) if isinstance(layer, AttentionCore) else None

    binary = binarize(model, "ste_sign", "ste_sign", replace_layer=replace)
    assert all(isinstance(binary.get_layer(n), larq.layers.QuantDense) for n in names)
    assert isinstance(binary.get_layer("block1_attention"), DoubledAttention)
    np.testing.assert_array_equal(binary.get_layer("patch_embedding").kernel, model.get_layer("patch_embedding").kernel)
