"""The pruning suite's low-rank, recurrent, wrapping and BN-only methods: trp, rnn-sparsity, ap-activate, bn-only."""

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.modelfile import load_keras_model
from effbench.registry import TASKS
from effbench.tf import keras, tf
from effbench.training import TrainContext
from suites.architectures.lstm import INPUT_KERNEL, RECURRENT_KERNEL, LSTMClassifier
from suites.pruning import ap_activate, rnn_sparsity, trp
from suites.pruning._masks import MaskKeeper, apply_masks, sparsity_facts
from suites.pruning.bn_only import BatchNormOnly
from tests.conftest import assert_operator_reports_ratio_to_fp32_twin
from tracks.complexity import count_complexity

L = keras.layers


def with_singular_values(rows: int, columns: int, values: list[float], seed: int = 0) -> np.ndarray:
    """A (rows, columns) matrix whose singular values are ``values`` (random singular vectors)."""
    rng = np.random.default_rng(seed)
    left, _ = np.linalg.qr(rng.normal(size=(rows, len(values))))
    right, _ = np.linalg.qr(rng.normal(size=(columns, len(values))))
    return (left * np.asarray(values)) @ right.T


def smoke_context(task: str = "digits") -> TrainContext:
    spec = TASKS.get(task)
    instance = spec.factory()
    recipe = instance.recipe("smoke")
    return TrainContext(instance, instance.load().for_run(0, recipe.max_train_samples), recipe, 0, "smoke")


# ------------------------------------------------------------------------------------------------------ trp


@pytest.mark.parametrize("energy, rank", [(0.6, 1), (0.9, 2), (0.95, 3), (1.0, 3)])
def test_energy_rank_is_the_fewest_singular_values_holding_the_energy(energy, rank):
    # Squares 9, 4, 1 of 14: the first holds 0.643, two hold 0.929, three all of it.
    assert int(trp.energy_rank(tf.constant([3.0, 2.0, 1.0]), energy)) == rank


def test_nuclear_norm_is_the_sum_of_singular_values_with_sub_gradient_u_r_v_r_transposed():
    matrix = with_singular_values(6, 4, [4.0, 2.0, 1.0, 0.5])
    left, values, right = np.linalg.svd(matrix, full_matrices=False)
    w = tf.constant(matrix, tf.float32)
    for energy, rank in ((1.0, 4), (0.9, 2)):  # squares 16, 4, 1, 0.25: two hold 20 / 21.25 = 0.94
        with tf.GradientTape() as tape:
            tape.watch(w)
            norm = trp.nuclear_norm(w, energy)
        assert float(norm) == pytest.approx(values.sum(), rel=1e-5)
        expected = left[:, :rank] @ right[:rank]
        np.testing.assert_allclose(tape.gradient(norm, w).numpy(), expected, atol=1e-5)


def low_rank_toy() -> keras.Model:
    """A strided 3x3 conv (18 x 8 kernel matrix) and a dense layer (72 x 5), each of rank 2 at energy 0.95."""
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(8, 3, strides=2, padding="same", name="conv")(inputs)
    x = L.ReLU()(x)
    model = keras.Model(inputs, L.Dense(5, name="logits")(L.Flatten()(x)))
    conv = with_singular_values(18, 8, [5.0, 4.0, 0.5, 0.2, 0.1, 0.1, 0.05, 0.05], seed=1)
    dense = with_singular_values(72, 5, [3.0, 2.0, 0.1, 0.1, 0.1], seed=2)
    model.get_layer("conv").set_weights([conv.reshape(3, 3, 2, 8), np.full(8, 0.1)])
    model.get_layer("logits").set_weights([dense, np.arange(5, dtype=np.float32)])
    return model


