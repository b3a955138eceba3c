"""Unstructured and N:M weight pruning: gmp, random-erk, nm-srste, lottery-jackpot, layer-adaptive-dp."""

import itertools

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.modelfile import load_keras_model
from effbench.registry import TASKS
from effbench.tf import keras, tf
from effbench.training import TrainContext
from suites.pruning._masks import magnitude_masks, prunable_layers
from suites.pruning.gmp import Gmp, pruning_steps, tfmot_prunable_kernels, tfmot_schedule
from suites.pruning.layer_adaptive_dp import allocate_rates, distortion_curves, kept_weights, output_distortion
from suites.pruning.lottery_jackpot import JackpotSearch, LotteryJackpot, restricted_swap, search_rate
from suites.pruning.nm_srste import NmSrSte, nm_mask, sr_ste
from suites.pruning.random_erk import layer_densities, random_masks
from tests.conftest import assert_operator_reports_ratio_to_fp32_twin

L = keras.layers


def smoke_context(task: str = "digits") -> TrainContext:
    instance = TASKS.get(task).factory()
    recipe = instance.recipe("smoke")
    return TrainContext(instance, instance.load().for_run(0, recipe.max_train_samples), recipe, 0, "smoke")


def small_cnn(seed: int = 0) -> keras.Model:
    """conv (1 input channel) - BN - ReLU - conv (8 input channels) - pool - logits, random 'trained' weights."""
    inputs = keras.Input((8, 8, 1))
    x = L.ReLU()(L.BatchNormalization(name="bn")(L.Conv2D(8, 3, name="stem")(inputs)))
    x = L.GlobalAveragePooling2D()(L.Conv2D(8, 3, name="conv")(x))
    model = keras.Model(inputs, L.Dense(10, name="logits")(x))
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        weight.assign(rng.uniform(-0.5, 0.5, weight.shape).astype(np.float32))
    return model


def groups_of_input_channels(kernel: np.ndarray, m: int) -> np.ndarray:
    """(..., C_in / m, m): the kernel's groups of m consecutive input channels."""
    moved = np.moveaxis(kernel, -2, -1)
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)


# --------------------------------------------------------------------------------------------- nm-srste


def test_nm_mask_keeps_the_n_largest_magnitudes_of_each_group_of_m_input_channels():
    kernel = np.array([[0.1, -3.0], [-0.9, 0.2], [0.3, 0.1], [0.2, 2.0], [0.5, 0.0], [0.05, -1.0], [-0.6, 0.3],
                       [0.4, 0.2]], np.float32)  # fmt: skip
    mask = nm_mask(kernel, 2, 4).numpy()
    # Output 0: groups (0.1, -0.9, 0.3, 0.2) and (0.5, 0.05, -0.6, 0.4); output 1: (-3, .2, .1, 2), (0, -1, .3, .2).
    assert mask.T.tolist() == [[0, 1, 1, 0, 1, 0, 1, 0], [1, 0, 0, 1, 0, 1, 1, 0]]
    assert nm_mask(kernel, 1, 4).numpy().T.tolist() == [[0, 1, 0, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 1, 0, 0]]


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4)])
def test_nm_mask_is_tfmots_m_by_n_pattern_along_the_input_channels(n, m):
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils

    for shape in ((3, 3, 8, 5), (12, 6)):
        kernel = tf.constant(np.random.default_rng(0).normal(size=shape).astype(np.float32))
        tfmot_mask = pruning_utils.m_by_n_sparsity_mask_prepare(
            pruning_utils.generate_m_by_n_mask(pruning_utils.weights_rearrange(kernel), (m - n, m)), kernel.shape
        )
        np.testing.assert_array_equal(nm_mask(kernel, n, m).numpy(), tfmot_mask.numpy())
        assert pruning_utils.is_pruned_m_by_n(kernel * nm_mask(kernel, n, m), (m - n, m))  # TF layout: C_OUT last


