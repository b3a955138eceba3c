"""The latency track: Keras inference time per forward pass on every device TensorFlow sees.

Devices: the CPU (``/CPU:0``) always; every GPU in ``tf.config.list_logical_devices("GPU")``; and,
when TPU cores are listed by ``tf.config.list_logical_devices("TPU")``, the TPU through
``tf.distribute.TPUStrategy``. Each device is measured at batch 1 (latency) and at
``THROUGHPUT_BATCH`` (throughput).

What is timed (CPU and GPU): one call of ``tf.function(lambda x: model(x, training=False))`` on a
batch that is already a ``tf.Tensor`` resident on the device, up to and including ``.numpy()`` on
every output. The ``.numpy()`` is what makes each timed call block until the device has finished
(TensorFlow dispatches GPU kernels asynchronously); it adds the device-to-host copy of the output,
which is included on every device for the same reason, and is tiny (batch x classes floats; on the
CPU it copies nothing). Input transfer, Python-side preprocessing and ``model.predict``'s data
pipeline are excluded. Each (device, batch) gets its own ``tf.function``, traced during the
untimed warm-up calls, so tracing and graph optimisation are never timed. Ops without a kernel for
the device fall back to the CPU (TensorFlow's soft placement), and that fallback is part of the time.

``jit_compile`` is ``JIT_COMPILE`` (False): the track measures TensorFlow's default graph executor,
which is how a Keras model runs unless its owner opts into XLA, and which runs every op (XLA
compilation fails on ops it has no kernel for, such as ``tf.py_function``).

Inputs are standard-normal float32 arrays of each model input's shape (one per input), drawn with
the constant seed ``INPUT_SEED``, so every method and run sees the same values. A task whose inputs are
ids (``tokens``, ``categorical``) gets uniform ids in ``[0, vocabulary)`` instead: an embedding lookup of a
negative or out-of-range id fails.

Timing follows ``tracks._timing`` with ``POLICY`` (``SMOKE_POLICY`` at the smoke budget): warm-up calls, then
repeats until enough calls and seconds. Metrics per device and batch, named ``keras_<device>_b<batch>_`` +
``median_ms``, ``p90_ms``, ``cv``, ``repeats``, ``samples_per_s`` (batch / median), where ``<device>`` is ``cpu``,
``gpu0``, ``gpu1``, ... or ``tpu``; plus the text metric ``keras_<device>_device`` naming the hardware.

Neither the GPU nor the TPU path has been run: there was no GPU or TPU where this was written (the
GPU path is the CPU path under another ``tf.device``; tests cover its device listing). The TPU path assumes a directly
attached TPU (a Cloud TPU VM, resolver ``tpu="local"``) whose TPU system is already initialised
(that is what makes its cores listed); it copies the model into the strategy's scope, compiles
``strategy.run`` of the forward pass in a ``tf.function`` (always XLA on TPU), and feeds the same
host-resident batch to every core on each call, so unlike CPU and GPU its time includes the
host-to-TPU copy of the input. ``samples_per_s`` counts the batch once, i.e. per core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from effbench.provenance import cpu_model, cpu_threads
from effbench.registry import MetricSpec, register_track
from effbench.tf import keras, tf
from effbench.track import MeasureContext, Metric, Track
from tracks._timing import TimingPolicy, policy_for, time_calls, timing_specs

THROUGHPUT_BATCH = 64
BATCH_SIZES = (1, THROUGHPUT_BATCH)
INPUT_SEED = 0
JIT_COMPILE = False  # TensorFlow's default executor; the module docstring says why
# Enough for a stable median on a real run (a small model's call takes well under a millisecond);
# max_seconds bounds a large model on a slow CPU. Tests replace it with a small policy.
POLICY = TimingPolicy(warmup=10, min_repeats=30, min_seconds=1.0, max_seconds=10.0)
METRICS = (
    *timing_specs("keras_<dev>_b<batch>", batch=True),
    MetricSpec("keras_<dev>_device", "text", "none", "info"),
)


@dataclass(frozen=True)
class Device:
    """A device to time on: ``prefix`` in metric names, ``name`` for ``tf.device``, ``label`` for people."""

    prefix: str
    name: str
    label: str


def random_inputs(model: keras.Model, batch: int, seed: int = INPUT_SEED, vocabulary: int = 0) -> list[np.ndarray]:
    """One seeded float32 array per model input, with ``batch`` rows: standard-normal values, or with a
    ``vocabulary``, integer ids drawn uniformly from ``[0, vocabulary)``."""
    rng = np.random.default_rng(seed)
    arrays = []
    for model_input in model.inputs:
        shape = tuple(model_input.shape[1:])
        if None in shape:
            raise ValueError(
                f"model input '{model_input.name}' has free dimensions {shape}: rebuild the model on a fixed "
                "input shape (effbench measure --input-shape)"
            )
        values = rng.integers(0, vocabulary, (batch, *shape)) if vocabulary else rng.standard_normal((batch, *shape))
        arrays.append(values.astype(np.float32))
    return arrays


def as_model_batch(arrays: list) -> object:
    """A single-input model takes its one input bare; a multi-input model takes the list."""
    return arrays[0] if len(arrays) == 1 else arrays


def compiled_forward(model: keras.Model) -> Callable[[object], object]:
    """``model(inputs, training=False)`` as a ``tf.function``; ``inputs`` as :func:`as_model_batch` gives it."""
    return tf.function(lambda inputs: model(inputs, training=False), jit_compile=JIT_COMPILE)


def fetch(outputs: object) -> object:
    """Copy every output to the host as NumPy, which waits until the device has computed it."""
    return tf.nest.map_structure(lambda tensor: tensor.numpy(), outputs)


def device_call(forward: Callable[[object], object], device: str, arrays: list[np.ndarray]) -> Callable[[], object]:
    """A blocking call of ``forward`` on ``device``, its inputs placed on the device once, beforehand."""
    with tf.device(device):
        # tf.constant makes a host tensor in eager mode; tf.identity under the scope copies it over.
        batch = as_model_batch([tf.identity(tf.constant(array)) for array in arrays])

    def call() -> object:
        with tf.device(device):
            return fetch(forward(batch))

    return call


def cpu_device() -> Device:
    return Device("cpu", "/CPU:0", f"{cpu_model()} ({cpu_threads()} threads)")


def gpu_devices() -> list[Device]:
    """Each GPU TensorFlow sees, labelled with its model name from the physical device's details."""
    logical = tf.config.list_logical_devices("GPU")
    physical = tf.config.list_physical_devices("GPU")
    # Logical GPU i is physical GPU i unless GPUs were split into virtual devices; then which
    # physical GPU a logical one is cannot be read back, and its TensorFlow name is the label.
    names = [tf.config.experimental.get_device_details(device).get("device_name") for device in physical]
    if len(names) != len(logical):
        names = [None] * len(logical)
    return [
        Device(f"gpu{index}", device.name, name or device.name)
        for index, (device, name) in enumerate(zip(logical, names, strict=True))
    ]


