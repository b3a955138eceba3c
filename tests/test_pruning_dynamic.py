"""The pruning suite's search baseline, evolutionary search and dynamic (input-dependent) methods.

random-search-sparse, emo-pms, ftwt, aptp-router, factor-moe and their shared channel masks
(``suites/pruning/_channel_masks.py``): each rule against a hand computation, then one smoke run of each
method through the real runner.
"""

import itertools

import numpy as np
import pytest

from effbench.channels import channel_groups, remove_channels
from effbench.method import MAIN, MethodRef
from effbench.modelfile import load_keras_model
from effbench.pareto import dominates
from effbench.tf import keras, tf
from suites.pruning import _channel_masks as cm
from suites.pruning.aptp_router import CodeGate, CodeRouter, sinkhorn
from suites.pruning.emo_pms import ParamCounter, merge_fronts, nsga2
from suites.pruning.factor_moe import (
    ExpertGate,
    FactorMoE,
    active_params,
    expert_assignment,
    ffn_sites,
    top_k_indicator,
)
from suites.pruning.ftwt import PREDICTOR_RATE, MaskPredictorGate, heatmap, mass_target, uniform_target
from suites.pruning.random_search_sparse import kept_count, random_keep
from tests.conftest import assert_operator_reports_ratio_to_fp32_twin, assert_saves_and_reloads
from tracks.complexity import count_complexity

L = keras.layers


def mlp_model(units=(6, 4), inputs=5, classes=2) -> keras.Model:
    x = keras.Input((inputs,))
    h = x
    for index, width in enumerate(units):
        h = L.Dense(width, activation="relu", name=f"hidden{index}")(h)
    return keras.Model(x, L.Dense(classes, name="logits")(h))


def residual_convnet() -> keras.Model:
    """A residual pair (one tied group), an inner conv group, a depthwise chain and a flattened head."""
    x = keras.Input((6, 6, 1))
    a = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, padding="same", name="a")(x)))
    b = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", name="b")(a))
    s = L.ReLU()(L.Add()([a, b]))
    c = L.ReLU()(L.BatchNormalization()(L.Conv2D(6, 1, name="c")(s)))
    c = L.ReLU()(L.DepthwiseConv2D(3, padding="same", name="dw")(c))
    d = L.ReLU()(L.Conv2D(3, 1, name="d")(c))
    return keras.Model(x, L.Dense(2, name="logits")(L.Flatten()(d)))


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random weights (positive BN variances), so no channel is trivially zero."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = [rng.normal(size=v.shape).astype(np.float32) * 0.5 for v in layer.weights]
        values = [np.abs(x) + 0.5 if "variance" in v.name else x for x, v in zip(values, layer.weights, strict=True)]
        layer.set_weights(values)
    return model


def inputs_for(model: keras.Model, count: int = 4, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, *model.input_shape[1:])).astype(np.float32)


# ---------------------------------------------------------------- static masks and random search


def test_random_search_samples_exactly_the_target_sparsity_in_every_group():
    groups = channel_groups(residual_convnet())
    assert [g.channels for g in groups] == [4, 6, 3]
    assert (kept_count(16, 0.75), kept_count(5, 0.9), kept_count(6, 0.5)) == (4, 1, 3)
    rng = np.random.default_rng(0)
    draws = [random_keep(groups, 0.5, rng) for _ in range(20)]
    for keep in draws:
        assert [len(keep[i]) for i in range(3)] == [2, 3, 2]
        for kept, group in zip(keep.values(), groups, strict=True):
            assert np.all(np.diff(kept) > 0) and kept.max() < group.channels
    assert len({tuple(d[1]) for d in draws}) > 1, "the draws are random"


