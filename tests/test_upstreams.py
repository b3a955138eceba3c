"""Plans are graphs: methods start from other trainings, and one training yields many deployables."""

import json

import numpy as np
import pytest

from effbench.config import RunConfig, TrainingConfig
from effbench.method import MAIN, Artifact, Deployable, Method, MethodRef
from effbench.records import ResultStore
from effbench.registry import METHODS, register_method
from effbench.runner import execute_plan, load_artifact, make_plan
from effbench.tf import keras
from effbench.training import TrainContext, fit
from tests.conftest import TOY_PAPER, tiny_dense_model

QUIET = {"log": lambda _: None}


def scaled_copy(model: keras.Model, factor: float) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights([w * factor for w in model.get_weights()])
    return copy


@pytest.fixture
def graph_methods(toy_methods):
    """Two compressions of a trained ``toy-dense`` (one fine-tunes it), and an elastic method with 3 deployables."""

    class FromTrainedDense(Method):
        def requires(self, task):
            return {"trained": MethodRef("toy-dense")}

        def fp32_twin(self, task_default_backbone):
            return "toy-dense"

    @register_method("toy-shrunk", suite="toys", kind="compression", paper=TOY_PAPER, summary="scales a trained model")
    class Shrunk(FromTrainedDense):
        def run(self, context: TrainContext) -> Artifact:
            return Artifact(scaled_copy(context.upstream["trained"].model, 0.5))

    @register_method("toy-tuned", suite="toys", kind="compression", paper=TOY_PAPER, summary="fine-tunes it")
    class Tuned(FromTrainedDense):
        def run(self, context: TrainContext) -> Artifact:
            model = context.upstream["trained"].model
            history, seconds = fit(model, context)
            return Artifact(model, history, seconds)

    @register_method("toy-elastic", suite="toys", kind="elastic", paper=TOY_PAPER, summary="three widths")
    class Elastic(Method):
        def deployable_names(self):
            return (MAIN, "half", "quarter")

        def run(self, context: TrainContext) -> Artifact:
            model = tiny_dense_model(context.task.spec.input_shape, context.task.spec.num_classes)
            history, seconds = fit(model, context)
            others = {"half": Deployable(scaled_copy(model, 0.5)), "quarter": Deployable(scaled_copy(model, 0.25))}
            return Artifact(model, history, seconds, deployables=others)

    yield
    for slug in ("toy-shrunk", "toy-tuned", "toy-elastic"):
        METHODS.remove(slug)


def plan(store, methods, tracks=("complexity",), force=False):
    return make_plan([MethodRef.parse(m) for m in methods], ["digits"], [0], list(tracks), "smoke", store, force=force)


def test_two_methods_that_share_an_upstream_train_it_once(tmp_path, graph_methods):
    store = ResultStore(tmp_path)
    jobs = plan(store, ["toy-shrunk", "toy-tuned"])
    assert [(str(job.training.method), job.tracks) for job in jobs] == [
        ("toy-dense", []), ("toy-shrunk", ["complexity"]), ("toy-tuned", ["complexity"]),
    ]  # fmt: skip
    messages = []
    results = execute_plan(jobs, store, log=messages.append)
    assert not any(result.failures for result in results)
    assert [m for m in messages if m.startswith("training")] == [
        "training toy-dense on digits (seed 0, smoke)",
        "training toy-shrunk on digits (seed 0, smoke)",
        "training toy-tuned on digits (seed 0, smoke)",
    ]
    dense = TrainingConfig(MethodRef("toy-dense"), "digits", 0, "smoke")
    for result in results[1:]:
        record = result.records[0]
        assert record.config["upstream"] == {"trained": dense.hash, "twin": dense.hash}
    # The shrunk model is the trained dense model at half scale: it really started from that training.
    trained = load_artifact(store.artifact_dir(dense.hash)).model
    shrunk = load_artifact(store.artifact_dir(results[1].job.training.hash)).model
    np.testing.assert_allclose(shrunk.get_weights()[0], trained.get_weights()[0] * 0.5, rtol=1e-6)