def test_sr_ste_forward_is_the_masked_kernel_and_its_gradient_adds_the_sparse_refined_decay():
    rng = np.random.default_rng(1)
    kernel = tf.Variable(rng.normal(size=(8, 3)).astype(np.float32))
    upstream = rng.normal(size=(8, 3)).astype(np.float32)
    mask = nm_mask(kernel, 2, 4)
    with tf.GradientTape() as tape:
        value = sr_ste(kernel, mask, decay=0.5)
    gradient = tape.gradient(value, kernel, output_gradients=tf.constant(upstream)).numpy()
    w, mk = kernel.numpy(), mask.numpy()
    np.testing.assert_array_equal(value.numpy(), w * mk)
    # dW = g(W~) + lambda_w (1 - M) W: the straight-through gradient, plus decay of the pruned weights only.
    np.testing.assert_allclose(gradient, upstream + 0.5 * (1 - mk) * w, rtol=1e-6)


def test_nm_srste_trains_from_scratch_and_deploys_exactly_n_of_every_m(tmp_path):
    model = small_cnn()
    artifact = NmSrSte(n=1, m=4).prune(model, smoke_context())
    kernel = artifact.model.get_layer("conv").kernel.numpy()
    assert np.all(np.count_nonzero(groups_of_input_channels(kernel, 4), axis=-1) == 1)
    assert np.all(np.count_nonzero(artifact.model.get_layer("logits").kernel.numpy().reshape(2, 4, 10), axis=1) == 1)
    facts = artifact.facts
    assert facts["pattern"] == "1:4" and facts["dense_layers"] == ["stem"]  # one input channel: no group of 4
    assert facts["sparsity_by_layer"] == {"conv": 0.75, "logits": 0.75} and facts["sparsity_target"] == 0.75
    assert len(artifact.history["sad"]) == len(artifact.history["loss"]) and artifact.history["sad"][0] >= 0
    path = tmp_path / "nm.keras"
    artifact.model.save(path)
    reloaded = load_keras_model(path)
    np.testing.assert_array_equal(reloaded.get_layer("conv").kernel.numpy(), kernel)


def test_nm_srste_sparsity_follows_n_and_m_and_it_starts_from_a_fresh_backbone():
    digits = TASKS.get("digits").spec
    assert MethodRef.parse("nm-srste").create().options["sparsity"] == 0.5
    method = MethodRef.parse("nm-srste:n=1,m=4").create()
    assert method.options["sparsity"] == 0.75 and method.requires(digits) == {}
    with pytest.raises(ValueError, match="sparsity"):
        MethodRef.parse("nm-srste:sparsity=0.9").create()
    with pytest.raises(ValueError, match="0 < n < m"):
        MethodRef.parse("nm-srste:n=4,m=4").create()


# ------------------------------------------------------------------------------------------- random-erk


def test_erk_gives_the_stem_and_classifier_more_density_than_uniform_and_both_meet_the_budget():
    model = MethodRef.parse("resnet-cifar").create().build((8, 8, 1), 10)
    sizes = {layer.name: layer.kernel.shape.num_elements() for layer in prunable_layers(model)}
    erk, uniform = (layer_densities(model, 0.9, ratios) for ratios in ("erk", "uniform"))
    assert list(uniform.values()) == pytest.approx([0.1] * len(sizes))
    for densities in (erk, uniform):
        assert sum(densities[n] * sizes[n] for n in sizes) == pytest.approx(0.1 * sum(sizes.values()))
    stem, logits = prunable_layers(model)[0].name, "logits"
    biggest = max(sizes, key=sizes.get)
    assert erk[stem] > 0.1 and erk[logits] > 0.1 and erk[biggest] < 0.1 and max(erk.values()) <= 1.0