def test_reader_masks_compute_exactly_what_the_physically_pruned_model_computes():
    model = randomize(residual_convnet())
    groups = channel_groups(model)
    x, keep = inputs_for(model), {0: np.array([1, 3]), 1: np.array([0, 2, 5]), 2: np.array([2])}
    dense = model(x).numpy()
    with cm.ReaderMasks(model, groups).applied(keep):
        masked = cm.compiled_logits(model)(x)
    np.testing.assert_allclose(masked, remove_channels(model, keep)(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(model(x).numpy(), dense)
    assert cm.keep_facts(model, groups, keep)["sparsity_by_layer"] == {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.666667}


# ---------------------------------------------------------------- EMO-PMS


def test_nsga2_returns_a_non_dominated_front_of_repaired_masks():
    def evaluate(genomes):  # keep the first bits of each segment, pay for every bit
        return np.stack([-genomes[:, [0, 4]].sum(1), genomes.sum(1)], axis=1).astype(float)

    genomes, objectives = nsga2(evaluate, [4, 3], population=8, generations=30, rng=np.random.default_rng(0))
    assert all(g[:4].any() and g[4:].any() for g in genomes)
    assert not any(dominates(a, b) for a, b in itertools.permutations(objectives, 2))
    assert len(np.unique(genomes, axis=0)) == len(genomes)
    assert [-2.0, 2.0] in objectives.tolist(), "the cheapest mask with both first bits is on the front"


@pytest.mark.parametrize("build", [residual_convnet, lambda: MethodRef.parse("resnet-cifar:depth=8").create().build(
    (8, 8, 1), 10)])  # fmt: skip
def test_param_counter_counts_what_remove_channels_leaves(build):
    model = build()
    groups = channel_groups(model)
    counter = ParamCounter(model, groups)
    assert counter([g.channels for g in groups]) == model.count_params()
    keep = random_keep(groups, 0.6, np.random.default_rng(3))
    assert counter([len(keep[i]) for i in range(len(groups))]) == remove_channels(model, keep).count_params()


def test_merge_fronts_takes_the_least_impairment_per_parameter_first():
    model = mlp_model()  # 5 -> 6 -> 4 -> 2: 74 params
    groups = channel_groups(model)
    counter, full = ParamCounter(model, groups), [6, 4]
    first = [({0: np.arange(6)}, 0.9), ({0: np.arange(3)}, 0.8), ({0: np.arange(1)}, 0.3)]
    second = [({1: np.arange(4)}, 0.9), ({1: np.arange(2)}, 0.88), ({1: np.arange(1)}, 0.5)]
    # Saved params per step: block 0 30 then 20, block 1 18 then 9; impairment 0.1, 0.5 and 0.02, 0.38.
    path = merge_fronts([first, second], counter, full, 0.9)
    assert [[len(scheme[g]) for g in (0, 1)] for scheme in path] == [[6, 4], [6, 2], [3, 2], [1, 2], [1, 1]]


# ---------------------------------------------------------------- gate sites and MACs per input


def test_gate_sites_skip_residual_groups_and_follow_depthwise_chains():
    sites = cm.gate_sites(residual_convnet())
    assert [(s.producer, s.readers, s.chain, s.channels) for s in sites] == [("c", ("d",), ("dw",), 6)]


def test_per_input_macs_by_hand_on_a_dense_and_a_depthwise_chain():
    model = mlp_model()  # MACs: hidden0 30, hidden1 24, logits 8
    sites = cm.gate_sites(model)
    terms = cm.mac_terms(model, sites)
    per_input = cm.input_macs(terms, np.array([[3 / 6, 1 / 4], [1.0, 1.0]]))
    np.testing.assert_allclose(per_input, [30 * 0.5 + 24 * 0.5 * 0.25 + 8 * 0.25, 62])
    x = keras.Input((4, 4, 1))
    c = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", name="dw")(
        L.ReLU()(L.Conv2D(4, 3, padding="same", name="c")(x)))))  # fmt: skip
    head = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(L.Conv2D(2, 1, name="p")(c)))
    conv = keras.Model(x, head)
    sites = cm.gate_sites(conv)
    assert [(s.producer, s.chain, s.readers) for s in sites] == [("c", ("dw",), ("p",)), ("p", (), ("head",))]
    # c 9*1*4*16 = 576, dw 9*4*16 = 576, p 4*2*16 = 128, head 2*3 = 6; a quarter of c's channels, half of p's.
    macs = cm.input_macs(cm.mac_terms(conv, sites), np.array([[0.25, 0.5]]))
    assert macs.tolist() == [576 / 4 + 576 / 4 + 128 / 4 / 2 + 6 / 2]


