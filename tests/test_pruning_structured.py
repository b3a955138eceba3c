"""The structured (channel) pruning methods: polarization, masksparsity, oto-hesso, pqi-sap, class-dependent."""

import numpy as np
import pytest

from effbench.channels import PRODUCERS, channel_groups, remove_channels
from effbench.method import MethodRef
from effbench.modelfile import load_keras_model
from effbench.recipe import Recipe
from effbench.records import ResultStore
from effbench.registry import TASKS, load_builtin_entries
from effbench.runner import load_artifact
from effbench.tasks.base import Splits
from effbench.tf import keras, tf
from effbench.training import TrainContext
from suites.pruning._channel_scores import (
    GateStep,
    bn_scale_scores,
    channel_facts,
    gates,
    kept_channels,
    lowest_channels,
    removal_count,
    step_sizes,
)
from suites.pruning.class_dependent import (
    ClassWeightedCrossEntropy,
    class_importance,
    per_class_counts,
    protected_scores,
)
from suites.pruning.masksparsity import masked_shrink
from suites.pruning.oto_hesso import Hesso, HessoPlan, channel_variables, hesso_saliency
from suites.pruning.polarization import polarization, polarization_step
from suites.pruning.pqi_sap import folded_norms, pq_index, sap_prune_count
from tests.conftest import assert_operator_reports_ratio_to_fp32_twin
from tracks.complexity import count_complexity

load_builtin_entries()
L = keras.layers


def residual_model() -> keras.Model:
    """conv a -> BN -> ReLU -> conv b -> BN, added to a's path: group {a, b}; then depthwise -> BN -> head."""
    x = keras.Input((5, 5, 2))
    a = L.ReLU()(L.BatchNormalization(name="a_bn")(L.Conv2D(4, 3, padding="same", use_bias=False, name="a")(x)))
    b = L.BatchNormalization(name="b_bn")(L.Conv2D(4, 3, padding="same", use_bias=False, name="b")(a))
    joined = L.ReLU()(L.Add()([a, b]))
    depthwise = L.BatchNormalization(name="dw_bn")(L.DepthwiseConv2D(3, padding="same", name="dw")(joined))
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(L.ReLU()(depthwise))))


def randomized(model: keras.Model, seed: int = 0) -> keras.Model:
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        name = weight.name.split("/")[-1]
        if name.startswith(("moving_variance", "gamma")):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape))
        elif name.startswith(("moving_mean", "beta", "bias")):
            weight.assign(rng.normal(0.0, 0.5, weight.shape))
    return model


def toy_context(n: int = 64, recipe: Recipe | None = None) -> TrainContext:
    x = np.zeros((n, 1), np.float32)
    splits = Splits(x, np.zeros(n, np.int32), x, np.zeros(n, np.int32), x, np.zeros(n, np.int32))
    return TrainContext(None, splits, recipe or Recipe(epochs=2, batch_size=16), 0, "smoke")


# ------------------------------------------------------------------ shared mechanisms


def test_gates_are_the_batch_norms_right_after_a_groups_producers_and_score_by_the_largest():
    model = residual_model()
    group = next(g for g in channel_groups(model) if "a" in g.producers)
    assert set(group.producers) == {"a", "b"} and "dw_bn" in group.readers
    assert gates(model, group) == ["a_bn", "b_bn"]  # not the batch norm after the depthwise conv
    model.get_layer("a_bn").gamma.assign([0.1, -0.9, 0.3, 0.2])
    model.get_layer("b_bn").gamma.assign([0.4, 0.5, -0.05, 0.0])
    np.testing.assert_allclose(bn_scale_scores(model, [group])[group.index], [0.4, 0.9, 0.3, 0.2])


def test_the_lowest_channels_are_chosen_over_all_groups_without_emptying_one():
    scores = {0: np.array([0.5, 0.1, 0.9]), 1: np.array([0.05, 0.2])}
    # In score order: (1, 0), (0, 1), then (1, 1) would empty group 1, so (0, 0).
    removed = lowest_channels(scores, 3)
    assert {group: chosen.tolist() for group, chosen in removed.items()} == {0: [0, 1], 1: [0]}
    with pytest.raises(ValueError, match="cannot remove 4 channels"):
        lowest_channels(scores, 4)


def test_channel_facts_count_the_kept_channels_per_group_and_per_producer():
    groups = channel_groups(residual_model())
    assert removal_count(groups, 0.5) == 2
    kept = kept_channels(groups, {0: np.array([1, 3])})
    facts = channel_facts(groups, kept, 0.5)
    assert facts["kept_channels"] == {"0": 2} and facts["group_producers"] == {"0": ["a", "b"]}
    assert facts["sparsity_by_layer"] == {"a": 0.5, "b": 0.5} and facts["channel_sparsity"] == 0.5