def test_projection_keeps_rank_r_and_the_factorised_model_reproduces_it_exactly(tmp_path):
    model = low_rank_toy()
    original = count_complexity(model)
    factors = trp.project(trp.factorisable_layers(model), energy=0.95)
    for name in ("conv", "logits"):
        kernel = trp.kernel_matrix(model.get_layer(name).kernel).numpy()
        basis, mix = factors[name]
        assert basis.shape[1] == mix.shape[0] == 2 and np.linalg.matrix_rank(kernel, tol=1e-4) == 2
        np.testing.assert_allclose(basis @ mix, kernel, atol=1e-5)
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype(np.float32)
    deployed = trp.factorise(model, factors)
    np.testing.assert_allclose(deployed(x).numpy(), model(x).numpy(), atol=1e-4)
    first, second = deployed.get_layer("conv").layers
    assert (first.kernel.shape, first.strides, second.kernel.shape) == ((3, 3, 2, 2), (2, 2), (1, 1, 2, 8))
    # Physically smaller: 2 x (18 + 8) < 18 x 8 and 2 x (72 + 5) < 72 x 5, in weights and in MACs.
    counted = count_complexity(deployed)
    assert counted.params == original.params - (144 - 52) - (360 - 154)
    assert counted.macs < original.macs and counted.macs == 9 * 2 * 26 + 154
    deployed.save(tmp_path / "trp.keras")
    np.testing.assert_allclose(load_keras_model(tmp_path / "trp.keras")(x).numpy(), model(x).numpy(), atol=1e-4)


def test_a_layer_is_factorised_only_where_two_layers_are_smaller():
    assert trp.smaller_when_factorised(18, 8, 5) and not trp.smaller_when_factorised(18, 8, 6)  # 130 < 144 <= 156


def test_trp_takes_no_sparsity_target():
    with pytest.raises(ValueError, match="sparsity does not apply"):
        MethodRef.parse("trp:sparsity=0.5").create()


# ------------------------------------------------------------------------------------------------ the LSTM


def test_the_unrolled_lstm_computes_what_keras_lstm_computes_and_is_counted():
    model = LSTMClassifier(units=6).build((8, 8, 1), 10)
    inputs = keras.Input((8, 8))
    reference_layer = L.LSTM(6)
    reference = keras.Model(inputs, reference_layer(inputs))
    kernel, bias = model.get_layer(INPUT_KERNEL).get_weights()
    reference_layer.set_weights([kernel, model.get_layer(RECURRENT_KERNEL).get_weights()[0], bias])
    assert bias[6:12].tolist() == [1.0] * 6 and not bias[:6].any()  # Keras's unit_forget_bias
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
    hidden = keras.Model(model.inputs, model.get_layer("logits").input)(x)
    np.testing.assert_allclose(hidden.numpy(), reference(x[..., 0]).numpy(), atol=1e-6)
    # T F 4H input MACs, (T - 1) H 4H recurrent ones (h_0 = 0 skips the first), H C for the logits.
    assert count_complexity(model).macs == 8 * 8 * 24 + 7 * 6 * 24 + 6 * 10


# ---------------------------------------------------------------------------------------------- rnn-sparsity


def test_magnitude_masks_keep_the_largest_weights_of_each_lstm_kernel_only():
    model = LSTMClassifier(units=8).build((8, 8, 1), 10)
    masks = rnn_sparsity.magnitude_kernel_masks(model, 0.75)
    assert set(masks) == {INPUT_KERNEL, RECURRENT_KERNEL}  # the classifier is not pruned
    assert sparsity_facts(masks) == {INPUT_KERNEL: 0.75, RECURRENT_KERNEL: 0.75}
    for name, mask in masks.items():
        magnitude = np.abs(model.get_layer(name).kernel.numpy())
        assert magnitude[mask == 1].min() >= magnitude[mask == 0].max()


def test_an_unrewired_watts_strogatz_graph_is_the_ring_lattice():
    adjacency = rnn_sparsity.watts_strogatz(8, 4, 0.0, np.random.default_rng(0))
    assert sorted(np.flatnonzero(adjacency[0])) == [1, 2, 6, 7]
    assert (adjacency == np.roll(np.roll(adjacency, 1, axis=0), 1, axis=1)).all()


def test_random_graph_masks_wire_the_recurrence_as_a_rewired_graph_at_the_target_sparsity():
    model = LSTMClassifier(units=32).build((8, 8, 1), 10)
    assert rnn_sparsity.graph_degree(32, 0.75) == 8 and rnn_sparsity.graph_degree(32, 0.99) == 2
    masks, graph = rnn_sparsity.random_graph_masks(model, 0.75, seed=3)
    adjacency = masks[RECURRENT_KERNEL][:, :32]
    assert (adjacency == adjacency.T).all() and not adjacency.diagonal().any()
    assert graph["edges"] == 32 * 8 // 2 == adjacency.sum() // 2
    assert all((masks[RECURRENT_KERNEL][:, 32 * g : 32 * (g + 1)] == adjacency).all() for g in range(4))
    assert sparsity_facts(masks) == {INPUT_KERNEL: 0.0, RECURRENT_KERNEL: 0.75}
    lattice = rnn_sparsity.watts_strogatz(32, 8, 0.0, np.random.default_rng(3))
    assert (adjacency != lattice).any()  # rewired (p = 1)


