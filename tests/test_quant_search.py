"""The quantization suite's two searches: simq-nas (elastic width x bit policy, NSGA-II on a predictor) and
quantnas (differentiable bit-width / block search against quantization noise)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from effbench.channels import channel_groups
from effbench.graph import rewrite
from effbench.method import MAIN, MethodRef
from effbench.modelfile import load_keras_model
from effbench.records import ResultStore
from effbench.runner import execute_plan, make_plan
from effbench.tf import keras, tf
from suites.quantization._bit_choice import kernel_step, quantization_noise
from suites.quantization.quantnas import (
    BITS as QUANTNAS_BITS,
)
from suites.quantization.quantnas import (
    DifferentiableSearch,
    NoiseSupernet,
    QuantNAS,
    bypass,
    residual_blocks,
)
from suites.quantization.simq_nas import (
    ElasticSupernet,
    RidgePredictor,
    SimQNAS,
    elastic_groups,
    spread_along_front,
)
from tracks.complexity import count_complexity

INPUT_SHAPE = (8, 8, 1)


def small_resnet() -> keras.Model:
    """ResNet-8 on 8x8 digits-shaped inputs: one identity block, two with projection shortcuts."""
    return MethodRef.parse("resnet-cifar:depth=8").create().build(INPUT_SHAPE, 10)


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, *INPUT_SHAPE)).astype(np.float32)


# ---------------------------------------------------------------- simq-nas: the search


def test_the_points_spread_along_the_front_are_distinct_and_most_accurate_first():
    # (error, cost): five on the first front, then two dominated points.
    table = np.array([[0.1, 9], [0.2, 7], [0.3, 5], [0.4, 3], [0.5, 1], [0.35, 8], [0.6, 6]])
    assert spread_along_front(table, 3) == [0, 2, 4]
    assert spread_along_front(table, 5) == [0, 1, 2, 3, 4]
    # A front shorter than asked is completed from the next one, never repeating a point.
    assert spread_along_front(table, 7) == [0, 1, 2, 3, 4, 5, 6]


def test_the_predictor_fits_a_known_linear_table():
    rng = np.random.default_rng(0)
    cardinalities = np.array([3, 3, 2, 2, 2])
    table = [rng.normal(size=n) for n in cardinalities]  # the value each choice of each gene adds

    def truth(genomes):
        return np.array([sum(table[gene][choice] for gene, choice in enumerate(genome)) for genome in genomes])

    train, test = rng.integers(0, cardinalities, (120, 5)), rng.integers(0, cardinalities, (40, 5))
    predicted = RidgePredictor(cardinalities).fit(train, truth(train)).predict(test)
    np.testing.assert_allclose(predicted, truth(test), atol=0.05)


# ---------------------------------------------------------------- simq-nas: the elastic super-network


@pytest.fixture(scope="module")
def elastic():
    """A ResNet-8 super-network and one sub-network extracted from it (half width where it can, 4 bits)."""
    supernet = ElasticSupernet(small_resnet())
    genome = supernet.space.smallest()
    genome[len(supernet.space.groups) :: 2] = 0  # every other layer back at 8 bits
    samples = images(128)
    pruned, quantized = supernet.extract(genome, samples)
    return supernet, genome, samples, pruned, quantized


def test_the_elastic_groups_are_the_channel_groups_but_those_a_flatten_reads():
    model = small_resnet()
    assert elastic_groups(model) == channel_groups(model)  # residual streams included, as one group each
    inputs = keras.Input(INPUT_SHAPE)
    hidden = keras.layers.Conv2D(4, 3, name="first")(keras.layers.Conv2D(6, 3, name="stem")(inputs))
    flat = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(hidden)))
    assert [group.producers for group in elastic_groups(flat)] == [("stem",)]


def test_a_pruned_subnetwork_is_smaller_and_computes_what_the_masked_network_computes(elastic):
    supernet, genome, samples, pruned, quantized = elastic
    full, small = count_complexity(supernet.template), count_complexity(pruned)
    assert small.params < full.params and small.macs < full.macs
    kept = supernet.space.kept_channels(genome)
    assert [len(kept[group.index]) for group in supernet.space.groups] == supernet.space.kept(genome)
    assert sum(len(k) for k in kept.values()) < sum(group.channels for group in supernet.space.groups)
    # Float: the whole network, its readers' weights on the dropped channels zeroed, computes the same logits.
    masked = rewrite(supernet.template, lambda layer: None)
    for group, readers in zip(supernet.space.groups, supernet.readers, strict=True):
        dropped = np.setdiff1d(np.arange(group.channels), kept[group.index])
        for name in readers:
            kernel = masked.get_layer(name).kernel.numpy()
            kernel[..., dropped, :] = 0.0
            masked.get_layer(name).kernel.assign(kernel)
    x = images(64, seed=1)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-4)
    # Quantized: the super-network at this genome (masks, policy, recalibration) and the deployable agree,
    # up to the rare rounding that float summation order flips.
    supernet.set(genome, samples)
    deployed, searched = quantized.predict(x, verbose=0), supernet.logits(x)
    assert np.median(np.abs(deployed - searched)) < 1e-3
    assert np.mean(deployed.argmax(axis=-1) == searched.argmax(axis=-1)) >= 0.9


def test_the_search_counts_bops_and_size_exactly_as_the_complexity_track(elastic):
    supernet, genome, _, _, quantized = elastic
    report = count_complexity(quantized)
    assert supernet.cost(genome) == (report.bops, report.size_bits)
    assert {row.w_bits for row in report.layers if row.macs} == {4, 8}


def test_an_extracted_subnetwork_saves_and_reloads(elastic, tmp_path):
    quantized = elastic[4]
    quantized.save(tmp_path / "subnetwork.keras")
    reloaded = load_keras_model(tmp_path / "subnetwork.keras")
    x = images(16, seed=2)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), quantized.predict(x, verbose=0), atol=1e-5)
    assert count_complexity(reloaded).bops == count_complexity(quantized).bops


# ---------------------------------------------------------------- quantnas


def test_quantization_noise_has_the_variance_of_one_step_and_passes_the_gradient():
    step = 0.25
    x = tf.zeros((400_000,))
    with tf.GradientTape() as tape:
        tape.watch(x)
        noisy = quantization_noise(x, step)
    noise = noisy.numpy()
    assert abs(noise.mean()) < 2e-3 and np.abs(noise).max() <= step / 2
    assert noise.var() == pytest.approx(step**2 / 12, rel=0.02)
    np.testing.assert_array_equal(tape.gradient(noisy, x).numpy(), np.ones(400_000))
    # A kernel's noise has its own channel's step: max |W_c| / (2^(b-1) - 1).
    kernel = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 64, 2)) * [[1.0, 10.0]], tf.float32)
    steps = kernel_step(kernel, 4).numpy()
    np.testing.assert_allclose(steps, np.abs(kernel.numpy()).max(axis=(0, 1, 2)) / 7, rtol=1e-6)
    per_channel = (quantization_noise(kernel, steps) - kernel).numpy().reshape(-1, 2)
    np.testing.assert_allclose(per_channel.var(axis=0), steps**2 / 12, rtol=0.1)


@pytest.fixture(scope="module")
def toy_search():
    """Searches on a two-layer MLP learning a fixed linear labelling of random inputs, each from the start."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 4))).argmax(axis=1).astype(np.int32)
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Dense(16, activation="relu")(inputs)))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    supernet = NoiseSupernet(model)
    search = DifferentiableSearch(supernet, keras.optimizers.Adam(1e-2), keras.optimizers.Adam(0.1, beta_1=0.5))

    def run(bitops_weight: float, entropy_weight: float) -> NoiseSupernet:
        tf.random.set_seed(0)
        search.run(data, data, 30, bitops_weight, entropy_weight)
        return supernet

    return run