def local_devices() -> list[Device]:
    """The CPU, then every GPU: the devices timed through ``tf.device``."""
    return [cpu_device(), *gpu_devices()]


def tpu_attached() -> bool:
    return bool(tf.config.list_logical_devices("TPU"))


def label_metric(prefix: str, label: str) -> Metric:
    return Metric(f"keras_{prefix}_device", label, "text")


def timed_metrics(
    prefix: str, make_call: Callable[[int], Callable[[], object]], policy: TimingPolicy
) -> list[Metric]:
    """Time ``make_call(batch)`` for each batch size, as ``keras_<prefix>_b<batch>_*`` metrics."""
    metrics = []
    for batch in BATCH_SIZES:
        timing = time_calls(make_call(batch), policy)
        metrics += timing.metrics(f"keras_{prefix}_b{batch}", batch=batch)
    return metrics


def device_metrics(model: keras.Model, device: Device, policy: TimingPolicy, vocabulary: int = 0) -> list[Metric]:
    def make_call(batch: int) -> Callable[[], object]:
        return device_call(compiled_forward(model), device.name, random_inputs(model, batch, vocabulary=vocabulary))

    return [label_metric(device.prefix, device.label), *timed_metrics(device.prefix, make_call, policy)]


def tpu_metrics(model: keras.Model, policy: TimingPolicy, vocabulary: int = 0) -> list[Metric]:
    """Untested (no TPU where this was written): see the module docstring for what it assumes."""
    strategy = tf.distribute.TPUStrategy(tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local"))
    with strategy.scope():
        # Variables must be created in the strategy's scope to live on the TPU cores.
        replica = keras.models.clone_model(model)
        replica.set_weights(model.get_weights())
        forward = compiled_forward(replica)
        step = tf.function(lambda inputs: strategy.run(forward, args=(inputs,)))

        def make_call(batch: int) -> Callable[[], object]:
            arrays = random_inputs(model, batch, vocabulary=vocabulary)
            inputs = as_model_batch([tf.constant(array) for array in arrays])
            # Each output comes back as one value per core; fetch them all so the call blocks.
            return lambda: tf.nest.map_structure(
                lambda per_core: fetch(strategy.experimental_local_results(per_core)), step(inputs)
            )

        label = label_metric("tpu", f"{strategy.num_replicas_in_sync} TPU cores")
        return [label, *timed_metrics("tpu", make_call, policy)]


@register_track(
    "latency",
    summary=f"Keras inference ms per forward pass (batch 1 and {THROUGHPUT_BATCH}) on the CPU, each GPU, and a TPU",
    needs_task_data=False,
    metrics=METRICS,
)
class LatencyTrack(Track):
    def measure(self, context: MeasureContext) -> list[Metric]:
        policy = policy_for(context.budget, POLICY)
        vocabulary = context.task.spec.vocabulary if context.task is not None else 0
        metrics = []
        for device in local_devices():
            metrics += device_metrics(context.model, device, policy, vocabulary)
        if tpu_attached():
            metrics += tpu_metrics(context.model, policy, vocabulary)
        return metrics
