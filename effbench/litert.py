"""The batched LiteRT evaluation of a flatbuffer, without TensorFlow.

The verifier (:mod:`effbench.verify`) runs it in a sandbox whose process limit counts threads: importing
TensorFlow there would start thread pools the limit refuses. So this module needs only NumPy and LiteRT, and the
conversions (:mod:`effbench.tflite`, which needs TensorFlow) re-export it for the tracks and the methods.
"""

from __future__ import annotations

import numpy as np

from effbench.console import native_stderr_filtered

# Inputs per LiteRT invoke.
EVAL_BATCH = 128


def litert_predict(content: bytes, x: np.ndarray, threads: int) -> np.ndarray:
    """Outputs for all of ``x`` on LiteRT, ``EVAL_BATCH`` inputs per invoke (the last batch padded with zeros).

    The one batched LiteRT evaluation: the verifier, the tracks and the methods that score a flatbuffer use it.
    """
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_filtered():  # LiteRT's note that it applied its XNNPACK delegate
        interpreter = Interpreter(model_content=content, num_threads=threads)
        input_index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(input_index, [EVAL_BATCH, *x.shape[1:]])
        interpreter.allocate_tensors()
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for start in range(0, len(x), EVAL_BATCH):
        chunk = x[start : start + EVAL_BATCH].astype(np.float32)
        padded = np.zeros((EVAL_BATCH, *x.shape[1:]), np.float32)
        padded[: len(chunk)] = chunk
        interpreter.set_tensor(input_index, padded)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index)[: len(chunk)])
    return np.concatenate(outputs)