def test_union_of_masks_over_a_batch_is_what_a_dense_kernel_computes():
    model = mlp_model(units=(4, 4))
    sites = cm.gate_sites(model)
    halves = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
    masks = [np.tile(halves, (64, 1)), np.ones((128, 4), bool)]
    facts = cm.dynamic_facts(model, sites, masks, "toy")
    # hidden0 5*4, hidden1 4*4, logits 4*2: half of hidden0 and hidden1 per input, all of them per batch.
    assert facts["macs_static"] == 20 + 16 + 8
    assert facts["macs_per_input_mean"] == 20 / 2 + 16 / 2 + 8
    assert facts["union_density_by_site"] == {"hidden0": 1.0, "hidden1": 1.0}
    assert facts["macs_per_input_batch_union"] == 44 and facts["union_batch"] == 64


def test_inserted_gates_keep_names_weights_and_outputs_and_count_as_the_complexity_track_does(tmp_path):
    model = randomize(residual_convnet())
    sites = cm.gate_sites(model)
    gated = cm.insert_gates(model, sites, lambda i, s, f, src, inputs: MaskPredictorGate(name="g")([f, src]))
    x = inputs_for(model)
    np.testing.assert_allclose(gated(x).numpy(), model(x).numpy(), atol=1e-5)  # every channel starts on
    assert sum(cm.linear_macs(gated).values()) == count_complexity(gated).macs > count_complexity(model).macs
    assert_saves_and_reloads(gated, tmp_path / "ftwt.keras")
    assert isinstance(load_keras_model(tmp_path / "ftwt.keras").get_layer("g"), MaskPredictorGate)


# ---------------------------------------------------------------- FTWT


def test_ftwt_heatmap_and_self_supervised_targets_by_hand():
    features = np.zeros((1, 2, 2, 3), np.float32)
    features[0, 0, 1] = [1.0, -5.0, 0.0]
    features[0, 1, 0] = [2.0, 1.0, 0.0]
    assert heatmap(tf.constant(features)).numpy().tolist() == [[2.0, 5.0, 0.0]]
    strength = tf.constant([[1.0, 4.0, 0.0, 3.0, 2.0]])  # shares 0.1, 0.4, 0, 0.3, 0.2
    assert mass_target(strength, 0.6).numpy().tolist() == [[0, 1, 0, 1, 0]]  # 0.4 + 0.3 reaches 0.6
    assert mass_target(strength, 0.75).numpy().tolist() == [[0, 1, 0, 1, 1]]
    assert mass_target(strength, 1.0).numpy().tolist() == [[1, 1, 0, 1, 1]]  # a dead channel never fires
    assert uniform_target(strength, 0.5).numpy().tolist() == [[0, 1, 0, 1, 1]]  # 5 - floor(2.5) = 3 strongest
    assert uniform_target(tf.constant([[0.0, 2.0, 0.0, 0.0]]), 0.25).numpy().tolist() == [[0, 1, 0, 0]]