def test_the_training_hash_covers_the_upstreams(graph_methods):
    shrunk = TrainingConfig(MethodRef("toy-shrunk"), "digits", 0, "smoke")
    before = shrunk.hash
    METHODS.get("toy-dense").factory.default_options = {"units": 32}
    try:
        assert shrunk.hash != before
    finally:
        METHODS.get("toy-dense").factory.default_options = {"units": 16}
    assert shrunk.hash == before


def test_an_upstream_already_trained_is_not_planned_and_a_trained_dependent_needs_none(tmp_path, graph_methods):
    store = ResultStore(tmp_path)
    execute_plan(plan(store, ["toy-shrunk"]), store, **QUIET)
    # toy-tuned needs the trained toy-dense, which is cached: only toy-tuned trains.
    assert [str(job.training.method) for job in plan(ResultStore(tmp_path), ["toy-tuned"])] == ["toy-tuned"]
    # A new track of toy-shrunk reuses its cached model: nothing upstream is planned.
    jobs = plan(ResultStore(tmp_path), ["toy-shrunk"], tracks=["training_cost"])
    assert [(str(job.training.method), job.tracks) for job in jobs] == [("toy-shrunk", ["training_cost"])]


def test_the_twin_is_planned_for_accuracy_and_its_ratio_reported(tmp_path, graph_methods):
    store = ResultStore(tmp_path)
    jobs = plan(store, ["toy-tuned"], tracks=["accuracy"])
    planned = [(str(job.training.method), job.tracks) for job in jobs]
    assert planned == [("toy-dense", ["accuracy"]), ("toy-tuned", ["accuracy"])]
    results = execute_plan(jobs, store, **QUIET)
    metrics = {m.name: m.value for m in results[1].records[0].metrics}
    assert metrics["fp32_top1"] == {m.name: m.value for m in results[0].records[0].metrics}["top1"]


def test_training_cost_counts_the_upstream_apart_and_once(tmp_path, graph_methods):
    store = ResultStore(tmp_path)
    results = execute_plan(plan(store, ["toy-tuned"], tracks=["training_cost"]), store, **QUIET)
    dense = TrainingConfig(MethodRef("toy-dense"), "digits", 0, "smoke")
    dense_seconds = json.loads((store.artifact_dir(dense.hash) / "history.json").read_text())["train_seconds"]
    cost = {m.name: m.value for m in results[-1].records[0].metrics}
    assert cost["upstream_train_seconds"] == pytest.approx(dense_seconds)
    assert cost["total_train_seconds"] == pytest.approx(cost["train_seconds"] + dense_seconds)
    assert 0 < cost["train_seconds"] != dense_seconds


def test_three_deployables_measured_by_two_tracks_make_six_records(tmp_path, graph_methods):
    store = ResultStore(tmp_path)
    jobs = plan(store, ["toy-elastic"], tracks=["complexity", "accuracy"])
    results = execute_plan(jobs, store, **QUIET)
    records = results[0].records
    assert sorted((r.track, r.deployable) for r in records) == [
        ("accuracy", ""), ("accuracy", "half"), ("accuracy", "quarter"),
        ("complexity", ""), ("complexity", "half"), ("complexity", "quarter"),
    ]  # fmt: skip
    assert len({r.config_hash for r in records}) == 6 and len({r.training_hash for r in records}) == 1
    assert {r.config.get("deployable", "") for r in records} == {"", "half", "quarter"}
    # A reloaded artifact has every deployable, and a re-run has nothing left to do.
    reloaded = load_artifact(store.artifact_dir(records[0].training_hash))
    assert sorted(reloaded.all_deployables()) == ["", "half", "quarter"]
    assert plan(ResultStore(tmp_path), ["toy-elastic"], tracks=["complexity", "accuracy"]) == []


