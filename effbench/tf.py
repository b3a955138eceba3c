"""The one place EffBench imports TensorFlow and Keras.

TFMOT and larq only support the Keras 2 API, so TensorFlow must be told to use ``tf_keras`` before it
is first imported. Every module imports ``tf`` and ``keras`` from here instead of from TensorFlow.

Unless verbose (``--verbose``, ``EFFBENCH_VERBOSE=1``; :mod:`effbench.console`), TensorFlow is quiet: its
native import and device lines are filtered off stderr, and its Python logger shows errors only (no
``tf.function retracing`` warnings). To catch the device lines, the runtime (TensorFlow's eager context) is
started here, inside the filter: settings that must precede it (``tf.config.set_visible_devices``, thread
counts) go through environment variables such as ``CUDA_VISIBLE_DEVICES`` instead.
"""

import logging
import os
import warnings

from effbench.console import is_verbose, native_stderr_filtered

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

with native_stderr_filtered():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    if not is_verbose():
        tf.config.list_logical_devices()  # starts the runtime, which reports on CUDA drivers

if not is_verbose():
    tf.get_logger().setLevel(logging.ERROR)
    # The int8 converter's note that the float inputs it keeps have no statistics: by design here.
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected", category=UserWarning)

__all__ = ["keras", "tf"]
