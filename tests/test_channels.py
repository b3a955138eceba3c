"""Channel groups of a Keras graph and their physical removal (structured pruning's core step)."""

import numpy as np
import pytest

from effbench.channels import PRODUCERS, channel_groups, remove_channels
from effbench.method import MethodRef
from effbench.registry import TASKS, load_builtin_entries
from effbench.tf import keras
from tracks.complexity import count_complexity

load_builtin_entries()
L = keras.layers


def residual_model() -> keras.Model:
    """stem -> BN -> ReLU -> [conv -> BN] + identity -> depthwise -> GAP -> head, and a flatten branch into a dense
    layer whose output is concatenated."""
    x = keras.Input((6, 6, 3))
    stem = L.ReLU()(L.BatchNormalization(name="stem_bn")(L.Conv2D(8, 3, padding="same", name="stem")(x)))
    branch = L.BatchNormalization(name="inner_bn")(L.Conv2D(8, 3, padding="same", name="inner")(stem))
    joined = L.Add(name="add")([stem, branch])
    pooled = L.GlobalAveragePooling2D()(L.DepthwiseConv2D(3, padding="same", name="dw")(joined))
    side = L.Dense(5, name="side")(L.Flatten()(L.Conv2D(4, 1, name="squeeze")(joined)))
    frozen = L.Concatenate()([side, L.Dense(2, name="pair")(side)])  # a concatenation freezes "side"
    return keras.Model(x, L.Add(name="logits")([L.Dense(3, name="head")(pooled), L.Dense(3, name="tail")(frozen)]))


def randomized(model: keras.Model) -> keras.Model:
    """Random biases and batch-norm statistics (kernels as initialised), so that a removed channel would show."""
    rng = np.random.default_rng(0)

    def value(variable, current):
        name = variable.name.split("/")[-1]
        if name.startswith(("moving_variance", "gamma")):
            return rng.uniform(0.5, 1.5, current.shape)
        if name.startswith(("bias", "beta", "moving_mean")):
            return rng.normal(0.0, 0.5, current.shape)
        return current

    model.set_weights([value(v, w) for v, w in zip(model.weights, model.get_weights(), strict=True)])
    return model


def reading_zeroed(model: keras.Model, groups, keep) -> keras.Model:
    """The original with every conv / dense that reads a group given zero weights on its removed channels."""
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    for group in groups:
        dropped = np.setdiff1d(np.arange(group.channels), keep.get(group.index, np.arange(group.channels)))
        for name in group.readers:
            layer = masked.get_layer(name)
            if type(layer) not in PRODUCERS:
                continue
            kernel, *rest = layer.get_weights()
            if kernel.ndim == 2 and kernel.shape[0] != group.channels:  # a dense layer after a flatten
                positions = kernel.shape[0] // group.channels
                dropped_features = (np.arange(positions)[:, None] * group.channels + dropped).reshape(-1)
                kernel[dropped_features] = 0.0
            else:
                kernel[..., dropped, :] = 0.0
            layer.set_weights([kernel, *rest])
    return masked


def test_groups_tie_the_producers_of_a_residual_add_and_freeze_what_cannot_shrink():
    groups = channel_groups(residual_model())
    by_producers = {group.producers: group for group in groups}
    assert set(by_producers) == {("stem", "inner"), ("squeeze",)}  # the concatenation and the output freeze the rest
    residual = by_producers[("stem", "inner")]
    assert residual.channels == 8 and {"stem_bn", "inner", "inner_bn", "add", "dw", "squeeze"} <= set(residual.readers)
    assert "side" in by_producers[("squeeze",)].readers  # through the flatten


def test_removing_channels_computes_what_the_original_computes_when_readers_ignore_them():
    model = randomized(residual_model())
    groups = channel_groups(model)
    keep = {group.index: np.arange(1, group.channels, 2) for group in groups}
    small = remove_channels(model, keep)
    x = np.random.default_rng(1).normal(size=(4, 6, 6, 3)).astype(np.float32)
    expected = reading_zeroed(model, groups, keep).predict(x, verbose=0)
    np.testing.assert_allclose(small.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-4)
    assert small.get_layer("stem").filters == small.get_layer("inner").filters == 4
    assert small.get_layer("dw").depthwise_kernel.shape[2] == 4 and small.get_layer("side").kernel.shape[0] == 72


@pytest.mark.parametrize(("backbone", "task"), [("resnet-cifar", "digits"), ("mobilenetv2", "digits"),
                                                 ("vgg-small", "digits"), ("mlp", "mnist1d")])  # fmt: skip
def test_halving_every_group_of_a_backbone_halves_its_channels_and_shrinks_params_and_macs(backbone, task):
    spec = TASKS.get(task).spec
    model = randomized(MethodRef.parse(backbone).create().build(spec.input_shape, spec.num_classes))
    groups = channel_groups(model)
    keep = {group.index: np.arange(0, group.channels, 2) for group in groups}
    small = remove_channels(model, keep)
    x = np.random.default_rng(1).random((2, *spec.input_shape), dtype=np.float32)
    expected = reading_zeroed(model, groups, keep).predict(x, verbose=0)
    np.testing.assert_allclose(small.predict(x, verbose=0), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    before, after = count_complexity(model), count_complexity(small)
    assert after.params < 0.4 * before.params and after.macs < 0.4 * before.macs


def test_bad_selections_are_refused_with_the_group_named():
    model = residual_model()
    with pytest.raises(ValueError, match="there is no group 7"):
        remove_channels(model, {7: [0]})
    with pytest.raises(ValueError, match="group 0 has 8 channels"):
        remove_channels(model, {0: []})
