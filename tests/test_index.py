"""The index (effbench/index.json): what the registries declare, readable without importing the suites.

The committed index must be what the registries yield now; the leaderboard reads what each metric means
from it instead of guessing from metric names.
"""

import json
from collections import defaultdict

import pandas as pd

from effbench import index
from effbench.registry import BUILTIN_PACKAGES, METHODS, TASKS, TRACKS
from leaderboard import tables


def builtin_specs(registry) -> list:
    return [entry.spec for entry in registry if entry.module.startswith(tuple(f"{p}." for p in BUILTIN_PACKAGES))]


def test_the_committed_index_is_what_the_registries_declare():
    committed = json.loads(index.INDEX_PATH.read_text(encoding="utf-8"))
    current = json.loads(index.render(index.build()))
    stale = [section for section in current if committed.get(section) != current[section]]
    assert not stale, f"effbench/index.json is out of date in {', '.join(stale)}: run `{index.REGENERATE}`"


def test_the_index_reads_back_the_registries_specs(toy_methods):
    # A method registered at run time (here the toys, in a submission its method.py) is not built in.
    assert index.methods() == builtin_specs(METHODS) and "toy-dense" not in {m.slug for m in index.methods()}
    assert index.tasks() == builtin_specs(TASKS)
    assert index.tracks() == builtin_specs(TRACKS)
    assert index.method("resnet-cifar") == METHODS.get("resnet-cifar").spec and index.method("toy-dense") is None


def test_index_listings_select_by_pattern_and_suite_like_the_registries():
    assert [m.slug for m in index.methods("*net*", "architectures")] == [
        e.spec.slug for e in METHODS.select("*net*", "architectures")
    ]
    assert [t.slug for t in index.tasks("cifar*")] == ["cifar10", "cifar100"]
    assert [t.slug for t in index.tracks("edge*")] == ["edge", "edge-lce"]


def test_a_metric_name_means_the_same_in_every_track_that_records_it():
    """Pivoted tables lose the track of a column: its name alone must say what it is."""
    meanings = defaultdict(set)
    for spec in index.metric_specs():
        meanings[spec.name].add((spec.unit, spec.direction, spec.role))
    assert {name: found for name, found in meanings.items() if len(found) > 1} == {}


def test_device_measurements_are_described_though_no_registered_track_makes_them():
    spec = index.metric_spec("device_avg_ms", scoped=True)
    assert (spec.unit, spec.direction, spec.role) == ("ms", "lower", "cost")
    assert "edge_device" not in {t.slug for t in index.tracks()}
    assert index.metric_spec("device_avg_ms", scoped=True, track="latency") is None


# ------------------------------------------------------------------------------ the leaderboard reads it


def test_pareto_axes_are_the_declared_costs_and_qualities_in_declaration_order():
    columns = ["method", "task", "seeds", "keras_cpu_b1_median_ms", "keras_cpu_b1_cv", "keras_cpu_b1_samples_per_s",
               "train_seconds", "top1 std", "ece", "fp32_top1", "top1_relative", "macs", "top1", "conv/macs",
               "int8/size_bytes", "int8/agreement", "made_up_metric"]  # fmt: skip
    table = pd.DataFrame(columns=columns)
    # Lower is better for a cost axis: cv (how steady a timing was) and throughput are not; a layer is not a run.
    assert tables.cost_axes(table) == ["macs", "int8/size_bytes", "keras_cpu_b1_median_ms", "train_seconds"]
    # Higher is better for a quality axis: not ece; and the FP32 twin's top-1 is the reference, not the method's.
    assert tables.quality_axes(table) == ["top1", "top1_relative", "int8/agreement"]


def test_only_times_of_converted_models_are_taken_as_scoped_latencies():
    assert tables.is_latency_metric("litert_t2_p90_ms") and tables.is_latency_metric("device_median_ms")
    assert not tables.is_latency_metric("size_bytes")  # a cost, not a time
    assert not tables.is_latency_metric("macs")  # scoped only per layer
    assert not tables.is_latency_metric("keras_cpu_b1_median_ms")  # never scoped


def test_the_metric_legend_of_a_track_comes_from_its_declarations():
    legend = tables.metric_legend("complexity").set_index("metric")
    assert legend.loc["params"].to_dict() == {"unit": "count", "better": "lower", "role": "cost",
                                              "recorded": "whole model, layer"}  # fmt: skip
    assert tables.metric_legend("latency").set_index("metric").loc["keras_<dev>_b<batch>_repeats", "better"] == ""


def test_method_info_needs_no_registry():
    info = tables.method_info("resnet-cifar")
    assert info["paper"] == METHODS.get("resnet-cifar").spec.paper.title and "W32/A32" in info["tags"]