def test_the_decoupled_step_sizes_follow_the_learning_rate_and_sum_to_the_strength():
    cosine = step_sizes(toy_context(recipe=Recipe(epochs=2, batch_size=16)), 2, 1.5)  # 4 steps an epoch
    assert len(cosine) == 8 and cosine.sum() == pytest.approx(1.5) and np.all(np.diff(cosine) < 0)
    constant = step_sizes(toy_context(recipe=Recipe(epochs=1, schedule="constant", batch_size=16)), 1, 1.0)
    np.testing.assert_allclose(constant, [0.25] * 4)


def test_the_gate_step_applies_the_update_after_every_training_step():
    scale = tf.Variable([1.0, 2.0])
    step = GateStep([scale], lambda values, size: [v - size for v in values], np.array([0.5, 0.25]))
    for batch in range(3):
        step.on_train_batch_end(batch)
    np.testing.assert_allclose(scale.numpy(), [1.0 - 1.0, 2.0 - 1.0])  # 0.5, 0.25, then the last size again


# ------------------------------------------------------------------ polarization and masksparsity


def test_the_polarization_regulariser_and_its_clipped_step_match_a_hand_computation():
    scales = [tf.constant([0.1, 0.4]), tf.constant([1.0])]
    # mean 0.5: R = 1.2 * 1.5 - (0.4 + 0.1 + 0.5) = 0.8
    assert float(polarization(scales, t=1.2)) == pytest.approx(0.8)
    # dR/dg_j = t sign(g_j) - sign(g_j - mean) + mean_i sign(g_i - mean): 1.2 + 1 - 1/3 twice, 1.2 - 1 - 1/3
    stepped = np.concatenate([s.numpy() for s in polarization_step(scales, step=0.1, t=1.2)])
    np.testing.assert_allclose(stepped, [0.0, 0.4 - 0.1 * (2.2 - 1 / 3), 1.0], atol=1e-6)  # clipped to [0, 1]


def test_masksparsity_soft_thresholds_only_the_masked_scales():
    (shrunk,) = masked_shrink([tf.constant([0.3, -0.05, 0.8, -0.4])], 0.1, [np.array([1, 1, 0, 1], bool)])
    np.testing.assert_allclose(shrunk.numpy(), [0.2, 0.0, 0.8, -0.3], atol=1e-7)


# ------------------------------------------------------------------ pqi-sap


def test_the_pq_index_and_the_sap_bound_match_hand_computations():
    assert pq_index(np.full(7, 3.0)) == pytest.approx(0.0, abs=1e-12)
    assert pq_index([1.0, 4.0]) == pytest.approx(1 - 0.5 * 9 / 5)  # ||w||_0.5 = (1 + 2)^2, ||w||_1 = 5
    assert pq_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.75)  # the largest for d = 4: 1 - 4^(1 - 2)
    # d = 100, I = 0.1, p = 0.5, q = 1: r = ceil(100 * 0.9) = 90, c = floor(100 * min(gamma * 0.1, beta))
    assert sap_prune_count(100, 0.1, 0.5, 1.0, 0.0, 1.0, 0.9) == 10
    assert sap_prune_count(100, 0.1, 0.5, 1.0, 0.0, 5.0, 0.9) == 50
    assert sap_prune_count(100, 0.1, 0.5, 1.0, 0.0, 20.0, 0.9) == 90  # capped at beta
    # eta = 1: r = ceil(100 * 2^-2 * 0.9) = 23, c = 77
    assert sap_prune_count(100, 0.1, 0.5, 1.0, 1.0, 1.0, 0.9) == 77
    assert sap_prune_count(16, 0.0, 0.5, 1.0, 0.0, 5.0, 0.9) == 0


def test_folded_norms_fold_the_batch_norm_into_each_producers_filters():
    model = randomized(residual_model())
    group = channel_groups(model)[0]
    expected = 0.0
    for name in ("a", "b"):
        bn = model.get_layer(f"{name}_bn")
        scale = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        expected = expected + (model.get_layer(name).kernel.numpy().reshape(-1, 4) ** 2).sum(0) * scale**2
    np.testing.assert_allclose(folded_norms(model, [group])[group.index], np.sqrt(expected / 2), rtol=1e-5)


# ------------------------------------------------------------------ oto-hesso


