"""MST-compression: the channel tree, exact reuse arithmetic, an unchanged model and its reduced BOPs."""

import larq
import numpy as np
import pytest
from scipy.sparse.csgraph import minimum_spanning_tree as scipy_mst

from effbench.method import MethodRef
from effbench.records import ResultStore
from effbench.registry import METHODS, TASKS, load_builtin_entries
from effbench.runner import execute_plan, make_plan
from effbench.tf import keras
from suites.binarization.mst import (
    MSTQuantConv2D,
    MSTQuantDense,
    channel_signs,
    hamming_distances,
    minimum_spanning_tree,
    mst_compress,
    mst_layers,
    tree_forward,
)
from tracks.complexity import count_complexity

load_builtin_entries()

# Four channels of K = 6 bits: 0-1 and 1-2 differ in one bit, 2-3 in four; 3 is 0's negation (6).
SIGNS = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, -1], [1, 1, 1, 1, -1, -1], [-1, -1, -1, -1, -1, -1]], np.int8)


def eccentricity(plan, start):
    """Longest tree distance (in edges) from ``start``."""
    neighbours = {c: set() for c in range(plan.channels)}
    for child, parent in enumerate(plan.parent):
        if parent >= 0:
            neighbours[child].add(parent)
            neighbours[parent].add(child)
    level, frontier, seen = 0, {start}, {start}
    while True:
        frontier = {n for c in frontier for n in neighbours[c]} - seen
        if not frontier:
            return level
        seen |= frontier
        level += 1


def test_mst_is_registered_as_a_compression_of_the_backbone():
    spec = METHODS.get("mst").spec
    assert (spec.suite, spec.kind, spec.scale) == ("binarization", "compression", "small-faithful")
    assert spec.paper.url == "https://arxiv.org/abs/2308.13735" and spec.paper.year == 2023
    method = MethodRef.parse("mst").create()
    assert method.fp32_twin("resnet-cifar") == "resnet-cifar"
    assert MethodRef.parse("mst:backbone=vgg-small").create().fp32_twin("resnet-cifar") == "vgg-small"
    digits = TASKS.get("digits").spec
    assert method.requires(digits) == {"trained": MethodRef("bnn")}
    assert MethodRef.parse("mst:backbone=vgg-small").create().requires(digits) == {
        "trained": MethodRef("bnn", (("backbone", "vgg-small"),))
    }


def test_channel_signs_read_output_channels_from_the_last_kernel_axis():
    kernel = np.zeros((1, 2, 3, 4), np.float32)
    kernel[..., 1] = -0.5
    kernel[0, 1, 2, 3] = -1.0
    signs = channel_signs(kernel)
    assert signs.shape == (4, 6)
    np.testing.assert_array_equal(signs[0], np.ones(6))  # sign(0) = +1
    np.testing.assert_array_equal(signs[1], -np.ones(6))
    assert list(signs[3]) == [1, 1, 1, 1, 1, -1]
    distances = hamming_distances(signs)
    assert distances[0, 1] == 6 and distances[0, 3] == 1 and distances[1, 3] == 5 and np.all(np.diag(distances) == 0)


def test_the_tree_of_a_small_layer_is_its_chain_rooted_at_the_centre():
    plan = minimum_spanning_tree(SIGNS)
    edges = sorted(
        tuple(sorted((c, p))) + (d,) for c, (p, d) in enumerate(zip(plan.parent, plan.distance, strict=True)) if p >= 0
    )
    assert edges == [(0, 1, 1), (1, 2, 1), (2, 3, 4)]
    assert plan.root in (1, 2) and plan.depth == 2 and plan.distance[plan.root] == 6
    assert (plan.binary_ops, plan.dense_binary_ops) == (6 + 6, 24)


@pytest.mark.parametrize("seed", range(4))
def test_the_tree_is_a_minimum_spanning_tree_rooted_at_minimum_depth(seed):
    rng = np.random.default_rng(seed)
    base = np.where(rng.random(40) < 0.5, 1, -1)
    # Channels that are noisy copies of a few prototypes, as trained kernels tend to be.
    signs = np.array([base * np.where(rng.random(40) < rng.uniform(0.05, 0.5), -1, 1) for _ in range(17)], np.int8)
    plan = minimum_spanning_tree(signs)
    distances = hamming_distances(signs)
    # scipy drops zero-weight edges, so shift every edge by one: an MST of n nodes has n - 1 edges.
    reference = scipy_mst(distances + 1 - np.eye(len(signs), dtype=np.int64)).sum() - (len(signs) - 1)
    assert plan.binary_ops - plan.fan_in == reference
    assert plan.parent.count(-1) == 1 and sorted(plan.order()) == list(range(17))
    for child, parent in enumerate(plan.parent):
        if parent >= 0:
            assert plan.distance[child] == distances[child, parent]
    assert plan.depth == eccentricity(plan, plan.root) == min(eccentricity(plan, c) for c in range(17))


def test_computing_channels_from_their_parents_is_exact_and_costs_the_plan():
    rng = np.random.default_rng(0)
    signs = np.where(rng.random((12, 30)) < 0.5, 1, -1).astype(np.int8)
    signs[5] = signs[2]  # a duplicate channel costs nothing
    inputs = np.where(rng.random((7, 30)) < 0.5, 1, -1)
    plan = minimum_spanning_tree(signs)
    outputs, operations = tree_forward(inputs, signs, plan)
    np.testing.assert_array_equal(outputs, inputs @ signs.T.astype(np.int64))
    assert operations == plan.binary_ops < plan.dense_binary_ops
    assert plan.distance[5] == 0 or plan.distance[2] == 0 or plan.root in (2, 5)