def mean_bits(supernet: NoiseSupernet) -> float:
    return float(np.mean([np.dot(layer.probabilities().numpy(), QUANTNAS_BITS) for layer in supernet.layers]))


def test_the_entropy_term_makes_each_relaxed_choice_one_hot(toy_search):
    free = float(toy_search(0.0, 0.0).entropy())
    regularised = toy_search(0.0, 2.0)
    assert regularised.confidence() > 0.99
    assert float(regularised.entropy()) < 0.1 * free


def test_the_bitops_penalty_moves_the_choice_to_fewer_bits_as_its_weight_grows(toy_search):
    widths = [mean_bits(toy_search(weight, 0.0)) for weight in (0.0, 0.3, 3.0)]
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 3.0


def test_a_skipped_block_is_gone_and_the_rest_computes_as_before():
    model = small_resnet()
    blocks = residual_blocks(model)
    assert len(blocks) == 1  # the identity block; the projection blocks cannot be skipped
    (block,) = blocks
    skipped = bypass(model, {block.add: block.shortcut})
    assert not set(block.branch) & {layer.name for layer in skipped.layers}
    assert count_complexity(skipped).macs < count_complexity(model).macs
    # With the branch's last batch norm zeroed the block adds nothing: the full model computes the same.
    last = model.get_layer(block.branch[-1])
    last.set_weights([np.zeros_like(w) if i < 2 else w for i, w in enumerate(last.get_weights())])
    x = images(32)
    np.testing.assert_allclose(skipped.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


# ---------------------------------------------------------------- both methods


def test_deployable_names_follow_the_options_only():
    assert SimQNAS().deployable_names() == (MAIN, "pareto-1", "pareto-2")
    assert SimQNAS(points=1).deployable_names() == (MAIN,)
    assert QuantNAS().deployable_names() == (MAIN, "bitops-weight=0.1", "bitops-weight=1")
    assert QuantNAS(points=4, bitops_weight=2.0).penalties() == pytest.approx([0.0, 0.02, 0.2, 2.0])
    with pytest.raises(ValueError):
        SimQNAS(cost="latency")


def test_both_searches_run_through_the_runner_and_every_deployable_is_measured(tmp_path):
    methods = ["simq-nas:backbone=resnet-cifar:depth=8,points=2", "quantnas:backbone=resnet-cifar:depth=8,points=2"]
    store = ResultStore(tmp_path)
    jobs = make_plan([MethodRef.parse(m) for m in methods], ["digits"], [0], ["accuracy", "complexity"], "smoke", store)
    assert [job.training.method.slug for job in jobs] == ["resnet-cifar", "simq-nas", "quantnas"]
    results = execute_plan(jobs, store, log=lambda _: None)
    assert not any(result.failures for result in results)
    for result, names in zip(results[1:], [("", "pareto-1"), ("", "bitops-weight=1")], strict=True):
        records = {(r.track, r.deployable): r for r in result.records}
        assert sorted(records) == sorted(itertools.product(["accuracy", "complexity"], names))
        for name in names:
            accuracy = {m.name: m.value for m in records[("accuracy", name)].metrics if m.scope == ""}
            complexity = {m.name: m.value for m in records[("complexity", name)].metrics if m.scope == ""}
            facts = records[("accuracy", name)].facts
            assert accuracy["top1_relative"] == pytest.approx(accuracy["top1"] / accuracy["fp32_top1"])
            assert facts["bit_widths"] and facts["simulated"] == any(min(w) < 8 for w in facts["bit_widths"].values())
            # The search's own exact BitOps is what the complexity track counts.
            searched = facts["search"]["bops"] if "pareto_point" in facts["search"] else facts["search"]["bitops"]
            assert complexity["bops"] == searched