def test_ftwt_predictor_masks_from_its_pooled_softmaxed_input_and_learns_the_bce_target():
    gate = MaskPredictorGate("mass", 0.6)
    features = np.abs(np.random.default_rng(0).normal(size=(2, 2, 2, 3))).astype(np.float32)
    source = np.random.default_rng(1).normal(size=(2, 2, 2, 2)).astype(np.float32)
    gate([features, source])
    kernel, bias = np.array([[1.0, -1.0, 0.0], [0.0, 2.0, -1.0]]) * 0.01, np.array([0.0, 0.0, 0.004])
    gate.kernel.assign(kernel), gate.bias.assign(bias)
    pooled = source.mean(axis=(1, 2))
    soft = np.exp(pooled) / np.exp(pooled).sum(axis=1, keepdims=True)
    logits = PREDICTOR_RATE * (soft @ kernel + bias)
    expected = (logits > 0).astype(np.float32)
    np.testing.assert_array_equal(gate.channel_mask([features, source]).numpy(), expected)
    np.testing.assert_allclose(gate([features, source]).numpy(), features * expected[:, None, None, :], rtol=1e-6)
    gate([features, source], training=True)
    target = mass_target(heatmap(tf.constant(features)), 0.6).numpy()
    bce = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
    assert float(gate.losses[-1]) == pytest.approx(bce.mean(axis=0).sum(), rel=1e-5)
    gate.set_epoch(1, 2)  # past the cooldown: the predictors stop learning
    gate([features, source], training=True)
    assert float(gate.losses[-1]) == 0.0


# ---------------------------------------------------------------- APTP


def test_sinkhorn_assigns_each_input_fully_and_converges_to_equal_shares_per_code():
    scores = tf.constant(np.random.default_rng(0).uniform(-1, 1, size=(8, 4)), tf.float32)
    np.testing.assert_allclose(sinkhorn(scores).numpy().sum(axis=1), 1.0, rtol=1e-5)  # APTP's 3 iterations
    q = sinkhorn(scores, iterations=500).numpy()
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(q.sum(axis=0), 2.0, rtol=1e-3)


def test_aptp_codes_are_hard_at_inference_never_empty_and_routed_by_cosine_similarity():
    router = CodeRouter([2, 3], codes=2, terms=[[10, [0]], [20, [0, 1]]], budget=0.5)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    router(x)
    # (logit * 100 + 3 > 0): code 0 keeps channel 1 of group 0 and nothing of group 1 (so its strongest, 2).
    router.code_logits.assign(np.array([[-1, 1, -1, -0.5, -0.2], [1, 1, 1, 1, -1]], np.float32))
    np.testing.assert_array_equal(router.hard_codes().numpy(), [[0, 1, 0, 0, 1], [1, 1, 1, 1, 0]])
    # A router that always outputs code 1's pattern routes every input to code 1.
    router.hidden_kernel.assign(np.zeros((4, 32), np.float32))
    router.output_bias.assign(np.array([1, 1, 1, 1, -1], np.float32) * 0.1)
    assert router.assignments(tf.constant(x)).numpy().tolist() == [1, 1, 1]
    np.testing.assert_array_equal(router(x).numpy(), np.tile([1, 1, 1, 1, 0], (3, 1)))
    route = tf.constant([[0, 1, 0, 0, 1], [1, 1, 1, 1, 0]], tf.float32)
    # Per-input MACs fractions: 10 * f0 + 20 * f0 * f1 over 30.
    expected = [(10 * 0.5 + 20 * 0.5 / 3) / 30, (10 + 20 * 2 / 3) / 30]
    np.testing.assert_allclose(router.mac_fractions(route).numpy(), expected, rtol=1e-6)
    gate = CodeGate(2, 3)
    np.testing.assert_array_equal(gate.channel_mask([tf.ones((2, 3)), route]).numpy(), [[0, 0, 1], [1, 1, 0]])


def test_aptp_routed_model_saves_and_reloads(tmp_path):
    model = randomize(mlp_model())
    sites = cm.gate_sites(model)
    router = CodeRouter([s.channels for s in sites], 2, [[30, [0]]], 0.5, name="router")
    routes = {}

    def gate(index, site, features, source, inputs):
        routes.setdefault("route", router(inputs[0]))
        return CodeGate([0, 6][index], site.channels, name=f"code{index}")([features, routes["route"]])

    routed = cm.insert_gates(model, sites, gate)
    assert sum(cm.linear_macs(routed).values()) == count_complexity(routed).macs
    assert_saves_and_reloads(routed, tmp_path / "aptp.keras")
    assert isinstance(load_keras_model(tmp_path / "aptp.keras").get_layer("router"), CodeRouter)