def test_a_method_that_returns_undeclared_deployables_fails_clearly(tmp_path, graph_methods):
    METHODS.get("toy-elastic").factory.deployable_names = lambda self: (MAIN, "half")
    try:
        store = ResultStore(tmp_path)
        results = execute_plan(plan(store, ["toy-elastic"]), store, **QUIET)
    finally:
        del METHODS.get("toy-elastic").factory.deployable_names
    assert results[0].records == []
    assert "deployables ['', 'half', 'quarter']" in results[0].failures[0] and "['', 'half']" in results[0].failures[0]


def test_a_method_whose_upstream_failed_reports_it(tmp_path, toy_methods):
    @register_method("toy-after-broken", suite="toys", kind="compression", paper=TOY_PAPER, summary="needs toy-broken")
    class AfterBroken(Method):
        def requires(self, task):
            return {"trained": MethodRef("toy-broken")}

        def run(self, context):
            return Artifact(context.upstream["trained"].model)

    try:
        store = ResultStore(tmp_path)
        results = execute_plan(plan(store, ["toy-after-broken"]), store, **QUIET)
    finally:
        METHODS.remove("toy-after-broken")
    assert "breaks on purpose" in results[0].failures[0]
    assert "upstream 'trained' (toy-broken on digits, seed 0) has no trained model" in results[1].failures[0]


def test_a_method_that_depends_on_itself_is_an_error(toy_methods):
    @register_method("toy-loop", suite="toys", kind="compression", paper=TOY_PAPER, summary="needs itself")
    class Loop(Method):
        def requires(self, task):
            return {"trained": MethodRef("toy-loop")}

        def run(self, context):
            raise AssertionError("never runs")

    try:
        with pytest.raises(ValueError, match="depends on itself"):
            _ = TrainingConfig(MethodRef("toy-loop"), "digits", 0, "smoke").hash
    finally:
        METHODS.remove("toy-loop")


def test_runs_of_the_main_model_keep_the_hashes_they_had_before_deployables(toy_methods):
    training = TrainingConfig(MethodRef("toy-dense"), "digits", 0, "smoke")
    config = RunConfig(training, "complexity").as_dict()
    assert "deployable" not in config and "upstream" not in config
    assert RunConfig(training, "complexity", deployable="half").as_dict()["deployable"] == "half"


def float_flatbuffer(model: keras.Model) -> bytes:
    from effbench.tf import tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


@pytest.fixture
def converting_method(toy_methods):
    """``toy-converted``: deploys its model and, as ``tflite``, that model converted to a flatbuffer."""

    @register_method("toy-converted", suite="toys", kind="compression", paper=TOY_PAPER, summary="deploys a file")
    class Converted(Method):
        deployment = "float16"

        def deployable_names(self):
            return (MAIN, "tflite")

        def run(self, context: TrainContext) -> Artifact:
            model = tiny_dense_model(context.task.spec.input_shape, context.task.spec.num_classes)
            history, seconds = fit(model, context)
            converted = Deployable(scaled_copy(model, 1.0), float_flatbuffer(model), {"calibration": "none"})
            facts = {"bit_widths": {"dense": [32, 32]}}
            return Artifact(model, history, seconds, deployables={"tflite": converted}, facts=facts)

    yield
    METHODS.remove("toy-converted")


def test_a_flatbuffer_deployable_is_what_accuracy_and_edge_measure(tmp_path, converting_method):
    store = ResultStore(tmp_path)
    results = execute_plan(plan(store, ["toy-converted"], tracks=["accuracy", "edge"]), store, **QUIET)
    assert not results[0].failures
    records = {(r.track, r.deployable): r for r in results[0].records}
    values = {key: {(m.scope, m.name): m.value for m in r.metrics} for key, r in records.items()}
    # A float32 flatbuffer decides as the Keras model does: the same top-1, measured on LiteRT.
    assert values[("accuracy", "tflite")][("", "top1")] == values[("accuracy", "")][("", "top1")]
    flatbuffer = values[("edge", "tflite")]
    assert flatbuffer[("", "deployment")] == "flatbuffer" and flatbuffer[("deployed", "agreement")] == 1.0
    # Measured as itself, beside its Keras model's float32 conversion only.
    assert {scope for scope, _ in flatbuffer} == {"", "deployed", "float32"}
    assert (tmp_path / records[("edge", "tflite")].files["deployed.tflite"]["path"]).is_file()
    # The main model names its deployment variant: its numbers again under the scope "deployed".
    main = values[("edge", "")]
    assert main[("", "deployment")] == "float16"
    assert main[("deployed", "size_bytes")] == main[("float16", "size_bytes")]


