"""Specifications of ``unetpp``: the nested grid of nodes X^{i,j}, dense skips, deep supervision and pruning."""

from __future__ import annotations

import re

import numpy as np
import pytest

from effbench.litert import litert_predict
from effbench.method import MethodRef
from effbench.registry import TASKS
from effbench.tf import keras
from suites.architectures.unetpp import DeeplySupervised
from tests.dense_checks import converted_ops, float_ops, segmentation_data, segmentation_spec, train
from tracks.complexity import count_complexity

NODE = re.compile(r"x(\d+)_(\d+)a_conv")


def segmenter(reference: str = "unetpp:depth=2,width=4", side: int = 16, classes: int = 3) -> keras.Model:
    return MethodRef.parse(reference).create().build_for(segmentation_spec(side, classes))


def nodes(model: keras.Model) -> set[tuple[int, int]]:
    """The (i, j) of every node X^{i,j} in ``model``."""
    return {tuple(map(int, match.groups())) for layer in model.layers if (match := NODE.fullmatch(layer.name))}


def producers(model: keras.Model, name: str) -> list[str]:
    return [node.layer.name for node in model.get_layer(name).inbound_nodes[0].parent_nodes]


def test_segments_every_pixel_of_seg_shapes():
    spec = TASKS.get("seg-shapes").spec
    model = MethodRef.parse("unetpp").create().build_for(spec)
    assert model.output_shape == (None, 64, 64, 7)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_the_nodes_are_the_grid_i_plus_j_at_most_the_depth(depth):
    model = segmenter(f"unetpp:depth={depth},width=2")
    grid = nodes(model)
    assert grid == {(i, j) for i in range(depth + 1) for j in range(depth + 1 - i)}
    assert len(grid) == (depth + 1) * (depth + 2) // 2


def test_each_decoder_node_takes_the_upsampled_node_below_and_every_node_before_it_on_its_level():
    model = segmenter("unetpp:depth=3,width=2")
    # X^{0,3} = H([Up(X^{1,2}), X^{0,0}, X^{0,1}, X^{0,2}]); X^{1,1} = H([Up(X^{2,0}), X^{1,0}]).
    assert producers(model, "x0_3_skips") == ["x0_3_up", "x0_0b_relu", "x0_1b_relu", "x0_2b_relu"]
    assert producers(model, "x0_3_up") == ["x1_2b_relu"]
    assert producers(model, "x1_1_skips") == ["x1_1_up", "x1_0b_relu"]
    up = model.get_layer("x0_3_up")  # a 2x2 transposed conv with stride 2, to level 0's width
    assert isinstance(up, keras.layers.Conv2DTranspose)
    assert (up.kernel_size, up.strides, up.filters) == ((2, 2), (2, 2), 2)
    # The encoder: X^{i,0} = H(pool(X^{i-1,0})), 2x2 max pools, widths doubling per level.
    assert producers(model, "x2_0a_conv") == ["x2_0_pool"] and producers(model, "x2_0_pool") == ["x1_0b_relu"]
    assert [model.get_layer(f"x{i}_0b_conv").filters for i in range(4)] == [2, 4, 8, 16]
    assert model.get_layer("x3_0b_conv").output_shape[1:3] == (2, 2)


def test_the_deployed_output_averages_the_heads_on_x0_1_to_x0_depth():
    model = segmenter("unetpp:depth=3,width=2")
    heads = keras.Model(model.inputs, [model.get_layer(f"head{j}").output for j in (1, 2, 3)])
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x), np.mean(heads(x), axis=0), atol=1e-6)
    last = segmenter("unetpp:depth=3,width=2,output=last")
    assert last.layers[-1].name == "head3" and "head1" not in [layer.name for layer in last.layers]


def test_pruning_keeps_the_sub_network_up_to_x0_l_and_costs_less_the_shallower_it_is():
    macs = []
    for level in (1, 2, 3):
        model = segmenter(f"unetpp:depth=3,width=2,prune_level={level}")
        assert nodes(model) == {(i, j) for i in range(level + 1) for j in range(level + 1 - i)}
        macs.append(count_complexity(model).macs)
    assert all(shallower < deeper for shallower, deeper in zip(macs, macs[1:], strict=False))
    assert count_complexity(segmenter("unetpp:depth=3,width=2")).macs == macs[-1]  # prune_level 0: unpruned


