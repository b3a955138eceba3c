"""What the edge track's latency measurement costs over a bare LiteRT loop.

One model (``resnet-cifar`` built for ``digits``' 8x8x1 inputs, untrained: latency does not depend
on the weights) is converted once to float32 TFLite. Then, in this process, rounds alternate two
measurements of the same flatbuffer at batch 1, for each thread count the track uses:

- ``edge``: the track's own code path, ``tracks.edge.latency_metrics`` (a fresh interpreter per thread
  count, ``tracks._timing.time_calls`` under the track's ``TIMING_POLICY``), its ``_median_ms``;
- ``plain``: a minimal loop written here against ``ai_edge_litert.interpreter.Interpreter``: allocate,
  5 untimed calls, then ``CALLS`` calls of ``set_tensor``/``invoke``/``get_tensor`` each timed with
  ``time.perf_counter``, and their median.

The order of the two alternates between rounds. The ratio of the medians over rounds (edge / plain) is
reported per thread count; the target is 0.98-1.02: the harness adds nothing measurable.

    python benchmarks/edge_overhead.py [--rounds 7] [--method resnet-cifar]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from effbench.method import MethodRef
from tracks import _tflite, edge

INPUT_SHAPE = (8, 8, 1)
CALLS = 400


def plain_median_ms(content: bytes, threads: int, sample: np.ndarray) -> float:
    interpreter = Interpreter(model_content=content, num_threads=threads)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    batch = sample[None]
    samples = []
    for repeat in range(5 + CALLS):
        before = time.perf_counter()
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        interpreter.get_tensor(output_index)
        if repeat >= 5:
            samples.append(time.perf_counter() - before)
    return statistics.median(samples) * 1e3


def edge_medians_ms(content: bytes, sample: np.ndarray) -> dict[int, float]:
    metrics = edge.latency_metrics(edge.LITERT, content, sample, "float32")
    by_name = {m.name: m.value for m in metrics}
    return {threads: by_name[f"litert_t{threads}_median_ms"] for threads in edge.THREADS}


def one_round(content: bytes, sample: np.ndarray, edge_first: bool) -> tuple[dict[int, float], dict[int, float]]:
    """Both measurements once; which goes first alternates, so drift on the machine hits both alike."""
    if edge_first:
        ours = edge_medians_ms(content, sample)
    plain = {threads: plain_median_ms(content, threads, sample) for threads in edge.THREADS}
    if not edge_first:
        ours = edge_medians_ms(content, sample)
    return ours, plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--method", default="resnet-cifar")
    args = parser.parse_args()
    model = MethodRef.parse(args.method).create().build(INPUT_SHAPE, 10)
    content = _tflite.convert(model, "float32", _tflite.calibration(model, None))
    sample = np.random.default_rng(0).standard_normal(INPUT_SHAPE).astype(np.float32)
    ours: dict[int, list[float]] = {threads: [] for threads in edge.THREADS}
    plain: dict[int, list[float]] = {threads: [] for threads in edge.THREADS}
    for round_index in range(args.rounds):
        edge_round, plain_round = one_round(content, sample, edge_first=round_index % 2 == 0)
        for threads in edge.THREADS:
            ours[threads].append(edge_round[threads])
            plain[threads].append(plain_round[threads])
        summary = ", ".join(f"t{t}: edge {ours[t][-1]:.4f} ms, plain {plain[t][-1]:.4f} ms" for t in edge.THREADS)
        print(f"round {round_index + 1}: {summary}", flush=True)
    for threads in edge.THREADS:
        ratio = statistics.median(ours[threads]) / statistics.median(plain[threads])
        print(
            f"threads={threads}: median edge {statistics.median(ours[threads]):.4f} ms, "
            f"plain {statistics.median(plain[threads]):.4f} ms, ratio {ratio:.3f} (target 0.98-1.02)"
        )


if __name__ == "__main__":
    main()