def test_every_record_of_a_deployable_carries_its_facts_also_when_the_artifact_comes_from_the_cache(
    tmp_path, converting_method
):
    store = ResultStore(tmp_path)
    execute_plan(plan(store, ["toy-converted"], tracks=["accuracy"]), store, **QUIET)
    execute_plan(plan(store, ["toy-converted"], tracks=["complexity"]), store, **QUIET)  # the cached artifact
    facts = {(r.track, r.deployable): r.facts for r in store.records()}
    assert facts == {
        ("accuracy", ""): {"bit_widths": {"dense": [32, 32]}}, ("accuracy", "tflite"): {"calibration": "none"},
        ("complexity", ""): {"bit_widths": {"dense": [32, 32]}}, ("complexity", "tflite"): {"calibration": "none"},
    }  # fmt: skip


def test_each_deployable_is_a_row_of_the_tables_and_a_point_of_its_method_curve(tmp_path, graph_methods):
    from leaderboard.tables import deployable_curves, format_table, load_results, overview_table, results_table

    store = ResultStore(tmp_path)
    execute_plan(plan(store, ["toy-elastic", "toy-dense"], tracks=["accuracy", "complexity"]), store, **QUIET)
    tidy = load_results(tmp_path)
    table = results_table(tidy)
    assert sorted(zip(table["method"], table["deployable"], strict=True)) == [
        ("toy-dense", ""), ("toy-elastic", ""), ("toy-elastic", "half"), ("toy-elastic", "quarter"),
    ]  # fmt: skip
    assert "deployable" in format_table(table, "csv").splitlines()[0]
    curves = deployable_curves(overview_table(tidy), "params")
    assert list(curves["method"].unique()) == ["toy-elastic"] and len(curves) == 3


def test_a_worker_that_cannot_reach_the_result_folder_gets_upstream_models_and_returns_its_own(tmp_path, graph_methods):
    from effbench.runner import JobWork, artifact_complete, compute_job, save_job, upstream_files

    store = ResultStore(tmp_path / "driver")
    jobs = plan(store, ["toy-shrunk"])
    execute_plan(jobs[:1], store, **QUIET)  # the upstream toy-dense, trained and cached by the driver
    shrunk = jobs[1]
    files = upstream_files(store, shrunk)
    assert list(files) == [shrunk.upstream["trained"].hash]
    # A Ray node of another machine: the result folder does not exist there.
    computed = compute_job(JobWork(shrunk, None, tmp_path / "elsewhere", True, files), lambda _: None)
    assert not computed.failures and "history.json" in computed.artifact_files
    assert not (tmp_path / "elsewhere").exists()
    save_job(store, computed, lambda _: None)
    assert artifact_complete(store.artifact_dir(shrunk.training.hash))


def test_a_method_that_starts_from_trained_weights_trains_with_the_tasks_finetune_recipe(graph_methods):
    from effbench.recipe import Recipe
    from effbench.registry import TASKS

    digits = TASKS.get("digits").factory
    tuned = TrainingConfig(MethodRef("toy-tuned"), "digits", 0, "smoke")
    dense = TrainingConfig(MethodRef("toy-dense"), "digits", 0, "smoke")
    assert tuned.recipe() == dense.recipe() == digits().recipe("smoke")  # no fine-tune recipe declared
    finetune = Recipe(optimizer="sgd", learning_rate=1e-2, epochs=1, max_train_samples=64)
    digits.finetune_recipes = {"smoke": finetune}
    try:
        assert tuned.recipe() == finetune and dense.recipe() == digits().recipe("smoke")
        assert tuned.as_dict()["recipe"] == finetune.as_config()
    finally:
        del digits.finetune_recipes
