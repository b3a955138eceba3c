"""What EffBench's harness costs over plain Keras.

The same model (``vgg-small`` by default), data (``digits``, its fixed training split) and recipe
(the ``quick`` budget) are trained, then scored on the test split, two ways, each in a fresh Python
process, alternated so that drift on the machine hits both alike:

- ``effbench``: ``effbench run --method resnet-cifar --task digits --track accuracy --budget quick
  --force`` (planning, provenance, artifact caching, the accuracy track and an atomic record);
- ``plain``: a hand-written script that builds the same model and calls ``model.compile``,
  ``model.fit`` and ``model.evaluate`` with the same optimizer, schedule, epochs and batch size.

Both wall times include starting Python and importing TensorFlow. The ratio of the medians is the
harness overhead; the target is at most 1.05.

Both sides pay the same ~3 s to import TensorFlow; the harness adds a fixed ~1 s (provenance, saving
the trained model, the record), so the ratio depends on how long training takes: it is measured on a
workload of a realistic length (about a minute of training), and the absolute difference is printed too.

    python benchmarks/harness_overhead.py [--repeats 3] [--method vgg-small] [--task digits]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PLAIN_SCRIPT = textwrap.dedent("""
    import sys
    from effbench.tf import keras
    from effbench.method import MethodRef
    from effbench.registry import TASKS

    method_text, task_slug = sys.argv[1], sys.argv[2]
    task = TASKS.get(task_slug).factory()
    recipe = task.recipe("quick")
    data = task.load().for_run(0, recipe.max_train_samples)
    keras.utils.set_random_seed(0)
    model = MethodRef.parse(method_text).create().build(task.spec.input_shape, task.spec.num_classes)
    steps = -(-len(data.x_train) // recipe.batch_size)
    model.compile(optimizer=recipe.make_optimizer(steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=recipe.batch_size, epochs=recipe.epochs,
              validation_data=(data.x_val, data.y_val), verbose=0)
    print(model.evaluate(data.x_test, data.y_test, verbose=0))
""")


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", default="vgg-small")
    parser.add_argument("--task", default="digits")
    args = parser.parse_args()
    effbench = str(Path(sys.executable).with_name("effbench"))
    harness, plain = [], []
    with tempfile.TemporaryDirectory() as out:
        harness_command = [effbench, "run", "--method", args.method, "--task", args.task, "--track", "accuracy",
                           "--budget", "quick", "--force", "--out", out]  # fmt: skip
        plain_command = [sys.executable, "-c", PLAIN_SCRIPT, args.method, args.task]
        timed(plain_command)  # warms the file cache and the dataset cache; not counted
        for repeat in range(args.repeats):
            harness.append(timed(harness_command))
            plain.append(timed(plain_command))
            print(f"repeat {repeat + 1}: effbench {harness[-1]:.1f}s, plain {plain[-1]:.1f}s", flush=True)
    ratio = statistics.median(harness) / statistics.median(plain)
    print(f"median effbench {statistics.median(harness):.1f}s, plain {statistics.median(plain):.1f}s")
    extra = statistics.median(harness) - statistics.median(plain)
    print(f"harness overhead ratio: {ratio:.3f} (target <= 1.05); {extra:+.1f}s per run")


if __name__ == "__main__":
    main()