def test_recovery_epoch_is_the_first_epoch_back_at_the_dense_accuracy():
    assert rnn_sparsity.recovery_epoch([0.5, 0.7, 0.9, 0.95], 0.8) == 3
    assert rnn_sparsity.recovery_epoch([0.5, 0.7], 0.8) is None


def test_rnn_sparsity_starts_from_the_trained_lstm_or_from_scratch():
    digits = TASKS.get("digits").spec
    magnitude = MethodRef.parse("rnn-sparsity").create()
    assert magnitude.requires(digits) == {"trained": MethodRef("lstm")}
    assert magnitude.fp32_twin("resnet-cifar") == "lstm"  # the twin is the dense LSTM, the same training
    assert MethodRef.parse("rnn-sparsity:mode=random-graph").create().requires(digits) == {}
    with pytest.raises(ValueError, match="magnitude, random-graph"):
        MethodRef.parse("rnn-sparsity:mode=lottery").create()


# ---------------------------------------------------------------------------------------------- ap-activate


@pytest.mark.parametrize("as_layer", [False, True])
def test_dead_neuron_rates_by_hand(as_layer):
    inputs = keras.Input((2,))
    dense = L.Dense(3, activation=None if as_layer else "relu")
    outputs = L.ReLU()(dense(inputs)) if as_layer else dense(inputs)
    model = keras.Model(inputs, L.Dense(1)(outputs))
    dense.set_weights([np.array([[1.0, -1.0, 0.0], [0.0, 0.0, -1.0]]), np.array([0.0, 0.0, -1.0])])
    # On (1, 0) and (-1, 0) the units give (1, 0, 0) and (0, 1, 0): 4 zeros of 6; unit 3 is never active.
    dead = ap_activate.dead_neurons(model, np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32))
    assert (dead.rate, dead.never_active, dead.units) == (pytest.approx(4 / 6), pytest.approx(1 / 3), 3)


def test_ap_prunes_the_surviving_negative_weights_that_moved_least():
    kernels = {"a": np.array([[-1.0, -0.5], [0.3, -2.0]]), "b": np.array([[-0.1, 0.4]])}
    start = {"a": np.array([[-0.9, -0.5], [0.0, -1.0]]), "b": np.array([[-0.12, 0.0]])}
    masks = {"a": np.array([[1.0, 1.0], [1.0, 0.0]]), "b": np.ones((1, 2))}
    # Candidates (alive, negative): a[0,0] moved 0.1, a[0,1] 0, b[0,0] 0.02; a[1,1] is pruned, the others positive.
    kept = ap_activate.stagnant_negative_masks(kernels, start, masks, count=2)
    assert kept["a"].tolist() == [[1, 0], [1, 1]] and kept["b"].tolist() == [[0, 1]]


def test_ap_removes_its_weights_mid_training_and_keeps_them_at_zero():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.Dense(6, activation="relu", name="hidden")(inputs)))
    masks = {name: (np.random.default_rng(1).random(model.get_layer(name).kernel.shape) > 0.5).astype(np.float32)
             for name in ("hidden", "logits")}  # fmt: skip
    apply_masks(model, masks)
    activation = ap_activate.ActivateWhilePruning(masks, count=3, at_step=2)
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    model.fit(x, np.ones((32, 3)), batch_size=8, epochs=1, verbose=0, callbacks=[MaskKeeper(masks), activation])
    removed = sum(int((1 - mask).sum()) for mask in activation.activated.values())
    assert removed == 3
    for name, mask in masks.items():
        assert not model.get_layer(name).kernel.numpy()[(mask * activation.activated[name]) == 0].any()


def test_ap_declares_gmp_at_the_rest_of_its_sparsity_as_its_upstream():
    digits = TASKS.get("digits").spec
    method = MethodRef.parse("ap-activate:sparsity=0.9").create()
    assert method.requires(digits) == {"trained": MethodRef("gmp", (("sparsity", 0.88),))}
    assert method.fp32_twin("resnet-cifar") == "resnet-cifar"
    with pytest.raises(ValueError, match="activate must be in"):
        MethodRef.parse("ap-activate:sparsity=0.01,activate=0.02").create()