@pytest.fixture(scope="module")
def bnn_and_mst():
    bnn = MethodRef.parse("bnn").create().build(TASKS.get("digits").spec)
    rng = np.random.default_rng(0)
    for layer in bnn.layers:  # trained-looking kernels: channels that share most of their bits
        if isinstance(layer, larq.layers.QuantConv2D):
            kernel = layer.kernel.numpy()
            prototype = rng.normal(size=kernel.shape[:-1] + (1,))
            layer.kernel.assign((prototype + rng.normal(scale=0.6, size=kernel.shape)).astype(np.float32))
    return bnn, mst_compress(bnn)


def test_compression_keeps_the_model_and_swaps_only_the_binary_layers(bnn_and_mst):
    bnn, compressed = bnn_and_mst
    assert [layer.name for layer in compressed.layers] == [layer.name for layer in bnn.layers]
    for before, after in zip(bnn.layers, compressed.layers, strict=True):
        if type(before) is larq.layers.QuantConv2D:
            assert type(after) is MSTQuantConv2D
        elif type(before) is larq.layers.QuantDense:
            assert type(after) is MSTQuantDense
        else:
            assert type(after) is type(before)
    assert len(mst_layers(compressed)) == sum(isinstance(layer, larq.layers.QuantConv2D) for layer in bnn.layers)
    x = np.random.default_rng(1).standard_normal((16, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(compressed.predict(x, verbose=0), bnn.predict(x, verbose=0))


def test_complexity_counts_each_compressed_layer_along_its_tree(bnn_and_mst):
    bnn, compressed = bnn_and_mst
    dense_rows = {row.name: row for row in count_complexity(bnn).layers}
    report = count_complexity(compressed)
    rows = {row.name: row for row in report.layers}
    for layer in mst_layers(compressed):
        plan, row, dense = layer.mst_plan(), rows[layer.name], dense_rows[layer.name]
        positions = int(np.prod(layer.output_shape[1:-1]))
        assert (row.w_bits, row.a_bits) == (1, 1)
        assert dense.macs == plan.dense_binary_ops * positions  # the plain count: K x C_out per position
        assert row.macs == row.bops == plan.binary_ops * positions < dense.bops
        channels = layer.output_shape[-1]
        extra = (channels - 1) * positions + int(layer.use_bias) * positions * channels
        assert row.flops == 2 * row.macs + extra
        assert (row.params, row.size_bits) == (dense.params, dense.size_bits)
    for name, row in rows.items():  # float layers are counted as before
        if name not in {layer.name for layer in mst_layers(compressed)}:
            assert (row.macs, row.bops) == (dense_rows[name].macs, dense_rows[name].bops)
    binary = [layer.name for layer in mst_layers(compressed)]
    assert sum(rows[n].bops for n in binary) < 0.7 * sum(dense_rows[n].bops for n in binary)


def test_a_compressed_model_saves_reloads_and_counts_the_same(bnn_and_mst, tmp_path):
    _, compressed = bnn_and_mst
    compressed.save(tmp_path / "mst.keras")
    reloaded = keras.models.load_model(tmp_path / "mst.keras")
    assert [type(layer) for layer in reloaded.layers] == [type(layer) for layer in compressed.layers]
    x = np.random.default_rng(2).standard_normal((4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), compressed.predict(x, verbose=0))
    assert count_complexity(reloaded).bops == count_complexity(compressed).bops


def test_dense_binary_layers_are_compressed_too():
    inputs = keras.Input((12,))
    x = keras.layers.Dense(9)(inputs)
    x = larq.layers.QuantDense(8, input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    compressed = mst_compress(model)
    layer = mst_layers(compressed)[0]
    plan = layer.mst_plan()
    row = {r.name: r for r in count_complexity(compressed).layers}[layer.name]
    assert row.bops == plan.binary_ops and row.flops == 2 * plan.binary_ops + 7
    x = np.random.default_rng(3).standard_normal((5, 12)).astype(np.float32)
    np.testing.assert_array_equal(compressed.predict(x, verbose=0), model.predict(x, verbose=0))
    signs = channel_signs(layer.kernel.numpy())
    binary_inputs = np.where(keras.Model(compressed.input, layer.input)(x).numpy() >= 0, 1, -1)
    outputs, _ = tree_forward(binary_inputs, signs, plan)
    np.testing.assert_allclose(outputs, keras.Model(compressed.input, layer.output)(x).numpy())
    assert plan.order()[0] == plan.root


def test_mst_starts_from_the_trained_bnn_without_training_it_again(tmp_path):
    store = ResultStore(tmp_path)
    jobs = make_plan([MethodRef("bnn"), MethodRef("mst")], ["digits"], [0], ["accuracy", "training_cost"], "smoke",
                     store)  # fmt: skip
    assert [str(job.training.method) for job in jobs] == ["resnet-cifar", "bnn", "mst"]
    messages = []
    results = execute_plan(jobs, store, log=messages.append)
    assert not any(result.failures for result in results)
    assert sum(message.startswith("training bnn") for message in messages) == 1
    bnn, mst = ({m.name: m.value for m in r.records[0].metrics} for r in results[1:])
    # The compressed model computes exactly what the BNN computes, and reports the ratio to the float twin.
    assert mst["top1"] == bnn["top1"] and mst["fp32_top1"] == bnn["fp32_top1"]
    cost = {m.name: m.value for m in results[2].records[1].metrics}
    bnn_cost = {m.name: m.value for m in results[1].records[1].metrics}
    # Its upstreams: the BNN's fine-tuning and, through it, the float twin's training (bnn starts from it).
    lineage = bnn_cost["train_seconds"] + bnn_cost["upstream_train_seconds"]
    assert cost["upstream_train_seconds"] == pytest.approx(lineage) and cost["epochs"] == 0