def test_random_masks_keep_exactly_their_density_at_random_positions():
    model = small_cnn()
    densities = {"stem": 0.5, "conv": 0.25, "logits": 0.1}
    masks = random_masks(model, densities, np.random.default_rng(0))
    assert {name: int(mask.sum()) for name, mask in masks.items()} == {"stem": 36, "conv": 144, "logits": 8}
    again = random_masks(model, densities, np.random.default_rng(1))
    assert not np.array_equal(masks["conv"], again["conv"])
    # Random, not by magnitude: the kept weights are not the largest ones.
    assert not np.array_equal(masks["conv"], magnitude_masks(model, 0.75, scope="layer")["conv"])


# -------------------------------------------------------------------------------------- lottery-jackpot


def test_the_short_restriction_swaps_the_best_candidates_and_a_decaying_share_of_them():
    scores = tf.constant([0.5, 0.9, 0.2, 0.8, 0.1, 0.7])
    mask = tf.constant([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    # Threshold: the 3rd smallest score, 0.5. To enter: 0.8 and 0.7 (pruned, above); to leave: 0.5 and 0.2.
    assert restricted_swap(scores, mask, 1.0).numpy().tolist() == [0, 1, 0, 1, 0, 1]
    assert restricted_swap(scores, mask, 0.5).numpy().tolist() == [1, 1, 0, 1, 0, 0]  # ceil(0.5 * 2) = 1 pair
    assert restricted_swap(tf.constant([0.9, 0.8, 0.1, 0.2]), tf.constant([1.0, 1, 0, 0]), 1.0).numpy().tolist() == [
        1, 1, 0, 0]  # fmt: skip
    assert search_rate(0, 10).numpy() == pytest.approx(1.0) and search_rate(5, 10).numpy() == pytest.approx(0.5)


def test_the_jackpot_search_moves_the_mask_but_never_a_weight():
    model = small_cnn()
    before = {weight.name: weight.numpy().copy() for weight in model.weights}
    masks = magnitude_masks(model, 0.5)
    search = JackpotSearch(model, masks, steps_per_epoch=4, epochs=2)
    search.compile(keras.optimizers.SGD(1.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype(np.float32)
    search.fit(x, np.arange(64) % 10, batch_size=16, epochs=2, verbose=0)
    found = [mask.numpy() for mask in search.masks()]
    assert any(not np.array_equal(f, masks[name]) for f, name in zip(found, masks, strict=True))
    # Each layer keeps as many weights as its magnitude mask: swaps come in pairs.
    assert [f.sum() for f in found] == [masks[name].sum() for name in masks]
    changed = {w.name.split("/")[-1] for w in model.weights if not np.array_equal(w.numpy(), before[w.name])}
    assert changed <= {"moving_mean:0", "moving_variance:0"}  # statistics follow the masked network
    deployed = search.deploy()
    for mask, name in zip(found, masks, strict=True):
        np.testing.assert_array_equal(deployed.get_layer(name).kernel.numpy(), before[f"{name}/kernel:0"] * mask)


def test_lottery_jackpot_starts_from_the_magnitude_mask_and_deploys_masked_trained_weights():
    model = small_cnn()
    before = {layer.name: layer.kernel.numpy().copy() for layer in prunable_layers(model)}
    artifact = LotteryJackpot(sparsity=0.75).prune(model, smoke_context())
    kept = {name: artifact.model.get_layer(name).kernel.numpy() != 0 for name in before}
    assert sum(k.sum() for k in kept.values()) == round(0.25 * sum(k.size for k in kept.values()))
    for name, kernel in before.items():
        np.testing.assert_array_equal(artifact.model.get_layer(name).kernel.numpy()[kept[name]], kernel[kept[name]])
    assert artifact.facts["trained_weights"] == 0 and 0 <= artifact.facts["moved_from_magnitude_mask"] <= 1
    assert "sad" in artifact.history


# ------------------------------------------------------------------------------------ layer-adaptive-dp


@pytest.mark.parametrize("seed, sparsity", [(0, 0.5), (1, 0.75), (2, 0.9), (3, 0.6)])
def test_the_dynamic_programme_finds_the_brute_force_optimum(seed, sparsity):
    rng = np.random.default_rng(seed)
    sizes, rates = [6, 10, 16, 9], [0.0, 0.25, 0.5, 0.75, 1.0]
    # Distortion grows with the rate, from 0 unpruned; random increments, so no two allocations tie.
    distortion = np.cumsum(np.concatenate([np.zeros((4, 1)), rng.uniform(0.1, 1.0, (4, 4))], axis=1), axis=1)
    kept = kept_weights(sizes, rates)
    budget = sum(sizes) - round(sparsity * sum(sizes))
    choices = itertools.product(range(len(rates)), repeat=len(sizes))
    feasible = [c for c in choices if sum(kept[layer, k] for layer, k in enumerate(c)) <= budget]
    best = min(feasible, key=lambda c: sum(distortion[layer, k] for layer, k in enumerate(c)))
    assert allocate_rates(distortion, sizes, rates, sparsity) == list(best)


def test_the_dynamic_programme_keeps_the_budget_when_it_counts_weights_in_units():
    sizes, rates = [300_001, 40_003, 777], [k / 20 for k in range(21)]
    distortion = np.tile(np.linspace(0, 1, 21), (3, 1)) * np.array([[1.0], [5.0], [20.0]])
    picks = allocate_rates(distortion, sizes, rates, 0.9, max_states=1000)
    kept = kept_weights(sizes, rates)
    assert sum(kept[layer, pick] for layer, pick in enumerate(picks)) <= sum(sizes) - round(0.9 * sum(sizes))
    assert picks[2] < picks[0]  # the most sensitive layer keeps more


def test_distortion_is_the_worst_or_mean_squared_output_error_of_one_pruned_layer():
    reference, outputs = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[1.0, 0.0], [1.0, 1.0]])
    assert output_distortion(reference, outputs, "worst") == 2.0  # the first sample: (0 + 2^2) / 2
    assert output_distortion(reference, outputs, "mean") == 1.5
    inputs = keras.Input((2,))
    model = keras.Model(inputs, L.Dense(2, use_bias=False, name="b")(L.Dense(2, use_bias=False, name="a")(inputs)))
    kernel = np.array([[1.0, 0.1], [0.2, 3.0]], np.float32)
    model.get_layer("a").set_weights([kernel])
    model.get_layer("b").set_weights([np.eye(2, dtype=np.float32)])
    x = np.array([[1.0, 1.0], [2.0, 0.0]], np.float32)
    curves = distortion_curves(model, x, [0.0, 0.5, 1.0], "mean")
    # Layer a at 50% drops 0.1 and 0.2: outputs (1.2, 3.1) -> (1, 3) and (2, 0.2) -> (2, 0); all pruned: zeros.
    half = ((0.2**2 + 0.1**2) / 2 + 0.2**2 / 2) / 2
    assert curves[0].tolist() == pytest.approx([0.0, half, ((1.2**2 + 3.1**2) / 2 + (4 + 0.2**2) / 2) / 2])
    assert curves[1, 0] == 0.0 and curves[1, 2] == pytest.approx(curves[0, 2])
    np.testing.assert_array_equal(model.get_layer("a").kernel.numpy(), kernel)  # restored


# ------------------------------------------------------------------------------------------------- gmp


def test_the_gmp_schedule_fires_several_times_and_ends_at_the_target_on_a_multiple_of_its_frequency():
    assert pruning_steps(4) == (2, 1)  # smoke: 4 steps
    assert pruning_steps(315) == (210, 21)  # digits quick: 21 steps x 15 epochs
    end, frequency = pruning_steps(1000)
    assert end % frequency == 0 and 600 <= end <= 667 and end // frequency >= 10
    schedule = tfmot_schedule(0.9, 315)
    assert schedule(210)[1].numpy() == pytest.approx(0.9) and bool(schedule(21)[0]) and not bool(schedule(22)[0])
    assert type(tfmot_schedule(0.9, 1)).__name__ == "ConstantSparsity"


def test_tfmot_prunes_conv_and_dense_kernels_and_leaves_depthwise_kernels_dense():
    import tensorflow_model_optimization as tfmot

    model = MethodRef.parse("mobilenetv2:alpha=0.35").create().build((8, 8, 1), 10)
    pruned, dense = tfmot_prunable_kernels(tfmot.sparsity.keras.prune_low_magnitude(model))
    by_type = {layer.name: type(layer) for layer in model.layers}
    assert {by_type[name] for name in pruned} == {L.Conv2D, L.Dense}
    assert {by_type[name] for name in dense} == {L.DepthwiseConv2D}
    assert len(pruned) + len(dense) == sum(1 for layer in model.layers if hasattr(layer, "kernel") or
                                           hasattr(layer, "depthwise_kernel"))  # fmt: skip


def test_gmp_prunes_every_kernel_to_the_target_and_deploys_without_tfmot_wrappers(tmp_path):
    artifact = Gmp(sparsity=0.75).prune(small_cnn(), smoke_context())
    assert artifact.facts["sparsity_by_layer"] == {"stem": 0.75, "conv": 0.75, "logits": 0.75}
    assert artifact.facts["tfmot_dense_kernels"] == [] and artifact.facts["schedule"]["config"]["end_step"] == 2
    assert {type(layer) for layer in artifact.model.layers} <= {L.InputLayer, L.Conv2D, L.BatchNormalization, L.ReLU,
                                                               L.GlobalAveragePooling2D, L.Dense}  # fmt: skip
    path = tmp_path / "gmp.keras"
    artifact.model.save(path)
    assert np.mean(load_keras_model(path).get_layer("conv").kernel.numpy() == 0) == 0.75


# ------------------------------------------------------------------------------------ through the runner


def test_gmp_curve_points_share_the_trained_twin(tmp_path):
    from effbench.records import ResultStore
    from effbench.runner import execute_plan, make_plan

    # On mnist1d's mlp: the runner's plumbing is the point, and resnet-cifar's TFMOT wrappers trace slowly.
    metrics = assert_operator_reports_ratio_to_fp32_twin("gmp:sparsity=0.5", tmp_path, twin="mlp", task="mnist1d")
    assert 0 <= metrics["top1"] <= 1
    store = ResultStore(tmp_path)
    jobs = make_plan([MethodRef.parse("gmp:sparsity=0.9")], ["mnist1d"], [0], ["accuracy"], "smoke", store)
    # The twin (also the trained upstream) is cached by the first point: the second trains gmp only.
    assert [str(job.training.method) for job in jobs] == ["gmp:sparsity=0.9"]
    results = execute_plan(jobs, store, log=lambda _: None)
    assert not any(result.failures for result in results)
    assert results[0].records[0].facts["sparsity_target"] == 0.9


@pytest.mark.parametrize(
    "slug, fact, curve",
    [
        ("random-erk:sparsity=0.9", "ratios", "loss"),
        ("nm-srste:m=4,n=1", "pattern", "sad"),  # options as the planner writes them: sorted
        ("lottery-jackpot:sparsity=0.9", "moved_from_magnitude_mask", "sad"),
        ("layer-adaptive-dp:sparsity=0.9", "rate_by_layer", "loss"),
    ],
)
def test_each_method_runs_through_the_runner_against_the_twin(slug, fact, curve, tmp_path):
    from effbench.records import ResultStore

    metrics = assert_operator_reports_ratio_to_fp32_twin(slug, tmp_path)
    assert 0 <= metrics["top1"] <= 1
    [record] = [r for r in ResultStore(tmp_path).records() if r.method == slug.split(":")[0]]
    assert {"sparsity_target", "sparsity_by_layer", fact} <= set(record.facts) and curve in record.curves
