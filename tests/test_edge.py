"""The edge track: TFLite variants convert, are timed and scored; failures are recorded, not raised."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.registry import TRACKS
from effbench.tasks.base import Splits
from effbench.tf import keras, tf
from effbench.track import MeasureContext, Metric
from tests.conftest import binary_layer_names
from tracks import _tflite, edge
from tracks._timing import SMOKE_POLICY, TimingPolicy, time_calls

# Enough calls to produce every timing metric, few enough to keep the file fast.
TINY_POLICY = TimingPolicy(warmup=1, min_repeats=3, min_seconds=0.0, max_seconds=0.05)
INPUT_SHAPE = (8, 8, 1)
TFLITE_VARIANTS = ("float32", "float16", "dynamic", "int8")


def fake_splits(integers: bool = False) -> Splits:
    """Standard-normal inputs with random labels; ``integers``: ``2x`` rounded to an integer (see larq_model)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((420, *INPUT_SHAPE)).astype(np.float32)
    if integers:
        x = np.rint(2 * x)
    y = rng.integers(0, 10, len(x)).astype(np.int32)
    return Splits(x[:200], y[:200], x[200:220], y[200:220], x[220:], y[220:])


def float_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(INPUT_SHAPE)
    hidden = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(hidden)))


def larq_model() -> keras.Model:
    """Float conv + BN, binary conv + BN, binary dense, untrained, and built so that no sign sees a tie.

    Fed ``fake_splits(integers=True)``. At a tie (an input of ``ste_sign`` exactly 0) Keras gives +1, but
    TFLite folds a BatchNormalization into the convolution before it and sums in its own order, so the same
    0 comes out as a tiny +-value whose sign depends on the CPU's kernels: with BN's initial statistics (mean
    0, beta 0) the binary conv's zero sums made float32 agreement 0.675 on AMD EPYC and 1.0 on Intel Xeon.
    So every value a sign sees lies on a grid away from 0, exact in any summation order:

    - integer inputs and an integer float-conv kernel give integer sums; BN mean 0.5 moves them to n - 0.5;
    - the binary conv sums 3 x 3 x 16 = 144 terms of +-1 (one-padding included), an even integer; BN mean
      1 makes it odd.

    ``test_no_sign_in_the_larq_model_sees_a_tie`` checks the margin.
    """
    import larq

    keras.utils.set_random_seed(0)
    # pad_values=1.0 (one-padding), as the binarization operators pad. The LCE agreement 0.83 once seen here
    # with zero padding came from the ties above: on this tie-free model zero padding converts exactly too.
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip")
    inputs = keras.Input(INPUT_SHAPE)
    front = keras.layers.Conv2D(16, 3, use_bias=False)
    x = keras.layers.BatchNormalization(moving_mean_initializer=keras.initializers.Constant(0.5))(front(inputs))
    x = larq.layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False, **binary)(x)
    x = keras.layers.BatchNormalization(moving_mean_initializer=keras.initializers.Constant(1.0))(x)
    model = keras.Model(inputs, larq.layers.QuantDense(10, use_bias=False, **binary)(keras.layers.Flatten()(x)))
    front.set_weights([np.random.default_rng(0).integers(-2, 3, front.kernel.shape).astype(np.float32)])
    return model


