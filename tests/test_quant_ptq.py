"""The hand-written post-training quantizers (zeroq, adaquant, hessian-mp) and their shared mixed-precision code."""

import itertools

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.modelfile import load_keras_model
from effbench.registry import TASKS, load_builtin_entries
from effbench.tf import keras, tf
from suites.quantization import _mixed_precision as mp
from suites.quantization._uniform import WeightQuantizer, fake_quantize, max_abs_step, quantizable_layer_names
from suites.quantization.adaquant import GroupAdam, LearnedStepWeightQuantizer, adaquant_layer
from suites.quantization.hessian_mp import (
    Float16Quantizer,
    activation_quantizer,
    bisect_layers,
    dependency_scores,
    int8_float16_flatbuffer,
    parse_precisions,
    weight_quantizer,
)
from suites.quantization.zeroq import bn_statistics_loss, distill
from tests.conftest import assert_operator_reports_ratio_to_fp32_twin
from tracks.complexity import count_complexity

load_builtin_entries()

DIGITS = TASKS.get("digits").factory().spec
# A small BN backbone for the unit tests, and the one the runner smoke runs quantize (its twin trains once).
SMALL = "resnet-cifar:depth=8"


def small_model(seed: int = 0) -> keras.Model:
    """ResNet-8 on digits with random BN running statistics, so its BN loss is not trivially that of N(0, 1)."""
    keras.utils.set_random_seed(seed)
    model = MethodRef.parse(SMALL).create().build(DIGITS.input_shape, DIGITS.num_classes)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0.0, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.2, 2.0, layer.moving_variance.shape))
    return model


def mlp_model() -> keras.Model:
    return MethodRef.parse("mlp:units=8").create().build(DIGITS.input_shape, DIGITS.num_classes)


# ---------------------------------------------------------------- zeroq's distillation


def test_bn_statistics_loss_is_the_papers_sum_over_bn_layers():
    inputs = keras.Input((4, 4, 2))
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inputs, bn(inputs))
    mean, variance = np.array([0.5, -1.0], np.float32), np.array([4.0, 0.25], np.float32)
    bn.moving_mean.assign(mean)
    bn.moving_variance.assign(variance)
    x = np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype(np.float32)
    batch_mean, batch_std = x.mean(axis=(0, 1, 2)), np.sqrt(x.var(axis=(0, 1, 2)) + 1e-6)
    expected = np.sum((batch_mean - mean) ** 2) + np.sum((batch_std - np.sqrt(variance + 1e-6)) ** 2)
    assert float(bn_statistics_loss(model)(tf.constant(x))) == pytest.approx(expected, rel=1e-5)


def test_distillation_reduces_the_bn_statistics_loss():
    model = small_model()
    data, losses = distill(model, iterations=30, batch=8, seed=0)
    assert data.shape == (8, *DIGITS.input_shape)
    assert losses[-1] < 0.8 * losses[0]
    assert float(bn_statistics_loss(model)(tf.constant(data))) == pytest.approx(losses[-1], rel=1e-5)


def test_zeroq_refuses_a_backbone_without_batch_norm():
    model = mlp_model()
    with pytest.raises(ValueError, match=f"'{model.name}' has no BatchNormalization"):
        MethodRef.parse("zeroq").create().quantize(model, None)


# ---------------------------------------------------------------- bit allocation


def tiny_table(seed: int = 0) -> tuple[dict[str, dict[int, float]], dict[str, int]]:
    """Four layers, widths {2, 4, 8}, costs falling with the width (continuous: no ties), distinct sizes."""
    rng = np.random.default_rng(seed)
    table = {}
    for name in "abcd":
        costs = np.sort(rng.uniform(0.0, 1.0, 3))[::-1]
        table[name] = dict(zip(mp.CANDIDATE_BITS, costs.tolist(), strict=True))
    return table, {"a": 3, "b": 7, "c": 11, "d": 20}


def brute_force(table, sizes):
    names = list(table)
    for choice in itertools.product(*(table[name] for name in names)):
        bits = dict(zip(names, choice, strict=True))
        yield bits, sum(sizes[n] * b for n, b in bits.items()), sum(table[n][b] for n, b in bits.items())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dp_frontier_is_the_brute_force_pareto_set(seed):
    table, sizes = tiny_table(seed)
    every = list(brute_force(table, sizes))
    pareto = sorted((size, cost) for _, size, cost in every if not any(s <= size and c < cost for _, s, c in every))
    frontier = mp.pareto_frontier(table, sizes)
    assert [point.size_bits for point in frontier] == [size for size, _ in pareto]
    assert [point.cost for point in frontier] == pytest.approx([cost for _, cost in pareto])
    for budget in range(2 * sum(sizes.values()), 8 * sum(sizes.values()) + 1, 7):
        best = min((entry for entry in every if entry[1] <= budget), key=lambda entry: entry[2])
        assert mp.cheapest_within(frontier, budget).bits == best[0]


