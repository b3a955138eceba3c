"""The one place EffBench imports TensorFlow and Keras.

TFMOT and larq only support the Keras 2 API, so TensorFlow must be told to use ``tf_keras`` before it
is first imported. Every module imports ``tf`` and ``keras`` from here instead of from TensorFlow.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
