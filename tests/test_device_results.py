"""`effbench device-result`: phone measurements of a run's converted model become records."""

# The quick budget: a smoke run converts only float32 and the deployment (tracks.edge).

import pytest

from effbench.cli import main
from effbench.records import ResultStore

BENCHMARK_OUTPUT = """\
INFO: Loaded model /data/local/tmp/int8.tflite
INFO: count=5 first=2100 curr=1210 min=1190 max=2100 avg=1402.2 std=350
INFO: count=50 first=1201 curr=1188 min=1150 max=1320 avg=1204.5 std=31
INFO: Inference timings in us: Init: 2345, First inference: 2100, Warmup (avg): 1402.2, Inference (avg): 1204.5
INFO: Memory footprint delta from the start of the tool (MB): init=2.1 overall=5.75
"""


@pytest.fixture
def edge_run(tmp_path, toy_methods, monkeypatch):
    import tracks.edge
    from tracks._timing import TimingPolicy

    quick = TimingPolicy(warmup=1, min_repeats=2, min_seconds=0, max_seconds=1)
    monkeypatch.setattr(tracks.edge, "TIMING_POLICY", quick)
    assert main(["run", "--method", "toy-dense", "--task", "digits", "--track", "edge", "--budget", "quick",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    log = tmp_path / "int8-t1.txt"
    log.write_text(BENCHMARK_OUTPUT)
    return tmp_path, log


def device_args(out, log, variant="int8"):
    return ["device-result", "--out", str(out), "--method", "toy-dense", "--task", "digits", "--budget", "quick",
            "--variant", variant, "--device", "Pixel 7 (Tensor G2)", "--threads", "1", "--log", str(log)]  # fmt: skip


def test_a_device_measurement_is_recorded_against_the_converted_file(edge_run):
    out, log = edge_run
    assert main(device_args(out, log)) == 0
    records = ResultStore(out).records()
    (edge,) = [r for r in records if r.track == "edge"]
    (device,) = [r for r in records if r.track == "edge_device"]
    assert (out / edge.files["int8.tflite"]["path"]).exists()
    assert device.config["tflite_sha256"] == edge.files["int8.tflite"]["sha256"]
    assert device.hardware["cpu"] == "Pixel 7 (Tensor G2)" and device.config["threads"] == 1
    values = {(m.name, m.scope): m.value for m in device.metrics}
    assert values[("device_avg_ms", "int8")] == pytest.approx(1.2045)
    assert values[("device_count", "int8")] == 50 and values[("device_memory_mb", "int8")] == 5.75


def test_device_results_need_the_edge_record_and_the_variant(tmp_path, edge_run, capsys):
    out, log = edge_run
    assert main(device_args(out, log, variant="lce")) == 2
    assert "has no lce.tflite (converted variants: dynamic, float16, float32, int8)" in capsys.readouterr().err
    assert main(device_args(tmp_path / "empty", log)) == 2
    assert "run `effbench run ... --track edge` first" in capsys.readouterr().err