@pytest.mark.parametrize("seed", [0, 3])
def test_integer_program_chooses_what_brute_force_chooses(seed):
    table, sizes = tiny_table(seed)
    every = list(brute_force(table, sizes))
    for budget in range(2 * sum(sizes.values()), 8 * sum(sizes.values()) + 1, 9):
        best = min((entry for entry in every if entry[1] <= budget), key=lambda entry: entry[2])
        allocation = mp.integer_program(table, sizes, budget)
        assert allocation.bits == best[0]
        assert allocation.size_bits == best[1] and allocation.cost == pytest.approx(best[2])


def test_a_budget_below_the_smallest_allocation_is_an_error():
    table, sizes = tiny_table()
    with pytest.raises(ValueError, match="below the smallest allocation"):
        mp.integer_program(table, sizes, 2 * sum(sizes.values()) - 1)
    with pytest.raises(ValueError, match="below the smallest allocation"):
        mp.cheapest_within(mp.pareto_frontier(table, sizes), 2 * sum(sizes.values()) - 1)


def test_budgets_and_their_deployable_names():
    assert mp.parse_budgets("4/6/8", "budgets") == (4.0, 6.0, 8.0)
    assert mp.parse_budgets(4, "budgets") == (4.0,)
    assert mp.budget_names("avg-bits", (4.0, 2.5, 8.0)) == ("", "avg-bits=2.5", "avg-bits=8")
    with pytest.raises(ValueError, match="repeats"):
        mp.parse_budgets("4/4", "budgets")
    assert MethodRef.parse("zeroq:budgets=3/8").create().deployable_names() == ("", "avg-bits=8")
    assert MethodRef.parse("hessian-mp:budgets=0.01/0.05").create().deployable_names() == ("", "max-drop=0.05")
    assert parse_precisions("16/8") == (16, 8)
    with pytest.raises(ValueError, match="precisions"):
        MethodRef.parse("hessian-mp:precisions=4/8").create()


def test_kernel_quantized_swaps_in_the_max_abs_grid_and_restores():
    model = small_model()
    layer = model.get_layer(quantizable_layer_names(model)[1])
    original = layer.kernel.numpy()
    with mp.kernels_quantized(model, [layer.name], 2):
        values = layer.kernel.numpy()
        step = np.abs(original).max(axis=(0, 1, 2)) / 1  # 2 bits, signed: q_max = 1
        np.testing.assert_allclose(values, step * np.clip(np.round(original / step), -1, 1), rtol=1e-6)
    np.testing.assert_array_equal(layer.kernel.numpy(), original)


# ---------------------------------------------------------------- hessian-mp's pieces


def test_hutchinson_is_exact_on_a_quadratic_with_diagonal_blocks():
    diagonal = [np.array([1.0, -2.0, 3.5], np.float32), np.array([[0.5, 4.0]], np.float32)]
    variables = [tf.Variable(np.ones_like(d)) for d in diagonal]

    def loss():
        return sum(0.5 * tf.reduce_sum(d * v**2) for d, v in zip(diagonal, variables, strict=True))

    traces = mp.hutchinson_traces(loss, variables, samples=1, seed=0)
    np.testing.assert_allclose(traces, [d.sum() for d in diagonal], rtol=1e-6)


def test_hutchinson_matches_the_exact_block_traces_of_a_dense_quadratic():
    rng = np.random.default_rng(0)
    root = rng.normal(size=(5, 5))
    hessian = (root @ root.T / 5 + np.diag([3.0, 1.0, 2.0, 4.0, 1.5])).astype(np.float32)
    variables = [tf.Variable(rng.normal(size=2).astype(np.float32)), tf.Variable(rng.normal(size=3).astype(np.float32))]

    def loss():
        x = tf.concat(variables, axis=0)
        return 0.5 * tf.tensordot(x, tf.linalg.matvec(hessian, x), 1)

    traces = mp.hutchinson_traces(loss, variables, samples=400, seed=1)
    exact = [np.trace(hessian[:2, :2]), np.trace(hessian[2:, 2:])]
    np.testing.assert_allclose(traces, exact, rtol=0.1)