def values_before_signs(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    """What the input quantizers (``ste_sign``) of the model's larq layers see on ``x``."""
    layers = [model.get_layer(name) for name in binary_layer_names(model)]
    return keras.Model(model.inputs, [layer.input for layer in layers]).predict(x, verbose=0)


def string_model() -> keras.Model:
    """Float -> string -> float: TFLite has no builtin string ops, so conversion needs SELECT_TF_OPS."""
    inputs = keras.Input((4,))
    round_trip = keras.layers.Lambda(lambda t: tf.strings.to_number(tf.strings.as_string(t)))(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(round_trip))


def measure(model: keras.Model, splits: Splits | None, files_dir=None, track=edge.EdgeTrack, **context) -> dict:
    """(scope, metric) -> value of one run of the edge track (or ``track``) under the tiny timing policy."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(edge, "TIMING_POLICY", TINY_POLICY)
        metrics = track().measure(MeasureContext(model=model, splits=splits, files_dir=files_dir, **context))
    assert all(isinstance(m, Metric) for m in metrics)
    return {(m.scope, m.name): m.value for m in metrics}


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    files = tmp_path_factory.mktemp("edge-files")
    model, splits = float_model(), fake_splits()
    keras_top1 = float(np.mean(model.predict(splits.x_test, verbose=0).argmax(axis=1) == splits.y_test))
    return measure(model, splits, files), files, keras_top1


@pytest.fixture(scope="module")
def larq_run(tmp_path_factory):
    files = tmp_path_factory.mktemp("edge-larq")
    return measure(larq_model(), fake_splits(integers=True), files), files


def test_edge_is_registered_and_needs_no_task():
    assert not TRACKS.get("edge").spec.needs_task_data


def test_every_tflite_variant_converts_is_timed_and_saved(float_run):
    values, files, _ = float_run
    for variant in TFLITE_VARIANTS:
        assert values[(variant, "converted")] == 1
        size = values[(variant, "size_bytes")]
        assert size == (files / f"{variant}.tflite").stat().st_size
        for threads in (1, 2):
            assert values[(variant, f"litert_t{threads}_median_ms")] > 0
            assert values[(variant, f"litert_t{threads}_repeats")] >= TINY_POLICY.min_repeats
    assert sorted(p.name for p in files.iterdir()) == sorted(f"{v}.tflite" for v in TFLITE_VARIANTS)
    assert ("lce", "converted") not in values


def test_quantized_variants_are_smaller(float_run):
    values, _, _ = float_run
    size = {variant: values[(variant, "size_bytes")] for variant in TFLITE_VARIANTS}
    assert size["float32"] > size["float16"] > size["int8"]
    assert size["float16"] > size["dynamic"]


def test_accuracy_after_conversion(float_run):
    values, _, keras_top1 = float_run
    assert values[("float32", "agreement")] == 1.0
    assert values[("float32", "top1")] == pytest.approx(keras_top1)
    for variant in TFLITE_VARIANTS:
        assert 0.9 <= values[(variant, "agreement")] <= 1.0
        assert 0.0 <= values[(variant, "top1")] <= 1.0


def test_records_name_the_runtime_and_the_calibration(float_run):
    values, _, _ = float_run
    assert values[("", "runtime")].startswith("LiteRT ") and "XNNPACK" in values[("", "runtime")]
    assert values[("", "converter")].startswith(f"TensorFlow {tf.__version__}")
    assert "training split" in values[("int8", "calibration")]
    assert values[("int8", "calibration_samples")] == 128


def test_no_sign_in_the_larq_model_sees_a_tie():
    model, x = larq_model(), fake_splits(integers=True).x_test
    before_signs = values_before_signs(model, x)
    assert len(before_signs) == 2
    # Keras's BN scales by 1 / sqrt(1 + 1e-3): the grids above put every value at least ~0.5 from 0.
    assert min(float(np.abs(values).min()) for values in before_signs) > 0.49
    # Signs of both polarities, and decisions that vary: agreement 1.0 is not a constant model's.
    assert all(0.1 < np.mean(values > 0) < 0.9 for values in before_signs)
    assert len(np.unique(model.predict(x, verbose=0).argmax(axis=1))) >= 5


def test_larq_model_also_converts_with_lce_and_agrees_with_keras(larq_run):
    values, files = larq_run
    assert values[("lce", "converted")] == 1
    assert (files / "lce.tflite").stat().st_size == values[("lce", "size_bytes")]
    assert values[("lce", "agreement")] == 1.0
    assert values[("lce", "lce_t1_median_ms")] > 0 and values[("lce", "lce_t2_median_ms")] > 0
    assert values[("lce", "runtime")].startswith("Larq Compute Engine ")
    assert values[("float32", "agreement")] == 1.0


def test_edge_lce_measures_only_the_float32_and_lce_pair_with_the_edge_tracks_metrics(larq_run, tmp_path):
    full, _ = larq_run
    values = measure(larq_model(), fake_splits(integers=True), tmp_path, track=edge.EdgeLceTrack)
    assert {scope for scope, _ in values} == {"", "float32", "lce"}
    assert {key for key in full if key[0] in ("float32", "lce")} == {key for key in values if key[0]}
    assert values[("lce", "converted")] == 1 and values[("lce", "agreement")] == 1.0
    assert TRACKS.get("edge-lce").spec.needs_task_data is False


def test_the_model_is_exported_once_for_every_conversion_and_converts_as_from_keras_model_does(monkeypatch):
    saves = []
    original = tf.saved_model.save
    monkeypatch.setattr(tf.saved_model, "save", lambda *args, **kwargs: saves.append(args) or original(*args, **kwargs))
    model, splits = larq_model(), fake_splits(integers=True)
    values = measure(model, splits)
    assert len(saves) == 1 and all(values[(v, "converted")] == 1 for v in (*TFLITE_VARIANTS, "lce"))
    data = _tflite.calibration(model, splits)
    with _tflite.exported(model) as source:
        for variant in ("float32", "int8"):
            reference = _tflite.convert(model, variant, data)  # from_keras_model, which exports on every call
            from_export = _tflite.convert(source, variant, data)
            assert len(from_export) == len(reference) == values[(variant, "size_bytes")]
            outputs = [_tflite.litert_predict(content, splits.x_test, 1) for content in (from_export, reference)]
            np.testing.assert_array_equal(*outputs)
        assert _tflite.convert_lce(source) == _tflite.convert_lce(model)


def test_a_smoke_run_converts_float32_and_the_deployment_only_with_a_handful_of_timed_calls(larq_run, monkeypatch):
    policies = []
    monkeypatch.setattr(edge, "time_calls", lambda call, policy: policies.append(policy) or time_calls(call, policy))
    full, _ = larq_run
    values = measure(larq_model(), fake_splits(integers=True), budget="smoke", deployment="lce")
    assert {scope for scope, _ in values} == {"", "float32", "lce", "deployed"}
    assert {key for key in full if key[0] in ("float32", "lce")} <= set(values)
    assert policies == [SMOKE_POLICY] * 4  # two variants at 1 and 2 threads


def test_a_model_that_cannot_be_saved_still_converts_from_its_graph(monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("not trackable")

    monkeypatch.setattr(tf.saved_model, "save", refuse)
    model = float_model()
    with _tflite.exported(model) as source:
        assert source is model
        assert _tflite.convert(source, "float32", _tflite.calibration(model, None))


def test_subclasses_of_larq_layers_are_larq_models_too():
    import larq

    class ScaledDense(larq.layers.QuantDense):
        pass

    inputs = keras.Input((4,))
    outputs = ScaledDense(2, input_quantizer="ste_sign", kernel_quantizer="ste_sign")(keras.layers.Dense(3)(inputs))
    assert _tflite.has_larq_layers(keras.Model(inputs, outputs))
    assert not _tflite.has_larq_layers(float_model())


def test_a_model_the_converter_rejects_is_recorded_not_raised():
    values = measure(string_model(), None)
    for variant in TFLITE_VARIANTS:
        assert values[(variant, "converted")] == 0
        error = values[(variant, "converter_error")]
        assert "ERROR_NEEDS_FLEX_OPS" in error and "AsString" in error and len(error) <= 500
        assert (variant, "size_bytes") not in values


def test_bare_model_is_calibrated_on_noise_and_not_scored():
    values = measure(float_model(), None)
    assert all(values[(variant, "converted")] == 1 for variant in TFLITE_VARIANTS)
    assert "noise" in values[("int8", "calibration")]
    assert not any(name in ("top1", "agreement") for _, name in values)


# Made-up numbers in the layout benchmark_model prints (adb shell output, then an Android logcat line).
BENCHMARK_OUTPUT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/int8.tflite]
INFO: Use xnnpack: [1]
INFO: Loaded model /data/local/tmp/int8.tflite
INFO: The input model file size (MB): 0.305192
INFO: Initialized session in 12.5ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=412 first=2931 curr=1187 min=1104 max=2931 avg=1212.4 std=143 p5=1120 median=1190 p95=1402

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=850 first=1178 curr=1166 min=1098 max=1861 avg=1.17432e+03 std=57 p5=1112 median=1160 p95=1270

INFO: Inference timings in us: Init: 12500, First inference: 2931, Warmup (avg): 1212.4, Inference (avg): 1174.32
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE.
INFO: Memory footprint delta from the start of the tool (MB): init=3.25 overall=7.5
INFO: Timings (microseconds): count=850 first=1000 curr=1000 min=1000 max=1000 avg=1000 std=0
"""


def test_benchmark_model_output_is_parsed_from_the_timed_runs():
    parsed = edge.parse_benchmark_model_output(BENCHMARK_OUTPUT)
    assert parsed["count"] == 850 and parsed["avg_us"] == pytest.approx(1174.32)
    assert parsed["min_us"] == 1098 and parsed["max_us"] == 1861 and parsed["std_us"] == 57
    assert parsed["median_us"] == 1160
    assert parsed["init_us"] == 12500 and parsed["inference_avg_us"] == pytest.approx(1174.32)
    assert parsed["memory_overall_mb"] == 7.5


def test_benchmark_model_metrics_in_ms_scoped_by_variant():
    metrics = {m.name: m for m in edge.benchmark_model_metrics(BENCHMARK_OUTPUT, "int8")}
    assert metrics["device_avg_ms"].value == pytest.approx(1.17432)
    assert metrics["device_std_ms"].value == pytest.approx(0.057)
    assert metrics["device_min_ms"].value == pytest.approx(1.098)
    assert metrics["device_max_ms"].value == pytest.approx(1.861)
    assert metrics["device_count"].value == 850 and metrics["device_count"].unit == "count"
    assert {m.scope for m in metrics.values()} == {"int8"}


def test_logcat_lines_without_percentiles_are_parsed():
    logcat = (
        "03-12 10:15:02.118  4242  4242 I tflite  : count=50 first=249042 curr=250889 min=247067 "
        "max=254474 avg=249684 std=1442\n"
        "03-12 10:15:02.118  4242  4242 I tflite  : Inference timings in us: Init: 16242, "
        "First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684\n"
    )
    metrics = {m.name: m.value for m in edge.benchmark_model_metrics(logcat, "float32")}
    assert metrics["device_avg_ms"] == pytest.approx(249.684) and metrics["device_count"] == 50
    assert "device_median_ms" not in metrics


def test_text_without_timings_is_an_error():
    with pytest.raises(ValueError, match="benchmark_model"):
        edge.parse_benchmark_model_output("Segmentation fault")


def pruned_pointwise_model(zero_fraction: float, stem_stride: int = 2) -> keras.Model:
    """A MobileNet-like stem, two 1x1 convs with ``zero_fraction`` of their weights zero, a MEAN and a head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=stem_stride, padding="same", name="stem")(inputs)
    x = keras.layers.ReLU()(keras.layers.Conv2D(64, 1, name="pw1")(x))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(64, 1, name="pw2")(x))
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(x))
    for name in ("pw1", "pw2"):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        flat = kernel.reshape(-1)
        flat[: int(zero_fraction * flat.size)] = 0.0  # the first weights: an exact fraction, no randomness
        layer.set_weights([flat.reshape(kernel.shape), bias])
    return model


def test_a_pruned_model_also_converts_to_a_smaller_sparse_flatbuffer_that_computes_the_same():
    from tracks import _sparse

    values = measure(pruned_pointwise_model(0.9), None)
    assert values[("sparse", "converted")] == 1
    assert values[("sparse", "size_bytes")] < 0.6 * values[("float32", "size_bytes")]
    assert values[("sparse", "xnnpack_sparse_rules_met")] == 1
    assert values[("sparse", "xnnpack_sparse_enabled_on_cpu")] == int(not _sparse.x86_with_avx())
    x = np.random.default_rng(1).random((8, 16, 16, 3), dtype=np.float32)
    model = pruned_pointwise_model(0.9)
    from effbench.tflite import Calibration, convert, litert_predict

    sparse = convert(model, "sparse", Calibration(x, "test"))
    np.testing.assert_allclose(litert_predict(sparse, x, 1), model.predict(x, verbose=0), atol=1e-5)


def test_a_dense_model_gets_no_sparse_variant(float_run):
    values, _, _ = float_run
    assert not any(scope == "sparse" for scope, _ in values)


@pytest.mark.parametrize(
    ("zero_fraction", "stride", "unmet"),
    [(0.9, 2, []), (0.5, 2, ["1x1 convs under 2/3 zeros: pw1, pw2"]),
     (0.9, 1, ["the first conv is not a 3x3 stride-2 conv on 3 channels"])],
)  # fmt: skip
def test_the_xnnpack_sparse_rules_name_what_a_model_breaks(zero_fraction, stride, unmet):
    from tracks import _sparse

    assert _sparse.unmet_rules(pruned_pointwise_model(zero_fraction, stride)) == unmet


def test_lce_converts_binary_models_only_not_multi_bit_fake_quantization():
    import larq

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3)(inputs)
    signs = larq.layers.QuantDense(2, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    binary = keras.Model(inputs, signs(hidden))
    four_bit = keras.Model(inputs, larq.layers.QuantDense(2, kernel_quantizer=larq.quantizers.DoReFa(k_bit=4))(hidden))
    assert edge.lce_applies(binary, None) and not edge.lce_applies(four_bit, None)
    # A method's declared deployment decides: the binarization operators deploy as lce, whatever their bits.
    assert edge.lce_applies(four_bit, "lce") and not edge.lce_applies(binary, "int8")
