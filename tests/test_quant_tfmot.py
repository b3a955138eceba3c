"""The TFMOT / TFLite quantization methods: ptq-int8, qat-int8, qat-4bit; BN folding; TFMOT models under measure."""

import contextlib
import io
import json

import numpy as np
import pytest

from effbench import cli
from effbench.bits import layer_bit_widths
from effbench.method import MethodRef
from effbench.modelfile import load_keras_model
from effbench.registry import TASKS, load_builtin_entries
from effbench.tf import keras, tf
from effbench.tflite import convert, litert_predict
from suites.quantization._folding import (
    activation_ranges,
    fold_batch_norms,
    initialize_activation_ranges,
    kernel_layer_bits,
    quantization_aware,
)
from suites.quantization.ptq_int8 import AEQ_RECIPES, CONVERTER_VARIANTS
from suites.quantization.qat_4bit import first_last_configs
from tests.conftest import assert_operator_reports_ratio_to_fp32_twin
from tracks.complexity import count_complexity

load_builtin_entries()
tfmot = pytest.importorskip("tensorflow_model_optimization")
quantization = tfmot.quantization.keras
RNG = np.random.default_rng(0)
pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")


def n_bit_scheme(bits: int):
    from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
        default_n_bit_quantize_scheme as n_bit,
    )

    return n_bit.DefaultNBitQuantizeScheme(num_bits_weight=bits, num_bits_activation=bits)


def randomize_batch_norms(model: keras.Model) -> None:
    """Statistics and affine parameters far from the identity, so a folding slip shows."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([
                RNG.uniform(0.5, 2.0, gamma.shape), RNG.normal(0, 0.5, beta.shape),
                RNG.normal(0, 0.5, mean.shape), RNG.uniform(0.2, 3.0, variance.shape),
            ])  # fmt: skip


def resnet8() -> keras.Model:
    """ResNet-8 on 8x8x1 with random BN statistics; its layers named from ``conv2d`` on, as a run's are."""
    keras.backend.reset_uids()
    model = MethodRef.parse("resnet-cifar:depth=8").create().build((8, 8, 1), 10)
    randomize_batch_norms(model)
    return model


@pytest.fixture(scope="module")
def digits():
    return TASKS.get("digits").factory().load()


# ------------------------------------------------------------------------------------------------ BN folding


def bn_model() -> keras.Model:
    """Conv -> BN -> ReLU, depthwise (bias) -> BN, a conv with two consumers (not foldable), BN after an Add,
    dense -> BN -> ReLU, logits."""
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn_conv")(x))
    y = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(x)
    y = keras.layers.BatchNormalization(name="bn_depthwise")(y)
    shared = keras.layers.Conv2D(8, 1, name="shared")(x)
    z = keras.layers.Add()([keras.layers.BatchNormalization(name="bn_shared")(shared), shared, y])
    z = keras.layers.BatchNormalization(name="bn_after_add")(z)
    z = keras.layers.Dense(5, name="dense")(keras.layers.GlobalAveragePooling2D()(z))
    z = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn_dense")(z))
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(z))
    randomize_batch_norms(model)
    return model