# ---------------------------------------------------------------- FactorLLM


def test_expert_router_activates_the_top_k_contiguous_unit_slices():
    assert expert_assignment(6, 3).tolist() == [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]]
    assert top_k_indicator(tf.constant([[1.0, 3.0, 2.0, 0.0]]), 2).numpy().tolist() == [[0, 1, 1, 0]]
    gate = ExpertGate(4, 2)
    hidden, source = np.ones((1, 8), np.float32), np.array([[1.0, 0.0]], np.float32)
    gate([hidden, source])
    gate.kernel.assign(np.array([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 0.0, 5.0]], np.float32))
    assert gate.channel_mask([hidden, source]).numpy().tolist() == [[0, 0, 1, 1, 1, 1, 0, 0]]
    tokens = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)  # per token: experts {1, 2}, then {3, 0}
    mask = gate.channel_mask([np.ones((1, 2, 8), np.float32), tokens]).numpy()
    assert mask.tolist() == [[[0, 0, 1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0, 1, 1]]]


def test_prior_approximate_loss_targets_the_experts_closest_to_their_share_of_the_dense_output():
    gate = ExpertGate(4, 2)
    hidden = np.array([[1.0, 0, 0.5, 0, 3.0, 0, 0.4, 0]], np.float32)
    source = np.array([[0.5, -0.5]], np.float32)
    gate([hidden, source])
    down = np.eye(8, 2, dtype=np.float32) + 0.1
    contributions = np.stack([(hidden * expert_assignment(8, 4)[e]) @ down for e in range(4)], axis=1)
    errors = ((contributions - contributions.sum(axis=1, keepdims=True) / 2) ** 2).mean(axis=-1)
    prior = np.zeros(4)
    prior[np.argsort(errors[0])[:2]] = 1
    prior = np.exp(prior) / np.exp(prior).sum()
    logits = source @ gate.kernel.numpy() + gate.bias.numpy()
    routed = np.exp(logits) / np.exp(logits).sum()
    kl = (routed * np.log(routed / prior)).sum()
    balance = (top_k_indicator(tf.constant(routed, tf.float32), 2).numpy() * routed).mean()
    value = gate.prior_loss(tf.constant(hidden), tf.constant(source), tf.constant(down)).numpy()
    assert value == pytest.approx(0.05 * kl + 0.01 * balance, rel=1e-5)


def test_active_params_per_input_by_hand_and_factor_moe_refuses_image_backbones():
    model = mlp_model()
    sites = ffn_sites(model)
    assert [(s.producer, s.readers) for s in sites] == [("hidden0", ("hidden1",)), ("hidden1", ("logits",))]
    # hidden0 30 + 6, hidden1 24 + 4, logits 8 + 2; half of hidden0's units and a quarter of hidden1's.
    used = active_params(model, sites, np.array([[0.5, 0.25]]))
    assert used.tolist() == [30 * 0.5 + 6 * 0.5 + 24 * 0.5 * 0.25 + 4 * 0.25 + 8 * 0.25 + 2]
    image = MethodRef.parse("resnet-cifar:depth=8").create().build((8, 8, 1), 10)
    with pytest.raises(ValueError, match="dense FFNs.*mlp"):
        FactorMoE().prune(image, None)
    with pytest.raises(ValueError, match="no expert"):
        FactorMoE(sparsity=0.9)