def test_hesso_saliency_matches_a_hand_computation():
    norm_sq, dot, grad_sq, size = np.array([4.0, 1.0]), np.array([2.0, -1.0]), np.array([1.0, 4.0]), np.array([2, 4])
    criteria = [np.array([2.0, 1.0]), np.array([1.0, 0.25]), np.array([2.0, 0.5]), np.array([2.0, 1.0]),
                np.array([2.0, 0.5])]  # fmt: skip
    expected = sum(0.2 * c / np.linalg.norm(c) for c in criteria)
    np.testing.assert_allclose(hesso_saliency(norm_sq, dot, grad_sq, size), expected, rtol=1e-6)


def test_the_hesso_plan_splits_the_target_over_its_periods_after_the_warm_up():
    plan = HessoPlan.build(100, warmup=0.1, pruning=0.3, periods=3, target=25)
    assert (plan.start, plan.period_steps, plan.counts) == (10, 10, (8, 8, 9))
    assert plan.period(9) is None and plan.period(10) == (0, 0) and plan.period(39) == (2, 9)
    assert plan.period(40) is None
    tiny = HessoPlan.build(4, warmup=0.1, pruning=0.1, periods=10, target=5)
    assert (tiny.start, tiny.period_steps, tiny.counts) == (0, 1, (5,))


def test_hesso_decays_its_redundant_channels_linearly_to_exact_zero_and_keeps_them_there():
    model = randomized(residual_model())
    groups = channel_groups(model)
    plan = HessoPlan(start=1, period_steps=4, counts=(2,))
    x = np.random.default_rng(0).normal(size=(8, 5, 5, 2)).astype(np.float32)
    # No optimizer step between the callbacks' calls: what moves is HESSO's own scaling.
    hesso = Hesso(model, groups, plan, (x, np.zeros((8, 3), np.float32)), keras.losses.MeanSquaredError())
    kernel = model.get_layer("a").kernel
    start = kernel.numpy().copy()
    seen = []
    for step in range(7):
        hesso.on_train_batch_begin(step)
        hesso.on_train_batch_end(step)
        seen.append(kernel.numpy().copy())
    pruned = np.flatnonzero(hesso.pruned[0])
    assert len(pruned) == 2 and not hesso.active[0].any()
    for step, factor in zip(range(1, 5), (0.75, 0.5, 0.25, 0.0), strict=True):
        np.testing.assert_allclose(seen[step][..., pruned], factor * start[..., pruned], atol=1e-7)
    assert np.all(seen[-1][..., pruned] == 0.0)
    live = np.setdiff1d(np.arange(4), pruned)
    np.testing.assert_allclose(seen[-1][..., live], start[..., live])
    for variable, axis in channel_variables(model, groups[0]):
        assert np.all(np.take(variable.numpy(), pruned, axis=axis) == 0.0)


def test_hesso_projects_a_redundant_channel_that_leaves_the_half_space_to_zero():
    model = randomized(residual_model())
    groups = channel_groups(model)
    hesso = Hesso(model, groups, HessoPlan(start=0, period_steps=4, counts=(1,)), (None, None), None)
    hesso.step, hesso.active[0][2] = 1, True
    hesso.on_train_batch_begin(1)
    for variable, axis in channel_variables(model, groups[0]):  # an update that flips channel 2
        value = variable.numpy()
        np.moveaxis(value, axis, 0)[2] *= -1.0
        variable.assign(value)
    hesso.on_train_batch_end(1)
    assert hesso.halfspace_projections == 1 and hesso.pruned[0].tolist() == [False, False, True, False]
    assert all(np.all(np.take(v.numpy(), [2], axis=a) == 0) for v, a in channel_variables(model, groups[0]))


