"""Specification of the complexity track: hand-countable models, bit widths, published counts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from effbench.bits import layer_bit_widths
from effbench.tf import keras
from effbench.track import MeasureContext
from tracks.complexity import (
    ComplexityError,
    ComplexityReport,
    ComplexityTrack,
    LayerComplexity,
    count_complexity,
    einsum_macs,
    operations,
)

L = keras.layers


def count_single(layer: keras.layers.Layer, *input_shapes: tuple[int, ...]) -> LayerComplexity:
    """Count ``layer`` called once on fresh inputs of the given per-example shapes."""
    inputs = [keras.Input(shape) for shape in input_shapes]
    outputs = layer(inputs if len(inputs) > 1 else inputs[0])
    return count_complexity(keras.Model(inputs, outputs)).row(layer.name)


# ---------------------------------------------------------------- hand-countable layers


def test_dense_5_to_10_has_60_params_50_macs_110_flops():
    row = count_single(L.Dense(10, name="fc"), (5,))
    assert (row.params, row.macs, row.flops) == (60, 50, 2 * 50 + 10)
    assert row.bops == 50 * 32 * 32
    assert row.size_bits == 60 * 32


def test_dense_counts_every_leading_position():
    row = count_single(L.Dense(10, name="fc"), (7, 5))
    assert row.macs == 5 * 10 * 7


def test_fused_activation_costs_one_per_element_and_softmax_three():
    assert count_single(L.Dense(10, activation="relu", name="fc"), (5,)).flops == 100 + 10 + 10
    assert count_single(L.Dense(10, activation="softmax", name="fc"), (5,)).flops == 100 + 10 + 30
    assert count_single(L.Dense(10, use_bias=False, name="fc"), (5,)).flops == 100


def test_conv2d_3x3_3_to_8_same_on_8x8():
    row = count_single(L.Conv2D(8, 3, padding="same", name="conv"), (8, 8, 3))
    assert row.params == 3 * 3 * 3 * 8 + 8 == 224
    assert row.macs == 8 * 8 * 3 * 3 * 3 * 8 == 13824
    assert row.flops == 2 * 13824 + 8 * 8 * 8


def test_conv2d_stride_and_groups_count_output_positions_and_group_fan_in():
    row = count_single(L.Conv2D(8, 3, strides=2, groups=2, name="conv"), (9, 9, 4))
    assert row.macs == 3 * 3 * (4 // 2) * 8 * 4 * 4


def test_depthwise_conv2d():
    row = count_single(L.DepthwiseConv2D(3, depth_multiplier=2, name="dw"), (8, 8, 4))
    assert row.params == 3 * 3 * 4 * 2 + 8
    assert row.macs == 3 * 3 * 4 * 2 * 6 * 6


def test_separable_conv2d_is_depthwise_plus_pointwise():
    row = count_single(L.SeparableConv2D(16, 3, padding="same", name="sep"), (8, 8, 4))
    assert row.params == 3 * 3 * 4 + 4 * 16 + 16
    assert row.macs == 3 * 3 * 4 * 64 + 4 * 16 * 64


def test_conv2d_transpose_scatters_every_input_element_through_the_kernel():
    row = count_single(L.Conv2DTranspose(2, 3, strides=2, name="up"), (4, 4, 4))
    assert row.macs == 3 * 3 * 4 * 2 * 4 * 4


def test_batch_norm_counts_moving_stats_as_params_and_two_flops_per_element():
    row = count_single(L.BatchNormalization(name="bn"), (8, 8, 4))
    assert (row.params, row.params_trainable) == (16, 8)
    assert (row.macs, row.flops) == (0, 2 * 8 * 8 * 4)
    assert row.size_bits == 16 * 32


def test_add_costs_n_minus_one_per_element():
    assert count_single(L.Add(name="add"), (8, 8, 4), (8, 8, 4)).flops == 256
    assert count_single(L.Add(name="add"), (8, 8, 4), (8, 8, 4), (8, 8, 4)).flops == 512


def test_pooling_costs_window_per_output_and_global_pooling_one_per_input():
    assert count_single(L.MaxPooling2D(2, name="pool"), (8, 8, 4)).flops == 4 * 4 * 4 * (2 * 2)
    assert count_single(L.GlobalAveragePooling2D(name="gap"), (8, 8, 4)).flops == 8 * 8 * 4


def test_elementwise_layer_costs():
    assert count_single(L.ReLU(name="a"), (8, 4)).flops == 32
    assert count_single(L.Activation("swish", name="a"), (8, 4)).flops == 32
    assert count_single(L.Activation("linear", name="a"), (8, 4)).flops == 0
    assert count_single(L.Softmax(name="a"), (8, 4)).flops == 3 * 32
    assert count_single(L.LayerNormalization(name="a"), (8, 4)).flops == 5 * 32
    assert count_single(L.Rescaling(1 / 255, name="a"), (8, 4)).flops == 2 * 32
    for free in (L.Flatten(name="a"), L.Dropout(0.5, name="a"), L.Reshape((32,), name="a")):
        assert count_single(free, (8, 4)).flops == 0


def test_einsum_dense_matches_dense():
    row = count_single(L.EinsumDense("abc,cd->abd", output_shape=(7, 10), bias_axes="d", name="e"), (7, 5))
    assert row.macs == 5 * 10 * 7
    assert row.flops == 2 * 350 + 70
    assert einsum_macs("...b,bc->...c", (None, 3, 7, 5), (5, 10)) == 3 * 7 * 5 * 10


def test_multi_head_attention_counts_projections_and_both_score_products():
    heads, key_dim, t_q, t_k, width = 2, 8, 6, 4, 16
    mha = L.MultiHeadAttention(heads, key_dim, name="mha")
    query, value = keras.Input((t_q, width)), keras.Input((t_k, width))
    row = count_complexity(keras.Model([query, value], mha(query, value))).row("mha")
    projections = t_q * width * heads * key_dim + 2 * t_k * width * heads * key_dim + t_q * heads * key_dim * width
    scores = heads * t_q * t_k
    assert row.macs == projections + 2 * scores * key_dim
    assert row.params == mha.count_params()


# ---------------------------------------------------------------- graph traversal


def test_shared_layer_called_twice_counts_operations_twice_and_params_once():
    shared = L.Dense(3, name="shared")
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], L.Add(name="add")([shared(a), shared(b)]))
    report = count_complexity(model)
    row = report.row("shared")
    assert (row.calls, row.params, row.macs, row.flops) == (2, 15, 24, 2 * 24 + 2 * 3)
    assert report.params == model.count_params() == 15


def test_calls_made_while_building_another_model_do_not_count():
    dense = L.Dense(4, name="fc")
    x = keras.Input((4,))
    model = keras.Model(x, dense(x))
    y = keras.Input((4,))
    keras.Model(y, dense(dense(y)))
    assert count_complexity(model).row("fc").calls == 1


def test_nested_model_is_recursed_into_once_per_call():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="proj")], name="inner")
    x = keras.Input((4,))
    model = keras.Model(x, L.Add(name="add")([inner(x), inner(x)]))
    report = count_complexity(model)
    row = report.row("inner/proj")
    assert (row.calls, row.params, row.macs) == (2, 15, 24)
    assert report.params == model.count_params()


def test_unknown_weighted_layer_raises_naming_layer_and_class():
    class Scale(L.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1],))

        def call(self, x):
            return x * self.w

    with pytest.raises(ComplexityError, match=r"'my_scale' of class Scale has weights"):
        count_single(Scale(name="my_scale"), (4,))


def test_unknown_weightless_layer_is_listed_as_uncounted():
    x = keras.Input((4,))
    report = count_complexity(keras.Model(x, L.Lambda(lambda t: t * 2, name="double")(x)))
    assert report.uncounted == ["double (Lambda)"]
    assert report.flops == 0 and any("double" in w for w in report.warnings)


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = L.Dense(3)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 4), np.float32))
    with pytest.raises(ComplexityError, match="functional or Sequential model"):
        count_complexity(net)


def test_unknown_spatial_dimensions_are_refused():
    x = keras.Input((None, None, 3))
    with pytest.raises(ComplexityError, match="unknown dimension"):
        count_complexity(keras.Model(x, L.Conv2D(4, 3, name="conv")(x)))


# ---------------------------------------------------------------- bit widths, BOPs, size


def test_larq_binary_conv_counts_one_bit_weights_and_activations():
    import larq

    conv = larq.layers.QuantConv2D(
        8, 3, padding="same", kernel_quantizer="ste_sign", input_quantizer="ste_sign",
        kernel_constraint="weight_clip", name="bconv",
    )
    row = count_single(conv, (8, 8, 3))
    assert (row.w_bits, row.a_bits) == (1, 1)
    assert row.macs == 13824 and row.bops == row.macs
    assert row.size_bits == 3 * 3 * 3 * 8 * 1 + 8 * 32


def test_larq_dorefa_2_bit_quantizers_count_two_bits():
    import larq

    dense = larq.layers.QuantDense(
        4, kernel_quantizer=larq.quantizers.DoReFa(k_bit=2, mode="weights"),
        input_quantizer=larq.quantizers.DoReFa(k_bit=2, mode="activations"), name="q",
    )
    row = count_single(dense, (5,))
    assert (row.w_bits, row.a_bits) == (2, 2)
    assert row.bops == 20 * 2 * 2
    assert row.size_bits == 20 * 2 + 4 * 32


def test_larq_macs_agree_with_larqs_own_profile():
    import larq

    binary = {"kernel_quantizer": "ste_sign", "kernel_constraint": "weight_clip", "input_quantizer": "ste_sign"}
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        larq.layers.QuantConv2D(8, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip"),
        larq.layers.QuantConv2D(8, 3, use_bias=False, **binary),
        L.BatchNormalization(), L.Flatten(), larq.layers.QuantDense(10, **binary),
    ])
    report, profile = count_complexity(model), larq.models.ModelProfile(model)
    assert report.params == model.count_params()
    assert report.macs == profile.op_count("mac") == 136_800
    binary_macs = sum(row.macs for row in report.layers if (row.w_bits, row.a_bits) == (1, 1))
    assert binary_macs == profile.op_count("mac", 1)


def test_larq_layer_without_input_quantizer_has_float_activations():
    import larq

    assert layer_bit_widths(larq.layers.QuantDense(4, kernel_quantizer="ste_sign")) == (1, 32)
    assert layer_bit_widths(SimpleNamespace(kernel_quantizer="ste_sign", input_quantizer="ste_sign")) == (1, 1)
    assert layer_bit_widths(L.Dense(4)) == (32, 32)


def test_effbench_bits_attribute_overrides_everything():
    dense = L.Dense(3, name="fc")
    dense.effbench_bits = (4, 8)
    row = count_single(dense, (5,))
    assert (row.w_bits, row.a_bits) == (4, 8)
    assert row.bops == 15 * 4 * 8
    assert row.size_bits == 15 * 4 + 3 * 32


def test_tfmot_quantized_model_keeps_float_params_and_counts_8_bits():
    import tensorflow_model_optimization as tfmot

    float_model = keras.Sequential([
        keras.Input((8, 8, 3)), L.Conv2D(4, 3, name="conv"), L.BatchNormalization(name="bn"),
        L.ReLU(name="relu"), L.Flatten(name="flat"), L.Dense(10, name="fc"),
    ])
    quantized = tfmot.quantization.keras.quantize_model(float_model)
    ref, report = count_complexity(float_model), count_complexity(quantized)
    # quantize_model's min/max/step variables inflate count_params; they do not ship.
    assert quantized.count_params() > float_model.count_params()
    assert (report.params, report.params_trainable) == (ref.params, ref.params_trainable)
    assert (report.macs, report.flops) == (ref.macs, ref.flops)
    for name in ("quant_conv", "quant_fc"):
        assert (report.row(name).w_bits, report.row(name).a_bits) == (8, 8)
    kernels = 3 * 3 * 3 * 4 + 144 * 10
    assert report.size_bits == kernels * 8 + (ref.params - kernels) * 32
    assert report.bops == ref.macs * 64


def test_tfmot_n_bit_models_count_the_bits_their_quantize_configs_declare_also_after_an_h5_reload(tmp_path):
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
        default_n_bit_quantize_scheme,
    )

    # Conv -> BN: TFMOT 0.8.1 gives a conv followed directly by a ReLU a NoOp config (its kernel stays float).
    float_model = keras.Sequential([
        keras.Input((8, 8, 3)), L.Conv2D(4, 3, name="conv"), L.BatchNormalization(name="bn"), L.ReLU(name="relu"),
        L.Flatten(name="flat"), L.Dense(10, name="fc"),
    ])
    scheme = default_n_bit_quantize_scheme.DefaultNBitQuantizeScheme(num_bits_weight=4, num_bits_activation=6)
    annotated = tfmot.quantization.keras.quantize_annotate_model(float_model)
    quantized = tfmot.quantization.keras.quantize_apply(annotated, scheme)
    with tfmot.quantization.keras.quantize_scope():
        quantized.save(tmp_path / "qat.h5")
        reloaded = keras.models.load_model(tmp_path / "qat.h5")
    for model in (quantized, reloaded):
        report = count_complexity(model)
        assert [(report.row(n).w_bits, report.row(n).a_bits) for n in ("quant_conv", "quant_fc")] == [(4, 6)] * 2
        assert report.bops == count_complexity(float_model).macs * 4 * 6


@pytest.mark.parametrize(
    ("bits", "per_mac"),
    [((1, 1), 1 / 64), ((2, 8), 16 / 64), ((8, 8), 1.0), ((2, 2), 4 / 64), ((32, 32), 1.0), ((3, 32), 1.0),
     ((32, 1), 1.0)],
)
def test_ops_count_low_bit_macs_at_bits_over_64_and_every_other_mac_at_one(bits, per_mac):
    """OPs = BOPs / 64 + FLOPs (Bi-Real Net, ReActNet): only layers with both operands below 32 bits are cheaper."""
    assert operations(640, *bits) == pytest.approx(640 * per_mac)
    dense = L.Dense(3, name="fc")
    dense.effbench_bits = bits
    row = count_single(dense, (5,))
    assert row.ops == pytest.approx(row.macs * per_mac) and row.bops == row.macs * bits[0] * bits[1]


def test_ops_of_a_mixed_model_sum_float_macs_and_binary_macs_over_64_and_ignore_elementwise_work():
    import larq

    binary = {"kernel_quantizer": "ste_sign", "kernel_constraint": "weight_clip", "input_quantizer": "ste_sign"}
    model = keras.Sequential([
        keras.Input((8, 8, 3)), L.Conv2D(8, 3, padding="same", name="stem"), L.BatchNormalization(),
        L.Activation("tanh"), larq.layers.QuantConv2D(16, 3, padding="same", name="bconv", **binary),
        L.GlobalAveragePooling2D(), L.Dense(10, name="fc"),
    ])
    report = count_complexity(model)
    float_macs, binary_macs = 8 * 8 * 3 * 3 * 3 * 8 + 16 * 10, 8 * 8 * 3 * 3 * 8 * 16
    assert report.macs == float_macs + binary_macs
    assert report.bops == 1024 * float_macs + binary_macs
    assert report.ops == pytest.approx(float_macs + binary_macs / 64)
    assert report.ops == pytest.approx(sum(row.ops for row in report.layers))
    assert report.flops > 2 * report.macs  # FLOPs count the binary MACs at 2 and the elementwise work


def test_ops_is_declared_as_a_per_layer_cost_next_to_bops():
    specs = {spec.name: spec for spec in ComplexityTrack.spec.metrics}
    assert (specs["ops"].unit, specs["ops"].direction, specs["ops"].role) == ("count", "lower", "cost")
    assert specs["ops"].scopes == specs["bops"].scopes == ("", "layer")


# ---------------------------------------------------------------- metrics and the track


def test_metrics_names_units_and_per_layer_scope():
    dense = L.Dense(3, use_bias=False, name="fc")
    dense.effbench_bits = (1, 1)
    x = keras.Input((5,))
    model = keras.Model(x, L.Flatten(name="flat")(dense(x)))
    dense.kernel.assign(np.array([[0.0, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]], np.float32))
    report = count_complexity(model)
    whole = {m.name: (m.value, m.unit) for m in report.metrics() if not m.scope}
    assert whole == {
        "params": (15, "count"), "params_trainable": (15, "count"), "params_nonzero": (12, "count"),
        "macs": (15, "count"), "flops": (30, "count"), "bops": (15, "count"), "ops": (15 / 64, "count"),
        "size_bits": (15, "bit"), "size_bytes": (2, "byte"), "sparsity": (pytest.approx(3 / 15), "ratio"),
        "macs_nonzero": (12, "count"), "flops_nonzero": (24, "count"), "compression_ratio": (15 / 12, "ratio"),
        "theoretical_speedup": (30 / 24, "ratio"),
    }
    scoped = [(m.name, m.scope) for m in report.metrics() if m.scope]
    assert scoped == [(name, "fc") for name in ("params", "macs", "flops", "bops", "ops", "size_bits")]


class HalfActiveDense(L.Dense):
    """A dense layer that, per input, runs only half of its output units (as a routed layer would)."""

    def effbench_active_macs(self, inputs, outputs):
        return inputs[0][-1] * self.units // 2


def test_a_layer_that_declares_its_active_macs_adds_them_beside_the_macs_the_graph_executes():
    x = keras.Input((5,))
    routed, dense = HalfActiveDense(4, name="routed"), L.Dense(3, name="fc")
    report = count_complexity(keras.Model(x, dense(routed(x))))
    assert report.conditional and (report.macs, report.macs_active) == (20 + 12, 10 + 12)
    assert (report.row("routed").macs_active, report.row("fc").macs_active) == (10, 12)
    assert {m.name: m.value for m in report.metrics() if not m.scope}["macs_active"] == 22


def test_a_model_without_conditional_layers_reports_no_active_macs():
    x = keras.Input((5,))
    report = count_complexity(keras.Model(x, L.Dense(3)(x)))
    assert not report.conditional and report.macs_active == report.macs
    assert "macs_active" not in {m.name for m in report.metrics()}


def test_zeros_shrink_the_nonzero_macs_of_kernel_layers_only_in_proportion_and_structure_shrinks_the_model():
    """ShrinkBench's counts: a conv with 3/4 of its kernel zero computes 1/4 of its MACs; attention products stay."""
    x = keras.Input((6, 6, 2))
    conv = L.Conv2D(4, 3, padding="same", name="conv")
    model = keras.Model(x, L.GlobalAveragePooling2D(name="pool")(conv(x)))
    kernel, bias = conv.get_weights()
    kernel[..., 1:] = 0.0  # 3 of 4 output channels pruned (unstructured: the layer keeps its shape)
    conv.set_weights([kernel, bias])
    report = count_complexity(model)
    dense_macs = 3 * 3 * 2 * 4 * 36
    assert (report.macs, report.macs_nonzero) == (dense_macs, dense_macs // 4)
    assert report.flops_nonzero == report.flops - 2 * (dense_macs - dense_macs // 4)
    assert report.theoretical_speedup == pytest.approx(report.flops / report.flops_nonzero)
    assert report.compression_ratio == pytest.approx(report.params / report.params_nonzero)
    tokens = keras.Input((4, 8))
    attention = L.MultiHeadAttention(2, 4, name="mha")
    row = count_complexity(keras.Model(tokens, attention(tokens, tokens))).row("mha")
    assert row.macs_nonzero == row.macs


def test_a_frozen_layer_has_no_trainable_params_though_its_variables_say_trainable():
    x = keras.Input((4,))
    frozen = L.Dense(3, name="frozen")
    model = keras.Model(x, L.Dense(2, name="head")(frozen(x)))
    frozen.trainable = False
    assert frozen.kernel.trainable  # the variable keeps its flag
    assert count_complexity(model).params_trainable == 3 * 2 + 2


def test_track_is_registered_and_measures_the_context_model():
    assert ComplexityTrack.spec.slug == "complexity" and not ComplexityTrack.spec.needs_task_data
    x = keras.Input((5,))
    model = keras.Model(x, L.Dense(10)(x))
    assert ComplexityTrack().measure(MeasureContext(model=model)) == count_complexity(model).metrics()


# ---------------------------------------------------------------- published counts

# Measured with this module (224x224x3 input, 1000 classes, weights=None):
#   MobileNet    params 4,253,864   MACs   568,740,352  (paper: 569M Mult-Adds, 4.2M params)
#   MobileNetV2  params 3,538,984   MACs   300,774,272  (paper: 300M Mult-Adds, 3.4M params)
#   ResNet50     params 25,636,712  MACs 3,857,973,248  (paper: 3.8G "FLOPs" = multiply-adds, 25.6M)
# Keras params include the non-trainable BN moving statistics, so they exceed the papers' figures;
# MobileNetV2's 3.4M is also below its 3,504,872 trainable params (the paper's table rounds down),
# so params are checked against Keras exactly and only MACs against the papers.
PUBLISHED = [
    ("MobileNet", 569e6, 4_253_864),  # Howard et al. 2017, Table 1/8
    ("MobileNetV2", 300e6, 3_538_984),  # Sandler et al. 2018, Table 4
    ("ResNet50", 3.8e9, 25_636_712),  # He et al. 2016, Table 1
]


@pytest.mark.parametrize(("name", "published_macs", "keras_params"), PUBLISHED)
def test_keras_applications_match_published_mult_adds(name, published_macs, keras_params):
    model = getattr(keras.applications, name)(weights=None)
    report = count_complexity(model)
    print(f"{name}: params {report.params:,} MACs {report.macs:,} FLOPs {report.flops:,}")
    assert report.params == model.count_params() == keras_params
    assert report.macs == pytest.approx(published_macs, rel=0.02)
    assert report.bops == 32 * 32 * report.macs
    assert report.size_bits == 32 * report.params
    assert report.uncounted == [] and report.warnings == []


def test_mobilenet_params_agree_with_the_paper():
    params = count_complexity(keras.applications.MobileNet(weights=None)).params
    assert params == pytest.approx(4.2e6, rel=0.02)


def test_report_totals_are_the_sum_of_rows():
    report = ComplexityReport([LayerComplexity("a", "X", macs=2, size_bits=9), LayerComplexity("b", "Y", macs=3)])
    assert (report.macs, report.size_bits, report.size_bytes) == (5, 9, math.ceil(9 / 8))