# -------------------------------------------------------------------------------------------------- bn-only


def test_bn_only_trains_gamma_and_beta_and_leaves_every_other_weight_at_its_init():
    inputs = keras.Input((8, 8, 1))
    x = L.BatchNormalization(momentum=0.5)(L.Conv2D(4, 3, name="conv")(inputs))
    x = L.GlobalAveragePooling2D()(L.ReLU()(x))
    model = keras.Model(inputs, L.Dense(10, name="logits")(x))
    before = {weight.name: weight.numpy().copy() for weight in model.weights}
    artifact = BatchNormOnly().prune(model, smoke_context())
    changed = {weight.name for weight in model.weights if not np.array_equal(weight.numpy(), before[weight.name])}
    # gamma and beta train; the moving statistics follow the batches; conv and logits stay at their init.
    kinds = {name.split("/")[-1].split(":")[0] for name in changed}
    assert kinds == {"gamma", "beta", "moving_mean", "moving_variance"}
    assert artifact.facts == {"trainable_params": 8, "params": model.count_params(),
                              "trainable_fraction": pytest.approx(8 / model.count_params())}  # fmt: skip


def test_bn_only_needs_batch_norm_and_takes_no_sparsity_target():
    with pytest.raises(ValueError, match="sparsity does not apply"):
        MethodRef.parse("bn-only:sparsity=0.5").create()
    mlp = MethodRef.parse("mlp").create().build((8, 8, 1), 10)
    with pytest.raises(ValueError, match="has none"):
        BatchNormOnly().prune(mlp, smoke_context())


# ------------------------------------------------------------------------------------- through the runner


def run_through_runner(slugs: list[str], store_dir, task: str = "digits"):
    """Plan and run ``slugs`` at the smoke budget (accuracy track); the trainings planned and the results."""
    from effbench.records import ResultStore
    from effbench.runner import execute_plan, make_plan

    store = ResultStore(store_dir)
    jobs = make_plan([MethodRef.parse(slug) for slug in slugs], [task], [0], ["accuracy"], "smoke", store)
    results = execute_plan(jobs, store, log=lambda _: None)
    assert not any(result.failures for result in results), [result.failures for result in results]
    return [str(job.training.method) for job in jobs], {str(r.job.training.method): r for r in results}


@pytest.mark.parametrize("slug", ["trp", "bn-only"])
def test_resnet_methods_run_through_the_runner_and_report_the_ratio_to_the_twin(slug, tmp_path):
    metrics = assert_operator_reports_ratio_to_fp32_twin(slug, tmp_path)
    assert 0 <= metrics["top1"] <= 1


def test_rnn_sparsity_runs_both_modes_against_the_dense_lstm_trained_once(tmp_path):
    planned, results = run_through_runner(["rnn-sparsity", "rnn-sparsity:mode=random-graph"], tmp_path)
    assert planned == ["lstm", "rnn-sparsity", "rnn-sparsity:mode=random-graph"]
    for slug, mode in (("rnn-sparsity", "magnitude"), ("rnn-sparsity:mode=random-graph", "random-graph")):
        record = results[slug].records[0]
        metrics = {m.name: m.value for m in record.metrics}
        assert metrics["top1_relative"] == pytest.approx(metrics["top1"] / metrics["fp32_top1"])
        assert record.facts["mode"] == mode
        assert set(record.facts["sparsity_by_layer"]) == {INPUT_KERNEL, RECURRENT_KERNEL}
    assert "recovery_epoch" in results["rnn-sparsity"].records[0].facts


def test_ap_activate_runs_on_the_gmp_model_trained_once(tmp_path):
    # On the mlp backbone (one of the protocol's), whose twin trains in seconds.
    gmp, ap = "gmp:backbone=mlp,sparsity=0.73", "ap-activate:backbone=mlp"
    planned, results = run_through_runner([gmp, ap], tmp_path)
    assert planned == ["mlp", gmp, ap]
    facts = results[ap].records[0].facts
    assert facts["base"] == gmp and facts["activated_weights"] > 0
    assert set(facts["dead_neuron_rate"]) == {"before", "after"} and 0 <= facts["dead_neuron_rate"]["after"] <= 1