def test_routed_expert_model_saves_and_reloads(tmp_path):
    model = randomize(mlp_model())
    sites = ffn_sites(model)
    routed = cm.insert_gates(model, sites, lambda i, s, f, src, inputs: ExpertGate(2, 1, name=f"e{i}")([f, src]))
    assert sum(cm.linear_macs(routed).values()) == count_complexity(routed).macs
    assert_saves_and_reloads(routed, tmp_path / "factor-moe.keras")
    assert isinstance(load_keras_model(tmp_path / "factor-moe.keras").get_layer("e0"), ExpertGate)


# ---------------------------------------------------------------- the methods through the runner


def test_deployable_names_are_fixed_by_the_options():
    assert MethodRef.parse("emo-pms:points=2").create().deployable_names() == (MAIN, "pareto-0", "pareto-1")
    assert MethodRef.parse("aptp-router:codes=3").create().deployable_names() == (MAIN, "code-0", "code-1", "code-2")
    for slug in ("ftwt", "factor-moe", "random-search-sparse"):
        assert MethodRef.parse(slug).create().deployable_names() == (MAIN,)


SMOKE_REFS = [
    "random-search-sparse:samples=3", "emo-pms:population=4,generations=1,points=2", "ftwt", "aptp-router:codes=2",
    "factor-moe",
]  # fmt: skip


def test_every_method_runs_through_the_runner_and_reports_its_ratio_to_the_twin(tmp_path):
    from effbench.records import ResultStore
    from effbench.runner import execute_plan, load_artifact, make_plan

    store = ResultStore(tmp_path)
    refs = [MethodRef.parse(ref) for ref in SMOKE_REFS]
    jobs = make_plan(refs, ["mnist1d"], [0], ["accuracy", "complexity"], "smoke", store)
    results = execute_plan(jobs, store, log=lambda _: None)
    assert not [failure for result in results for failure in result.failures]
    records = {(r.method, r.track, r.deployable): r for result in results for r in result.records}
    whole = {key: {m.name: m.value for m in r.metrics if not m.scope} for key, r in records.items()}
    dense_params = MethodRef.parse("mlp").create().build((40,), 10).count_params()
    for ref in refs:
        names = ref.create().deployable_names()
        assert {d for (method, track, d) in records if method == ref.slug and track == "accuracy"} == set(names)
        accuracy = whole[(ref.slug, "accuracy", MAIN)]
        assert accuracy["top1_relative"] == pytest.approx(accuracy["top1"] / accuracy["fp32_top1"])
    for key in [("random-search-sparse", MAIN), ("emo-pms", MAIN), ("emo-pms", "pareto-1")]:
        assert whole[(key[0], "complexity", key[1])]["params"] < dense_params, f"{key} is physically smaller"
    # At the smoke budget (4 steps) the codes barely move from all-on; a code model is never larger.
    assert whole[("aptp-router", "complexity", "code-0")]["params"] <= dense_params
    for slug in ("ftwt", "aptp-router", "factor-moe"):
        facts = records[(slug, "accuracy", MAIN)].facts
        assert facts["macs_per_input_mean"] <= facts["macs_static"] == whole[(slug, "complexity", MAIN)]["macs"]
        assert 0 < facts["union_density"] <= 1 and facts["union_batch"] == 64
    assert records[("factor-moe", "accuracy", MAIN)].facts["macs_per_input_ratio"] < 1
    assert sum(records[("aptp-router", "accuracy", MAIN)].facts["code_usage"]) == pytest.approx(1.0)
    assert records[("random-search-sparse", "accuracy", MAIN)].facts["kept_channels"] == {"0": 64, "1": 64}
    for result in results:  # every cached artifact (the methods' deployables included) loads back
        load_artifact(store.artifact_dir(result.records[0].training_hash))


@pytest.mark.parametrize("slug", ["ftwt", "aptp-router:codes=2"])
def test_the_conv_gates_run_through_the_runner_on_the_protocol_resnet(slug, tmp_path):
    metrics = assert_operator_reports_ratio_to_fp32_twin(slug, tmp_path)
    assert 0 <= metrics["top1"] <= 1