def test_folding_merges_each_bn_after_a_conv_or_dense_and_keeps_what_the_model_computes():
    model = bn_model()
    folded = fold_batch_norms(model)
    kept = {layer.name for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert kept == {"bn_shared", "bn_after_add"}  # a conv feeding two layers, a BN after an Add
    assert [folded.get_layer(n).use_bias for n in ("conv", "depthwise", "dense")] == [True] * 3
    x = RNG.normal(size=(5, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(folded(x, training=False), model(x, training=False), atol=1e-5)


def test_folded_weights_are_the_whitepapers_formula_per_output_channel():
    model = bn_model()
    folded = fold_batch_norms(model)

    def bn(name):
        layer = model.get_layer(name)
        gamma, beta, mean, variance = (w.numpy() for w in (layer.gamma, layer.beta, layer.moving_mean,
                                                           layer.moving_variance))  # fmt: skip
        return gamma / np.sqrt(variance + layer.epsilon), beta, mean

    scale, beta, mean = bn("bn_conv")
    (kernel,) = model.get_layer("conv").get_weights()
    np.testing.assert_allclose(folded.get_layer("conv").get_weights()[0], kernel * scale, rtol=1e-6)
    np.testing.assert_allclose(folded.get_layer("conv").get_weights()[1], beta - mean * scale, rtol=1e-5, atol=1e-6)

    scale, beta, mean = bn("bn_depthwise")
    kernel, bias = model.get_layer("depthwise").get_weights()  # (3, 3, 4 channels, 2 multipliers): out c * 2 + j
    new_kernel, new_bias = folded.get_layer("depthwise").get_weights()
    for c in range(4):
        for j in range(2):
            np.testing.assert_allclose(new_kernel[..., c, j], kernel[..., c, j] * scale[c * 2 + j], rtol=1e-6)
    np.testing.assert_allclose(new_bias, beta + (bias - mean) * scale, rtol=1e-5, atol=1e-6)

    scale, beta, mean = bn("bn_dense")
    kernel, bias = model.get_layer("dense").get_weights()
    np.testing.assert_allclose(folded.get_layer("dense").get_weights()[0], kernel * scale[None, :], rtol=1e-6)
    np.testing.assert_allclose(folded.get_layer("dense").get_weights()[1], beta + (bias - mean) * scale, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ TFMOT QAT


def quantized_kernels(model: keras.Model, x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Wrapped layer name -> (float kernel, the kernel the layer computed with) after one training-mode call.

    The call sets each LastValueQuantizer's range from the current kernel, as the first QAT step does.
    """
    model(x, training=True)
    kernels = {}
    for layer in model.layers:
        if hasattr(layer, "layer") and isinstance(getattr(layer.layer, "kernel", None), tf.Tensor):
            variable = next(w for w in layer.trainable_weights if w.name.endswith("kernel:0"))
            kernels[layer.layer.name] = (variable.numpy(), layer.layer.kernel.numpy())
    return kernels


def assert_nearest_on_grid(used: np.ndarray, kernel: np.ndarray, bits: int, per_channel: bool) -> None:
    """``used`` is ``kernel`` rounded to the nearest point of the symmetric narrow-range grid
    ``s * {-(2^(b-1) - 1), ..., 2^(b-1) - 1}``, s = max|W| / (2^(b-1) - 1) per output channel (last axis) or per
    tensor (a value at a rounding tie may go either way)."""
    q_max = 2 ** (bits - 1) - 1
    peak = np.abs(kernel).max(axis=tuple(range(kernel.ndim - 1))) if per_channel else np.abs(kernel).max()
    levels, exact = used / (peak / q_max), kernel / (peak / q_max)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert np.abs(levels).max() <= q_max + 1e-3
    assert np.abs(levels - exact).max() <= 0.5 + 1e-3


def test_tfmot_leaves_a_folded_conv_before_a_relu_float_and_the_folded_scheme_quantizes_it():
    folded = fold_batch_norms(resnet8())
    # TFMOT 0.8.1 as it is: LayerReLUQuantize gives the conv before a ReLU a NoOp config (kernel float).
    plain = quantization.quantize_apply(quantization.quantize_annotate_model(folded),
                                        quantization.default_8bit.Default8BitQuantizeScheme())  # fmt: skip
    assert layer_bit_widths(plain.get_layer("quant_conv2d"))[0] == 32
    assert type(plain.get_layer("quant_conv2d").quantize_config).__name__ == "NoOpQuantizeConfig"

    model = quantization_aware(folded, quantization.default_8bit.Default8BitQuantizeScheme())
    assert all(bits == [8, 8] for bits in kernel_layer_bits(model).values())
    kernels = quantized_kernels(model, RNG.uniform(size=(4, 8, 8, 1)).astype(np.float32))
    convs = [layer.name for layer in folded.layers if isinstance(layer, keras.layers.Conv2D)]
    assert sorted(kernels) == sorted([*convs, "logits"])  # every kernel computed through a quantizer
    for name, (kernel, used) in kernels.items():
        per_channel = name != "logits"  # TFMOT's default: per-channel conv kernels, per-tensor dense ones
        assert_nearest_on_grid(used, kernel, 8, per_channel)
        assert not np.allclose(used, kernel)


def test_n_bit_scheme_quantizes_every_folded_kernel_on_the_b_bit_grid():
    folded = fold_batch_norms(resnet8())
    model = quantization_aware(folded, n_bit_scheme(4))
    assert all(bits == [4, 4] for bits in kernel_layer_bits(model).values())
    for name, (kernel, used) in quantized_kernels(model, RNG.uniform(size=(4, 8, 8, 1)).astype(np.float32)).items():
        assert_nearest_on_grid(used, kernel, 4, name != "logits")
        assert max(len(np.unique(used[..., c])) for c in range(used.shape[-1])) <= 15


def test_activation_ranges_start_at_the_float_models_min_and_max_with_zero_inside():
    folded = fold_batch_norms(resnet8())
    model = quantization_aware(folded, quantization.default_8bit.Default8BitQuantizeScheme())
    samples = RNG.uniform(0.2, 1.0, size=(16, 8, 8, 1)).astype(np.float32)
    initialize_activation_ranges(model, folded, samples)
    ranges = activation_ranges(model)
    (input_range,) = ranges[None]
    assert (input_range["min_var"].numpy(), input_range["max_var"].numpy()) == pytest.approx((0.0, samples.max()))
    relu = keras.Model(folded.inputs, folded.get_layer("re_lu").output).predict(samples, verbose=0)
    (relu_range,) = ranges["re_lu"]
    assert float(relu_range["min_var"].numpy()) == 0.0
    assert float(relu_range["max_var"].numpy()) == pytest.approx(relu.max(), rel=1e-5)
    logits = folded.predict(samples, verbose=0)
    (logit_range,) = ranges["logits"]
    assert float(logit_range["min_var"].numpy()) == pytest.approx(min(logits.min(), 0.0), rel=1e-5)


def test_qat_4bit_keeps_the_first_and_last_layers_and_their_activations_at_8_bits_and_counts_bops():
    folded = fold_batch_norms(resnet8())
    model = quantization_aware(folded, n_bit_scheme(4), first_last_configs(folded, 4, 8), input_bits=8)
    bits = kernel_layer_bits(model)
    assert bits.pop("conv2d") == [8, 8] and bits.pop("logits") == [8, 8]
    assert set(map(tuple, bits.values())) == {(4, 4)}
    (input_quantizer,) = [layer.quantizer for layer in model.layers if type(layer).__name__ == "QuantizeLayer"]
    assert input_quantizer.num_bits == 8
    assert model.get_layer("quant_global_average_pooling2d").quantize_config.get_config()["num_bits_activation"] == 8
    assert model.get_layer("quant_re_lu").quantize_config.get_config()["num_bits_activation"] == 4
    report = count_complexity(model)
    for row in report.layers:
        assert row.bops == row.macs * row.w_bits * row.a_bits
    convs = {row.name: row for row in report.layers if row.macs}
    assert convs["quant_conv2d_1"].bops == convs["quant_conv2d_1"].macs * 16
    assert convs["quant_conv2d"].bops == convs["quant_conv2d"].macs * 64
    assert report.bops == sum(row.macs * row.w_bits * row.a_bits for row in report.layers)


@pytest.mark.parametrize("bits", [8, 4])
def test_qat_models_round_trip_through_h5_and_load_keras_model(tmp_path, bits):
    folded = fold_batch_norms(resnet8())
    scheme = quantization.default_8bit.Default8BitQuantizeScheme() if bits == 8 else n_bit_scheme(bits)
    model = quantization_aware(folded, scheme)
    x = RNG.uniform(size=(4, 8, 8, 1)).astype(np.float32)
    model(x, training=True)
    with quantization.quantize_scope():
        model.save(tmp_path / "qat.h5")
    reloaded = load_keras_model(tmp_path / "qat.h5")
    np.testing.assert_allclose(reloaded(x, training=False), model(x, training=False), atol=1e-5)
    assert kernel_layer_bits(reloaded) == kernel_layer_bits(model)


def test_the_runner_caches_a_qat_model_as_hdf5_and_reloads_it_exactly(tmp_path):
    """TFMOT 0.8.1's QuantizeLayer / QuantizeWrapperV2 do not reload from .keras on tf_keras (built twice: "expected 5
    variables, received 3"); the artifact cache keeps such models as .h5, which round-trips."""
    from effbench.method import Artifact
    from effbench.runner import load_artifact, save_artifact

    model = quantization_aware(fold_batch_norms(resnet8()), quantization.default_8bit.Default8BitQuantizeScheme())
    x = RNG.uniform(size=(4, 8, 8, 1)).astype(np.float32)
    model(x, training=True)
    save_artifact(Artifact(model), tmp_path / "artifact")
    assert (tmp_path / "artifact" / "model.h5").is_file()
    reloaded = load_artifact(tmp_path / "artifact").model
    np.testing.assert_allclose(reloaded(x, training=False), model(x, training=False), atol=1e-5)


# ------------------------------------------------------------------------------------------------ ptq-int8


PTQ = "ptq-int8:backbone=resnet-cifar:depth=8"
TWIN = "resnet-cifar:depth=8"


@pytest.fixture(scope="module")
def ptq_run(tmp_path_factory):
    """ptq-int8 through the real runner (smoke, digits): its artifact and its twin's model, reloaded from the cache."""
    from effbench.records import ResultStore
    from effbench.runner import load_artifact

    folder = tmp_path_factory.mktemp("ptq")
    assert_operator_reports_ratio_to_fp32_twin(PTQ, folder, twin=TWIN)
    store = ResultStore(folder)
    hashes = {record.method: record.training_hash for record in store.records()}
    return tuple(load_artifact(store.artifact_dir(hashes[slug])) for slug in ("ptq-int8", "resnet-cifar"))


def snr(reference: np.ndarray, outputs: np.ndarray) -> float:
    return float(np.mean(reference**2) / np.mean((outputs - reference) ** 2))


def filters(content: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Conv / dense weight tensors of a flatbuffer by name: (integer values, per-channel scales)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    found = {}
    for detail in interpreter.get_tensor_details():
        scales = detail["quantization_parameters"]["scales"]
        if detail["dtype"] == np.int8 and len(scales) > 1:
            found[detail["name"]] = (interpreter.get_tensor(detail["index"]), scales)
    return found


def test_ptq_int8_deploys_a_per_channel_int8_flatbuffer_of_the_folded_weights(ptq_run, digits):
    artifact, twin = ptq_run
    assert set(artifact.all_deployables()) == set(MethodRef.parse(PTQ).create().deployable_names())
    assert artifact.facts["calibration"] == {"split": "train", "samples": 128, "selection": "first", "labels": False}
    assert artifact.train_seconds == 0.0 and artifact.history == {}  # post-training: nothing trains
    weights = filters(artifact.tflite)
    (stem_values, stem_scales), *_ = [value for name, value in weights.items() if "/conv2d/" in name]
    stem = fold_batch_norms(twin.model).get_layer("conv2d").get_weights()[0]  # (3, 3, 1, 16)
    # The converter folds BN as _folding does; per output channel, s_c = max|W'_c| / 127.
    np.testing.assert_allclose(stem_scales, np.abs(stem).max(axis=(0, 1, 2)) / 127, rtol=1e-4)
    assert np.abs(stem_values).max(axis=(1, 2, 3)).tolist() == [127] * 16
    reference = twin.model.predict(digits.x_test, verbose=0)
    assert snr(reference, litert_predict(artifact.tflite, digits.x_test, 1)) > 10
    # The Keras model is the int8 simulation: the complexity track counts 8 x 8 bits, 1/16 of the float BOPs.
    assert count_complexity(artifact.model).bops * 16 == count_complexity(twin.model).bops


def test_ptq_int8_other_deployables_are_flatbuffers_litert_runs_with_their_facts(ptq_run, digits):
    artifact, twin = ptq_run
    reference = twin.model.predict(digits.x_test, verbose=0)
    sizes = {}
    for name in (*CONVERTER_VARIANTS, *AEQ_RECIPES):
        deployable = artifact.deployables[name]
        assert snr(reference, litert_predict(deployable.tflite, digits.x_test, 1)) > 10, name
        assert deployable.facts["simulated"] is False
        sizes[name] = len(deployable.tflite)
    assert sizes["wi4"] < sizes["dynamic"] < sizes["float16"] < len(convert(twin.model, "float32", None))
    assert artifact.deployables["wi4"].facts["calibration"] == {"split": "none"}
    assert artifact.deployables["wi8_ai16"].facts["calibration"]["samples"] == 128
    for name in AEQ_RECIPES:
        validation = artifact.deployables[name].facts["validation"]
        assert validation["snr"] > 10 and 0.9 < validation["cosine_similarity"] <= 1.0 + 1e-6
        assert validation["snr_db"] == pytest.approx(10 * np.log10(validation["snr"]))
    for values, _ in filters(artifact.deployables["wi4"].tflite).values():
        assert np.abs(values).max() == 7  # int4: symmetric [-7, 7], max-abs per channel
    assert layer_bit_widths(artifact.deployables["wi8_ai16"].model.get_layer("conv2d")) == (8, 16)
    assert layer_bit_widths(artifact.deployables["wi4"].model.get_layer("conv2d")) == (4, 32)


# ------------------------------------------------------------------------------------------------ the runner


def test_qat_4bit_sweep_reference_with_a_backbone_reference_parses():
    method = MethodRef.parse("qat-4bit:bits=2,backbone=resnet-cifar:depth=8").create()
    assert method.options["bits"] == 2
    assert method.backbone(TASKS.get("digits").spec) == MethodRef("resnet-cifar", (("depth", 8),))
    with pytest.raises(ValueError, match="from 2 to 8"):
        MethodRef.parse("qat-4bit:bits=1").create()


@pytest.mark.parametrize("slug", ["qat-int8:backbone=resnet-cifar:depth=8", "qat-4bit:backbone=resnet-cifar:depth=8,bits=2"])  # noqa: E501
def test_qat_method_runs_through_the_runner_and_reports_the_ratio_to_its_twin(tmp_path, slug):
    metrics = assert_operator_reports_ratio_to_fp32_twin(slug, tmp_path, twin=TWIN)
    assert 0.0 <= metrics["top1"] <= 1.0


# ------------------------------------------------------------------------------------- measure on TFMOT models


def small_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)  # 6 x 6 x 4 x 9 = 1296 MACs
    return keras.Model(inputs, keras.layers.Dense(3, name="dense")(keras.layers.Flatten()(x)))  # 432 MACs


MACS = {"conv": 1296, "dense": 432}
KERNELS = {"conv": 36, "dense": 432}
BIASES = 4 + 3


def measured(path) -> dict:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert cli.main(["measure", "--track", "complexity", "--model", str(path), "--format", "json"]) == 0
    return json.loads(output.getvalue())


def trained_and_saved(model: keras.Model, path, scope, callbacks=()) -> None:
    x = RNG.uniform(size=(16, 8, 8, 1)).astype(np.float32)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(16) % 3, epochs=2, batch_size=4, verbose=0, callbacks=list(callbacks))
    with scope():
        model.save(path)


@pytest.mark.parametrize("bits", [8, 4])
def test_measure_counts_the_bits_of_a_tfmot_qat_model_saved_as_h5(tmp_path, bits):
    if bits == 8:
        model = quantization.quantize_model(small_model())
    else:
        model = quantization.quantize_apply(quantization.quantize_annotate_model(small_model()), n_bit_scheme(bits))
    trained_and_saved(model, tmp_path / "qat.h5", quantization.quantize_scope)
    counts = measured(tmp_path / "qat.h5")
    assert counts["bops"] == sum(MACS.values()) * bits * bits
    assert counts["quant_conv/bops"] == MACS["conv"] * bits * bits
    assert counts["size_bits"] == sum(KERNELS.values()) * bits + BIASES * 32
    assert counts["params"] == sum(KERNELS.values()) + BIASES  # TFMOT's ranges and steps are not counted


def test_measure_counts_a_pruned_model_saved_without_strip(tmp_path):
    sparsity = tfmot.sparsity.keras
    model = sparsity.prune_low_magnitude(small_model(), pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=1))
    trained_and_saved(model, tmp_path / "pruned.h5", sparsity.prune_scope, [sparsity.UpdatePruningStep()])
    counts = measured(tmp_path / "pruned.h5")
    assert counts["params"] == sum(KERNELS.values()) + BIASES  # masks and thresholds are not counted
    assert counts["sparsity"] == pytest.approx(0.5)
    assert counts["bops"] == sum(MACS.values()) * 32 * 32
    assert counts["macs_nonzero"] == sum(MACS.values()) // 2


def test_measure_counts_a_clustered_model(tmp_path):
    clustering = tfmot.clustering.keras
    model = clustering.cluster_weights(small_model(), number_of_clusters=4,
                                       cluster_centroids_init=clustering.CentroidInitialization.LINEAR)  # fmt: skip
    trained_and_saved(model, tmp_path / "clustered.h5", clustering.cluster_scope)
    counts = measured(tmp_path / "clustered.h5")
    assert counts["macs"] == sum(MACS.values())
    assert counts["params"] == sum(KERNELS.values()) + BIASES