def test_zeroing_the_zero_invariant_groups_of_mobilenetv2_makes_their_removal_exact():
    spec = TASKS.get("digits").spec
    model = randomized(MethodRef.parse("mobilenetv2").create().build(spec.input_shape, spec.num_classes))
    groups = channel_groups(model)
    rng = np.random.default_rng(3)
    removed = {g.index: np.sort(rng.choice(g.channels, g.channels // 2, replace=False)) for g in groups}
    for group in groups:
        for variable, axis in channel_variables(model, group):
            value = variable.numpy()
            np.moveaxis(value, axis, 0)[removed[group.index]] = 0.0
            variable.assign(value)
    small = remove_channels(model, kept_channels(groups, removed))
    x = rng.random((2, *spec.input_shape), dtype=np.float32)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(small.predict(x, verbose=0), expected, atol=1e-4 * np.abs(expected).max())
    assert count_complexity(small).params < 0.4 * count_complexity(model).params


# ------------------------------------------------------------------ class-dependent


def dense_model() -> keras.Model:
    x = keras.Input((3,))
    hidden = L.ReLU()(L.BatchNormalization(name="bn")(L.Dense(4, name="hidden")(x)))
    return keras.Model(x, L.Dense(2, name="logits")(hidden))


def test_class_importance_is_the_first_order_change_of_the_correct_logit_per_class():
    model = randomized(dense_model())
    x = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    y = np.array([0, 1, 0, 1, 1, 0])
    activations = keras.Model(model.inputs, model.get_layer("bn").output).predict(x, verbose=0)
    # z_y = W2[:, y] . relu(a) + b: the change from removing channel c is relu(a_c) W2[c, y]
    delta = np.abs(np.maximum(activations, 0) * model.get_layer("logits").kernel.numpy()[:, y].T)
    expected = np.stack([delta[y == k].mean(0) for k in (0, 1)])
    (importance,) = class_importance(model, channel_groups(model), x, y, 2).values()
    np.testing.assert_allclose(importance, expected, rtol=1e-5, atol=1e-6)
    scores = protected_scores({0: expected}, protect=1, weight=2.0)
    np.testing.assert_allclose(scores[0], (expected[0] + 3 * expected[1]) / 4, rtol=1e-6)  # float32 sums


def test_the_class_weighted_loss_and_the_per_class_counts_match_hand_computations():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    labels = np.array([0, 1, 1])
    cross_entropy = -np.log(np.exp(logits[range(3), labels]) / np.exp(logits).sum(1))
    loss = ClassWeightedCrossEntropy(protect=1, weight=2.0)(labels, logits)
    assert float(loss) == pytest.approx(np.mean(cross_entropy * [1, 3, 3]), rel=1e-5)
    x = keras.Input((2,))
    identity = keras.Model(x, L.Activation("linear")(x))
    counts = per_class_counts(identity, logits, labels, 2)  # predictions 0, 1, 0 (a tie goes to class 0)
    assert counts == {"recall": [1.0, 0.5], "false_negatives": [0, 1]}


# ------------------------------------------------------------------ through the real runner


def deployed(store_dir, slug: str):
    """The method's and the twin's records, the deployed model (reloaded from the runner's .keras) and the twin's."""
    store = ResultStore(store_dir)
    records = {record.method: record for record in store.records()}
    method = records[slug.split(":")[0]]
    twin = next(record for name, record in records.items() if name != method.method)
    return (method, load_artifact(store.artifact_dir(method.training_hash)).model,
            load_keras_model(store.artifact_dir(twin.training_hash) / "model.keras"))  # fmt: skip


@pytest.mark.parametrize(
    ("slug", "twin"),
    [("polarization", "resnet-cifar"), ("masksparsity", "resnet-cifar"), ("pqi-sap:iterations=2", "resnet-cifar"),
     ("class-dependent", "resnet-cifar"), ("oto-hesso:backbone=mobilenetv2", "mobilenetv2")],
)  # fmt: skip
def test_each_method_runs_through_the_runner_and_deploys_a_physically_smaller_model(slug, twin, tmp_path):
    assert_operator_reports_ratio_to_fp32_twin(slug, tmp_path, twin=twin)
    record, model, reference = deployed(tmp_path, slug)
    facts = record.facts
    groups = channel_groups(model)
    assert len(groups) == len(channel_groups(reference)) == len(facts["kept_channels"])
    for group in groups:  # the deployed model's groups are those of the facts, with the kept channels only
        assert list(group.producers) == facts["group_producers"][str(group.index)]
        assert group.channels == facts["kept_channels"][str(group.index)]
        assert all(type(model.get_layer(name)) in PRODUCERS for name in group.producers)
    removed = facts["channel_sparsity"]
    before, after = count_complexity(reference), count_complexity(model)
    # Both sides of a removed channel go (its filter, and its slice of every reader): params fall faster.
    assert removed > 0 and after.params < (1 - removed) * before.params and after.macs < before.macs
    if slug.startswith("oto-hesso"):
        assert facts["removal_max_abs_error"] < 1e-4
    if slug == "class-dependent":
        assert len(facts["recall_before"]) == len(facts["recall_after"]) == 10
    x = np.random.default_rng(0).random((3, *reference.input_shape[1:]), dtype=np.float32)
    path = tmp_path / "again.keras"
    model.save(path)
    np.testing.assert_allclose(load_keras_model(path).predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