def test_dependency_is_shared_half_half_between_adjacent_layers():
    single = {"a": 1.0, "b": 2.0, "c": 0.5}
    pair = {("a", "b"): 4.0, ("b", "c"): 2.0}  # dependencies 1.0 and -0.5
    assert dependency_scores(["a", "b", "c"], single, pair) == pytest.approx({"a": 0.5, "b": 0.25, "c": -0.25})


@pytest.mark.parametrize("boundary", [0, 1, 6, 10])
def test_bisection_finds_the_last_feasible_count(boundary):
    asked = []

    def feasible(k):
        asked.append(k)
        return k <= boundary

    assert bisect_layers(10, feasible) == boundary
    assert len(asked) <= 4


def test_int8_float16_flatbuffer_mixes_per_layer():
    from ai_edge_litert.interpreter import Interpreter

    from effbench.tflite import litert_predict

    model = small_model()
    names = quantizable_layer_names(model)
    x = np.random.default_rng(0).uniform(size=(16, *DIGITS.input_shape)).astype(np.float32)
    content = int8_float16_flatbuffer(model, {names[1]}, x)
    dtypes = {}
    for detail in Interpreter(model_content=content).get_tensor_details():
        for name in names:
            if f"/{name}/" in detail["name"] and len(detail["shape"]) in (2, 4) and "Conv2D" in detail["name"]:
                dtypes.setdefault(name, set()).add(detail["dtype"].__name__)
    assert "int8" in dtypes[names[1]] and "float16" not in dtypes[names[1]]
    assert "float16" in dtypes[names[2]]
    reference = model.predict(x, verbose=0)
    np.testing.assert_allclose(litert_predict(content, x, 1), reference, atol=0.05 * np.abs(reference).max())


# ---------------------------------------------------------------- quantizers, bit maps, save and reload


def test_learned_step_quantizer_uses_max_abs_until_set_then_its_step():
    kernel = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 2, 4)).astype(np.float32))
    quantizer = LearnedStepWeightQuantizer(4)
    np.testing.assert_allclose(quantizer(kernel), WeightQuantizer(4)(kernel), rtol=1e-6)
    step = np.array([0.1, 0.2, 0.05, 0.3], np.float32)
    quantizer.step.assign(step)
    np.testing.assert_allclose(quantizer(kernel), step * np.clip(np.round(kernel / step), -7, 7), rtol=1e-6)
    np.testing.assert_allclose(quantizer.initial_step(kernel), max_abs_step(kernel, 4), rtol=1e-6)


def test_float16_quantizer_rounds_to_half_precision():
    x = tf.constant([1.0 + 2.0**-12, 3.14159265, 1e-8], tf.float32)
    np.testing.assert_array_equal(Float16Quantizer()(x), x.numpy().astype(np.float16).astype(np.float32))
    assert Float16Quantizer.precision == 16


def mixed_model():
    model = small_model()
    names = quantizable_layer_names(model)
    widths = dict(zip(names, itertools.cycle([(2, 8), (4, 8), (8, 8)])))
    x = np.random.default_rng(0).uniform(size=(8, *DIGITS.input_shape)).astype(np.float32)
    return mp.fake_quantized(model, widths, x, LearnedStepWeightQuantizer), widths, model


def test_the_bit_map_in_the_facts_is_what_complexity_counts():
    quantized, widths, float_model = mixed_model()
    facts = mp.deployable_facts(quantized, None, {"split": "none"}, {"avg_bits": 4})
    assert facts["simulated"] is True
    assert facts["bit_widths"] == {name: list(bits) for name, bits in widths.items()}
    rows = {row.name: row for row in count_complexity(quantized).layers}
    sizes = mp.kernel_sizes(float_model, list(widths))
    for name, (w_bits, a_bits) in facts["bit_widths"].items():
        assert (rows[name].w_bits, rows[name].a_bits) == (w_bits, a_bits)
        assert rows[name].bops == rows[name].macs * w_bits * a_bits
        assert rows[name].kernel_params == sizes[name]
    halves = mp.fake_quantized(
        float_model, {name: (16, 16) for name in widths}, np.zeros((2, *DIGITS.input_shape), np.float32),
        weight_quantizer, activation_quantizer,
    )  # fmt: skip
    assert all((row.w_bits, row.a_bits) == (16, 16) for row in count_complexity(halves).layers if row.name in widths)