def test_bad_options_name_what_is_allowed():
    with pytest.raises(ValueError, match=r"expected 1\.\.4"):
        MethodRef.parse("unetpp:prune_level=5").create()
    with pytest.raises(ValueError, match="needs deep_supervision"):
        MethodRef.parse("unetpp:prune_level=2,deep_supervision=false").create()
    with pytest.raises(ValueError, match="average, last"):
        MethodRef.parse("unetpp:output=mean").create()


def deeply_supervised(reference: str) -> tuple[DeeplySupervised, keras.Model]:
    """The training wrapper of ``reference`` on 16x16x3 inputs and 3 classes, compiled to run eagerly, and a
    model of all its heads."""
    keras.utils.set_random_seed(0)
    method = MethodRef.parse(reference).create()
    grid = method.network((16, 16, 3), 3)
    deployed = method.deployed(grid)
    trainer = DeeplySupervised(keras.Model(grid.inputs, [*grid.heads, deployed.output]), deployed)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss, metrics=["accuracy"], run_eagerly=True)
    return trainer, keras.Model(grid.inputs, grid.heads)


def head_losses(heads: keras.Model, x: np.ndarray, y: np.ndarray) -> list[float]:
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return [float(cross_entropy(y, logits)) for logits in heads(x, training=False)]


def test_the_training_loss_is_the_mean_of_every_heads_cross_entropy_and_the_metrics_the_deployed_models():
    trainer, heads = deeply_supervised("unetpp:depth=2,width=2,prune_level=1")
    x, y = segmentation_data(4, 16, 3)
    logs = trainer.evaluate(x, y, verbose=0, return_dict=True)
    losses = head_losses(heads, x, y)
    assert abs(losses[0] - losses[1]) > 1e-4  # so their mean is neither head's loss
    assert logs["heads_loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    # Pruned to level 1, the deployed model is head 1 alone: its loss and accuracy are what is logged.
    assert logs["loss"] == pytest.approx(losses[0], rel=1e-5)
    deployed = np.argmax(trainer.deployed(x, training=False), axis=-1)
    assert logs["accuracy"] == pytest.approx(np.mean(deployed == y), abs=1e-6)


def test_a_training_step_updates_the_nodes_and_head_that_pruning_removes():
    trainer, _ = deeply_supervised("unetpp:depth=2,width=2,prune_level=1")
    x, y = segmentation_data(8, 16, 3)
    # X^{1,1} feeds X^{0,2} and head 2 only: the deployed model (X^{0,1}, head 1) does not contain them.
    pruned_away = ["x1_1a_conv", "head2"]
    assert not {*pruned_away} & {layer.name for layer in trainer.deployed.layers}
    watched = [*pruned_away, "head1"]
    before = [trainer.heads.get_layer(name).kernel.numpy() for name in watched]
    trainer.train_on_batch(x, y)
    for name, kernel in zip(watched, before, strict=True):
        assert np.abs(trainer.heads.get_layer(name).kernel.numpy() - kernel).max() > 1e-4, name


def test_run_trains_on_the_task_and_deploys_the_segmenter():
    x, y = segmentation_data(32, 16, 3)
    artifact = train(MethodRef.parse("unetpp:depth=1,width=4").create(), segmentation_spec(16, 3), x, y)
    assert artifact.history["loss"][-1] < 0.8 * artifact.history["loss"][0]
    assert artifact.model.output_shape == (None, 16, 16, 3) and nodes(artifact.model) == {(0, 0), (1, 0), (0, 1)}


def test_converts_to_tflite_builtins_in_float_and_int8_and_computes_what_keras_does():
    model = segmenter("unetpp:depth=2,width=2")
    content, ops = converted_ops(model)
    assert ops.count("TRANSPOSE_CONV") == 3 and ops.count("MAX_POOL_2D") == 2 and "CONCATENATION" in ops
    x = np.random.default_rng(3).random((2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(litert_predict(content, x, 1), model(x, training=False), atol=1e-4)
    int8, int8_ops = converted_ops(model, "int8")  # floats only at the input and the output
    assert int8_ops[0] == "QUANTIZE" and int8_ops[-1] == "DEQUANTIZE" and "TRANSPOSE_CONV" in int8_ops
    assert float_ops(int8) == []
