"""The fidelity track: the deployed model's outputs against its FP32 twin's, on the test split."""

import math

import numpy as np
import pytest

from effbench.method import Artifact, Method, MethodRef
from effbench.records import ResultStore
from effbench.registry import METHODS, register_method
from effbench.runner import execute_plan
from tests.conftest import TOY_PAPER
from tests.test_upstreams import QUIET, plan
from tracks.fidelity import MAX_SNR_DB, fidelity_metrics, mean_cosine, output_snr_db


@pytest.fixture
def halved_logits(toy_methods):
    """``toy-halved-logits``: the trained ``toy-dense`` (its twin) with its logits layer's weights halved."""

    @register_method("toy-halved-logits", suite="toys", kind="compression", paper=TOY_PAPER, summary="logits / 2")
    class HalvedLogits(Method):
        def requires(self, task):
            return {"trained": MethodRef("toy-dense")}

        def fp32_twin(self, task_default_backbone):
            return "toy-dense"

        def run(self, context):
            model = context.upstream["trained"].model
            logits = model.get_layer("logits")
            logits.set_weights([w * 0.5 for w in logits.get_weights()])
            return Artifact(model)

    yield
    METHODS.remove("toy-halved-logits")


def test_snr_is_signal_power_over_the_power_of_the_difference_in_decibels():
    reference = np.array([[3.0, 4.0], [0.0, 0.0]])
    outputs = reference + np.array([[0.0, 0.5], [0.5, 0.0]])
    assert output_snr_db(outputs, reference) == pytest.approx(10 * math.log10(25 / 0.5))
    assert output_snr_db(reference, reference) == MAX_SNR_DB


def test_cosine_is_averaged_per_example_and_ignores_scale():
    reference = np.array([[1.0, 0.0], [1.0, 1.0]])
    outputs = np.array([[2.0, 0.0], [-1.0, -1.0]])
    assert mean_cosine(outputs, reference) == pytest.approx((1.0 - 1.0) / 2)


def test_decisions_are_compared_only_where_the_task_decides():
    reference, outputs = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.0, 1.0], [0.0, 1.0]])
    classified = {m.name: m.value for m in fidelity_metrics("classification", outputs, reference)}
    assert classified["twin_agreement"] == 0.5
    assert "twin_agreement" not in {m.name for m in fidelity_metrics("regression", outputs, reference)}


def test_a_method_that_halves_its_twins_logits_decides_alike_at_6_db(tmp_path, halved_logits):
    store = ResultStore(tmp_path)
    results = execute_plan(plan(store, ["toy-halved-logits"], tracks=["fidelity"]), store, **QUIET)
    assert not any(result.failures for result in results)
    values = {m.name: m.value for m in results[-1].records[0].metrics}
    assert values["twin_agreement"] == 1.0 and values["output_cosine"] == pytest.approx(1.0)
    assert values["output_snr_db"] == pytest.approx(10 * math.log10(4), abs=1e-3)


def test_a_method_without_a_twin_fails_the_track_with_the_reason(tmp_path, toy_methods):
    store = ResultStore(tmp_path)
    results = execute_plan(plan(store, ["toy-dense"], tracks=["fidelity"]), store, **QUIET)
    assert "needs the FP32 twin's trained model" in " ".join(results[-1].failures)