def test_quantized_models_save_and_reload(tmp_path):
    quantized, widths, float_model = mixed_model()
    name = next(iter(widths))
    quantized.get_layer(name).kernel_quantizer.step.assign(np.full(quantized.get_layer(name).kernel.shape[-1], 0.05))
    halves = mp.fake_quantized(
        float_model, {n: (16, 16) for n in widths}, np.zeros((2, *DIGITS.input_shape), np.float32),
        weight_quantizer, activation_quantizer,
    )  # fmt: skip
    x = np.random.default_rng(1).uniform(size=(4, *DIGITS.input_shape)).astype(np.float32)
    for index, model in enumerate((quantized, halves)):
        path = tmp_path / f"model-{index}.keras"
        model.save(path)
        reloaded = load_keras_model(path)
        np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
        assert mp.deployable_facts(reloaded, None, {}, {})["bit_widths"] == mp.bit_width_facts(model)


def test_group_adam_takes_adams_first_step_at_each_variables_own_rate():
    variables = [tf.Variable([1.0, -2.0]), tf.Variable([[0.5]])]
    optimizer = GroupAdam([0.1, 0.01], variables)
    optimizer.step([tf.constant([3.0, -0.5]), tf.constant([[-2.0]])])  # first step: -rate * sign(g)
    np.testing.assert_allclose(variables[0].numpy(), [0.9, -1.9], rtol=1e-5)
    np.testing.assert_allclose(variables[1].numpy(), [[0.51]], rtol=1e-5)


def test_adaquant_lowers_a_layers_output_error():
    rng = np.random.default_rng(0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(5, name="dense")(inputs))
    x = rng.normal(size=(64, 6)).astype(np.float32)
    target = model.predict(x, verbose=0)
    quantized = mp.fake_quantized(model, {"dense": (2, 8)}, x, LearnedStepWeightQuantizer)
    before, after = adaquant_layer(quantized.get_layer("dense"), x, target, iterations=100, seed=0)
    assert after < before
    layer = quantized.get_layer("dense")
    step = layer.kernel_quantizer.step.numpy()
    np.testing.assert_allclose(
        layer.kernel_quantizer(layer.kernel), fake_quantize(layer.kernel, step, 2), rtol=1e-6
    )  # the deployed kernel is the calibrated grid


# ---------------------------------------------------------------- the methods through the real runner


def run_facts(slug: str, store_dir) -> dict[str, tuple[dict, dict]]:
    """Run ``slug`` through the real runner at smoke (twin: ResNet-8); deployable -> (facts, metrics) of ``slug``."""
    from effbench.records import ResultStore

    metrics = assert_operator_reports_ratio_to_fp32_twin(slug, store_dir, twin=SMALL)
    assert 0.0 <= metrics["top1"] <= 1.0
    records = [record for record in ResultStore(store_dir).records() if record.method == slug.partition(":")[0]]
    return {r.deployable: (r.facts, {m.name: m.value for m in r.metrics}) for r in records}


def test_zeroq_through_the_runner_deploys_a_simulated_mix_and_an_int8_flatbuffer(tmp_path):
    runs = run_facts("zeroq:backbone=resnet-cifar:depth=8,budgets=4/8", tmp_path)
    assert set(runs) == {"", "avg-bits=8"}
    mixed, uniform = runs[""][0], runs["avg-bits=8"][0]
    assert mixed["simulated"] is True and uniform["simulated"] is False
    assert mixed["calibration"] == {"split": "none", "samples": 32, "source": "distilled from BN statistics"}
    assert mixed["budget"]["achieved_avg_bits"] <= 4.0
    assert {tuple(bits) for bits in uniform["bit_widths"].values()} == {(8, 8)}
    assert mixed["distillation"]["bn_loss_final"] < mixed["distillation"]["bn_loss_initial"]


def test_adaquant_through_the_runner(tmp_path):
    runs = run_facts("adaquant:backbone=resnet-cifar:depth=8,budgets=3", tmp_path)
    facts = runs[""][0]
    assert facts["simulated"] is True and facts["budget"]["achieved_avg_bits"] <= 3.0
    assert facts["calibration"]["labels"] is False
    first, *_, last = facts["bit_widths"]
    assert facts["kept_at_8_bits"] == [first, last] and facts["bit_widths"][first] == [8, 8]


def test_hessian_mp_through_the_runner_deploys_an_int8_float16_flatbuffer(tmp_path):
    runs = run_facts("hessian-mp:backbone=resnet-cifar:depth=8,budgets=0.05", tmp_path)
    facts, metrics = runs[""]
    assert facts["simulated"] is False and facts["precisions"] == [16, 8]
    assert facts["held_out_top1"] >= 0.95 * facts["baseline_top1"]
    low = set(facts["ranking"][: facts["low_precision_layers"]])
    assert {name for name, bits in facts["bit_widths"].items() if bits == [8, 8]} == low
    assert all(bits == [16, 16] for name, bits in facts["bit_widths"].items() if name not in low)
