"""The ``effbench`` command line: list, run, table, measure."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from effbench.recipe import BUDGETS
from effbench.registry import METHODS, TASKS, TRACKS, MethodSpec, RegistryError, TaskSpec, TrackSpec
from effbench.track import Metric

# Modules that add a subcommand of their own: each has ``add_command(subparsers)``, which adds a parser
# whose ``handler`` default takes the parsed arguments and returns the exit status.
COMMAND_MODULES: tuple[str, ...] = (
    "effbench.submission", "effbench.reproduce", "leaderboard.command", "effbench.merge", "effbench.paper_results",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (RegistryError, ValueError, FileNotFoundError) as error:
        print(f"effbench {args.command}: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="list registered methods, tasks or tracks")
    listing.add_argument("noun", choices=["methods", "tasks", "tracks"])
    listing.add_argument("pattern", nargs="?", help="glob over slugs, e.g. 'resnet*'")
    listing.add_argument("--suite", help="only methods of this suite")
    listing.set_defaults(handler=command_list)

    run = commands.add_parser("run", help="train and measure methods x tasks x seeds x tracks")
    run.add_argument("--method", nargs="+", default=[], metavar="M",
                     help="method slugs, with options as slug:key=value,key=value")
    run.add_argument("--suite", nargs="+", default=[], metavar="S", help="every method of these suites")
    run.add_argument("--task", nargs="+", required=True, metavar="T")
    run.add_argument("--track", nargs="+", required=True, metavar="K")
    run.add_argument("--seed", nargs="+", type=int, default=[0], metavar="N")
    run.add_argument("--budget", choices=BUDGETS, default="quick")
    run.add_argument("--division", choices=["closed", "open"], default="closed")
    run.add_argument("--out", type=Path, default=Path("results"))
    run.add_argument("--force", action="store_true", help="re-run runs that already have records")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="compute jobs in this process, or as Ray tasks (on a local Ray instance without --address)")
    run.add_argument("--address", help="Ray cluster to join with --executor ray: HEAD:6379, or 'auto'")
    run.add_argument("--gpus-per-run", type=float, default=0.0, metavar="N",
                     help="GPUs each job asks Ray for (default 0: Ray hides GPUs from the job)")
    run.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    run.set_defaults(handler=command_run)

    table = commands.add_parser("table", help="the results table, one row per (method, task)")
    table.add_argument("--out", type=Path, nargs="+", default=[Path("results")], help="result folders")
    table.add_argument("--format", choices=["text", "markdown", "csv"], default="text")
    table.add_argument("--suite", help="only methods of this suite; without --track, the suite's summary "
                       "(accuracy and its ratio to the FP32 twin, BOPs, packed size, LCE size and latency)")
    table.add_argument("--task", help="only this task")
    table.add_argument("--track", help="only this track, with its scoped metrics as <scope>/<metric> columns")
    table.set_defaults(handler=command_table)

    measure = commands.add_parser("measure", help="run one track on a saved Keras model")
    measure.add_argument("--track", required=True)
    measure.add_argument("--model", type=Path, required=True, help="a .keras, .h5 or SavedModel path")
    measure.add_argument("--input-shape", help="input shape without the batch, e.g. 224,224,3")
    measure.add_argument("--task", help="task whose test split the track needs (accuracy)")
    measure.add_argument("--format", choices=["table", "json"], default="table")
    measure.set_defaults(handler=command_measure)

    device = commands.add_parser(
        "device-result", help="record benchmark_model timings of a converted model measured on your own device"
    )
    device.add_argument("--method", required=True, metavar="M")
    device.add_argument("--task", required=True, metavar="T")
    device.add_argument("--seed", type=int, default=0)
    device.add_argument("--budget", choices=BUDGETS, default="quick")
    device.add_argument("--division", choices=["closed", "open"], default="closed")
    device.add_argument("--variant", required=True, help="variant measured: float32, float16, dynamic, int8 or lce")
    device.add_argument("--device", required=True, help="hardware label, e.g. 'Pixel 7 (Tensor G2)'")
    device.add_argument("--threads", type=int, required=True, help="--num_threads given to benchmark_model")
    device.add_argument("--log", type=Path, required=True, help="benchmark_model's output, saved to a file")
    device.add_argument("--out", type=Path, default=Path("results"))
    device.set_defaults(handler=command_device_result)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_command(commands)
    return parser


def command_list(args: argparse.Namespace) -> int:
    import pandas as pd

    registry = {"methods": METHODS, "tasks": TASKS, "tracks": TRACKS}[args.noun]
    if args.suite and args.noun != "methods":
        raise ValueError("--suite only applies to methods")
    rows = [_list_row(entry.spec) for entry in registry.select(args.pattern, args.suite)]
    if not rows:
        print(f"no {args.noun} match", file=sys.stderr)
        return 1
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _list_row(spec: MethodSpec | TaskSpec | TrackSpec) -> dict:
    if isinstance(spec, MethodSpec):
        return {"slug": spec.slug, "suite": spec.suite, "kind": spec.kind, "scale": spec.scale,
                "W/A bits": f"{spec.taxonomy.weight_bits}/{spec.taxonomy.activation_bits}",
                "paper": f"{spec.paper.title} ({spec.paper.year})"}  # fmt: skip
    if isinstance(spec, TaskSpec):
        return {"slug": spec.slug, "input": "x".join(map(str, spec.input_shape)), "classes": spec.num_classes,
                "backbone": spec.default_backbone, "offline": spec.embedded, "target": spec.target_accuracy,
                "summary": spec.summary}  # fmt: skip
    return {"slug": spec.slug, "needs task data": spec.needs_task_data, "summary": spec.summary}


def command_run(args: argparse.Namespace) -> int:
    from effbench.records import ResultStore
    from effbench.runner import execute_plan, expand_methods, make_plan, report_failures
    from leaderboard.tables import format_table, records_frame, results_table

    methods = expand_methods(args.method, args.suite)
    if not methods:
        raise ValueError("give --method or --suite")
    store = ResultStore(args.out)
    jobs = make_plan(methods, args.task, args.seed, args.track, args.budget, store, args.division, args.force)
    planned = sum(len(job.tracks) for job in jobs)
    print(f"{planned} runs to do in {len(jobs)} trainings; results in {args.out}")
    results = execute_plan(jobs, store, _executor(args), force=args.force, progress=not args.quiet)
    records = [record for result in results for record in result.records]
    failures = [failure for result in results for failure in result.failures]
    if records:
        print(format_table(results_table(records_frame(records)), "text"))
    return report_failures(failures)


def _executor(args: argparse.Namespace):
    """The executor ``--executor`` names; None for the local one."""
    if args.executor == "local":
        if args.address or args.gpus_per_run:
            raise ValueError("--address and --gpus-per-run need --executor ray")
        return None
    from effbench.executors import RayExecutor

    return RayExecutor(args.address, args.gpus_per_run)


def command_table(args: argparse.Namespace) -> int:
    from leaderboard.tables import format_table, load_results, results_table, suite_summary

    tidy = load_results(*args.out)
    if not tidy.empty and args.suite:
        tidy = tidy[tidy["suite"] == args.suite]
    if not tidy.empty and args.task:
        tidy = tidy[tidy["task"] == args.task]
    if tidy.empty:
        print(f"no records in {', '.join(map(str, args.out))}", file=sys.stderr)
        return 1
    if args.suite and not args.track:
        print(format_table(suite_summary(tidy, args.suite), args.format))
        return 0
    table = results_table(tidy, args.track)
    if table.empty:
        print(f"no numeric metrics for track '{args.track}' in {', '.join(map(str, args.out))}", file=sys.stderr)
        return 1
    print(format_table(table, args.format))
    return 0


def command_measure(args: argparse.Namespace) -> int:
    from effbench.modelfile import load_model_file
    from effbench.track import MeasureContext

    track = TRACKS.get(args.track)
    shape = tuple(int(d) for d in args.input_shape.split(",")) if args.input_shape else None
    model = load_model_file(args.model, shape)
    context = MeasureContext(model=model)
    if args.task:
        task = TASKS.get(args.task).factory()
        context.task, context.splits = task, task.load()
    elif track.spec.needs_task_data:
        raise ValueError(f"track '{args.track}' needs task data: pass --task")
    metrics = track.factory().measure(context)
    if args.format == "json":
        print(json.dumps({_json_key(m): m.value for m in metrics}, indent=1))
    else:
        for m in metrics:
            print(f"{_json_key(m):<48} {m.value!s:>16} {m.unit}")
    return 0


def command_device_result(args: argparse.Namespace) -> int:
    from effbench.config import TrainingConfig
    from effbench.device_results import device_record
    from effbench.method import MethodRef
    from effbench.records import ResultStore

    store = ResultStore(args.out)
    training = TrainingConfig(MethodRef.parse(args.method), args.task, args.seed, args.budget)
    text = args.log.read_text()
    record = device_record(store, training, args.division, args.variant, args.device, args.threads, text)
    path = store.save(record)
    for metric in record.metrics:
        print(f"{metric.name:<20} {metric.value!s:>12} {metric.unit}")
    print(f"recorded in {path}")
    return 0


def _json_key(metric: Metric) -> str:
    return f"{metric.scope}/{metric.name}" if metric.scope else metric.name


if __name__ == "__main__":
    sys.exit(main())
