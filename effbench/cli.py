"""The ``effbench`` command line: list, run, measure, device-result, and the commands of other modules."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effbench import index
from effbench.console import VERBOSE_ENV
from effbench.modifiers import ModifierSpec
from effbench.registry import TASKS, TRACKS, MethodSpec, RegistryError, TaskSpec, TrackSpec
from effbench.track import Metric

if TYPE_CHECKING:
    from effbench.records import Record

# Modules that add commands of their own: each has ``add_command(subparsers)``, which adds one or more
# parsers whose ``handler`` default takes the parsed arguments and returns the exit status. Named as strings:
# ``leaderboard.command`` sits above the core (tests/test_imports.py), and each module is imported only when
# one of its commands runs; until then the index (effbench/index.py) knows their names and help.
COMMAND_MODULES: tuple[str, ...] = (
    "effbench.submission", "effbench.reproduce", "leaderboard.command", "effbench.merge", "effbench.paper_results",
    "effbench.matching",
)
# Lets TensorFlow and the converters log (effbench.console); accepted anywhere on the command line.
VERBOSE_FLAG = "--verbose"


def main(argv: Sequence[str] | None = None) -> int:
    argv = verbosity(list(sys.argv[1:] if argv is None else argv))
    args = build_parser(_command_in(argv)).parse_args(argv)
    try:
        return args.handler(args)
    except (RegistryError, ValueError, OSError) as error:
        # OSError's message names the path (a folder given where a file is expected, a missing file, ...).
        print(f"effbench {args.command}: error: {error}", file=sys.stderr)
        return 2


def verbosity(argv: list[str]) -> list[str]:
    """``argv`` without ``--verbose``, which may stand anywhere on the line; given, it lets TensorFlow log.

    Read before any parser is built: building a command's arguments may already import TensorFlow, which
    is quiet unless told otherwise first (:mod:`effbench.console`).
    """
    if VERBOSE_FLAG in argv:
        os.environ[VERBOSE_ENV] = "1"
    return [word for word in argv if word != VERBOSE_FLAG]


def _command_in(argv: Sequence[str]) -> str:
    """The command ``argv`` runs ('' for none): its first word that is not an option (the top level has only -h)."""
    return next((word for word in argv if not word.startswith("-")), "")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only``, the arguments of that command alone.

    The other commands are then added by name and help only: all that ``effbench --help`` shows and that
    argparse needs to reject an unknown command. Building a command's arguments may import what it needs
    (``run`` the recipes, so TensorFlow), so ``effbench --help`` and ``effbench list`` import none of it.
    """
    parser = argparse.ArgumentParser(prog="effbench", description=__doc__)
    # Documents the flag only: main() takes it out of the line before parsing (see verbosity()).
    parser.add_argument(VERBOSE_FLAG, action="store_true",
                        help="show TensorFlow's, LiteRT's and the converters' own log lines (anywhere on the line)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (summary, add_arguments) in LOCAL_COMMANDS.items():
        full = only in (None, name)
        command = subparsers.add_parser(name, help=summary, add_help=full)
        if full:
            add_arguments(command)
    for module_name in COMMAND_MODULES:
        declared = index.commands(module_name)
        if only is None or declared is None or only in declared:
            importlib.import_module(module_name).add_command(subparsers)
        else:
            for name, summary in declared.items():
                subparsers.add_parser(name, help=summary, add_help=False)
    return parser


# ------------------------------------------------------------------------------------------------ list


def add_list_arguments(listing: argparse.ArgumentParser) -> None:
    listing.add_argument("noun", choices=["methods", "tasks", "tracks", "modifiers"])
    listing.add_argument("pattern", nargs="?", help="glob over slugs, e.g. 'resnet*'")
    listing.add_argument("--suite", help="only methods of this suite")
    listing.set_defaults(handler=command_list)


def command_list(args: argparse.Namespace) -> int:
    """From the index alone: listing imports no suite, no track and no TensorFlow."""
    if args.noun == "methods":
        specs: list[Any] = index.methods(args.pattern, args.suite)
    elif args.suite:
        raise ValueError("--suite only applies to methods")
    else:
        specs = {"tasks": index.tasks, "tracks": index.tracks, "modifiers": index.modifiers}[args.noun](args.pattern)
    if not specs:
        print(f"no {args.noun} match", file=sys.stderr)
        return 1
    print(text_table([_list_row(spec) for spec in specs]))
    return 0


def _list_row(spec: MethodSpec | TaskSpec | TrackSpec) -> dict[str, Any]:
    if isinstance(spec, MethodSpec):
        return {"slug": spec.slug, "suite": spec.suite, "kind": spec.kind, "scale": spec.scale,
                "W/A bits": f"{spec.taxonomy.weight_bits}/{spec.taxonomy.activation_bits}",
                "paper": f"{spec.paper.title} ({spec.paper.year})"}  # fmt: skip
    if isinstance(spec, TaskSpec):
        return {"slug": spec.slug, "input": "x".join(map(str, spec.input_shape)), "classes": spec.num_classes,
                "backbone": spec.default_backbone, "offline": spec.embedded, "target": spec.target_accuracy,
                "summary": spec.summary}  # fmt: skip
    if isinstance(spec, ModifierSpec):
        return {"slug": spec.slug, "written": f"METHOD+{spec.slug}:OPTIONS", "summary": spec.summary,
                "paper": f"{spec.paper.title} ({spec.paper.year})"}  # fmt: skip
    return {"slug": spec.slug, "needs task data": spec.needs_task_data, "summary": spec.summary}


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as aligned text columns under a header (the columns of the first row): pandas' ``to_string``
    without importing pandas, which alone would take a good part of ``effbench list``'s time."""
    columns = list(rows[0])
    lines = [columns, *([str(row[column]) for column in columns] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    padded = ("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(line.rstrip() for line in padded)


# ------------------------------------------------------------------------------------------------- run


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    from effbench.recipe import BUDGETS

    run.add_argument("--method", nargs="+", default=[], metavar="M",
                     help="method slugs, with options as slug:key=value,key=value")
    run.add_argument("--suite", nargs="+", default=[], metavar="S", help="every method of these suites")
    run.add_argument("--task", nargs="+", required=True, metavar="T")
    run.add_argument("--track", nargs="+", required=True, metavar="K")
    run.add_argument("--seed", nargs="+", type=seed_argument, default=[0], metavar="N")
    run.add_argument("--budget", choices=BUDGETS, default="quick")
    run.add_argument("--division", choices=["closed", "open"],
                     help="default: each method's own (closed where its suite protocol's closed division takes it); "
                     "closed: refuse methods it does not take; open: every run open")
    run.add_argument("--out", type=result_folder, default=Path("results"))
    run.add_argument("--force", action="store_true", help="re-run runs that already have records")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="compute jobs in this process, or as Ray tasks (on a local Ray instance without --address)")
    run.add_argument("--address", help="Ray cluster to join with --executor ray: HEAD:6379, or 'auto'")
    run.add_argument("--gpus-per-run", type=float, default=0.0, metavar="N",
                     help="GPUs each job asks Ray for (default 0: Ray hides GPUs from the job)")
    run.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    run.set_defaults(handler=command_run)  # fmt: skip


def command_run(args: argparse.Namespace) -> int:
    from effbench.protocol import division_of
    from effbench.records import ResultStore
    from effbench.runner import execute_plan, expand_methods, make_plan, report_failures

    methods = expand_methods(args.method, args.suite)
    if not methods:
        raise ValueError("give --method or --suite")
    if args.division == "closed":
        for method in methods:
            division_of(method, "closed")  # raises, naming why the closed division does not take it
    store = ResultStore(args.out)
    jobs = make_plan(methods, args.task, args.seed, args.track, args.budget, store, args.division, args.force)
    planned = sum(len(job.runs()) for job in jobs)
    print(f"{planned} runs to do in {len(jobs)} trainings; results in {args.out}")
    results = execute_plan(jobs, store, _executor(args), force=args.force, progress=not args.quiet)
    records = [record for result in results for record in result.records]
    if records:
        print("\n".join(record_lines(records)))
        print(f"`effbench table --out {args.out}` shows every run of {args.out} as one table")
    return report_failures([failure for result in results for failure in result.failures])


def record_lines(records: Iterable[Record]) -> list[str]:
    """One line per record: what ran and its whole-model numbers.

    The table of runs is the leaderboard's (``effbench table``), which the core does not import.
    """
    lines = []
    for record in records:
        what = [record.method, record.variant, record.deployable, record.task, record.track,
                f"seed {record.seed}"]  # fmt: skip
        numbers = [f"{m.name} {m.value:.4g}" if isinstance(m.value, float) else f"{m.name} {m.value}"
                   for m in record.metrics if not m.scope and not isinstance(m.value, str)]  # fmt: skip
        scoped = sum(1 for m in record.metrics if m.scope)
        if scoped:
            numbers.append(f"+{scoped} scoped")
        lines.append(f"{' · '.join(part for part in what if part)}: {', '.join(numbers) or 'no numbers'}")
    return lines


def _executor(args: argparse.Namespace):
    """The executor ``--executor`` names; None for the local one."""
    if args.executor == "local":
        if args.address or args.gpus_per_run:
            raise ValueError("--address and --gpus-per-run need --executor ray")
        return None
    from effbench.executors import RayExecutor

    return RayExecutor(args.address, args.gpus_per_run)


# ------------------------------------------------------------------------------------- argument types


def seed_argument(text: str) -> int:
    """A seed: an integer in [0, 2**32), what NumPy and TensorFlow take; refused before anything is planned."""
    from effbench.records import SEED_LIMIT

    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed '{text}': expected an integer >= 0") from None
    if not 0 <= seed < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"invalid seed {seed}: expected an integer in [0, 2**32)")
    return seed


def result_folder(text: str) -> Path:
    """A result folder: new, or a folder already; never a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a result folder: give a folder (new or existing)")
    return path


def input_shape_argument(text: str) -> tuple[int, ...]:
    """``224,224,3``: positive integers separated by commas."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(
            f"invalid input shape '{text}': expected positive integers separated by commas, e.g. 224,224,3"
        )
    return tuple(int(part) for part in parts)


# --------------------------------------------------------------------------------------------- measure


def add_measure_arguments(measure: argparse.ArgumentParser) -> None:
    measure.add_argument("--track", required=True)
    measure.add_argument("--model", type=Path, required=True, help="a .keras, .h5 or SavedModel path")
    measure.add_argument("--input-shape", type=input_shape_argument,
                         help="input shape without the batch, e.g. 224,224,3")
    measure.add_argument("--task", help="task whose test split the track needs (accuracy)")
    measure.add_argument("--format", choices=["table", "json"], default="table")
    measure.add_argument("--full", action="store_true",
                         help="the table with every per-layer value too (json always has them)")  # fmt: skip
    measure.set_defaults(handler=command_measure)


def command_measure(args: argparse.Namespace) -> int:
    from effbench.modelfile import load_model_file
    from effbench.track import MeasureContext

    track = TRACKS.get(args.track)
    model = load_model_file(args.model, args.input_shape)
    context = MeasureContext(model=model)
    if args.task:
        task = TASKS.get(args.task).factory()
        context.task, context.splits = task, task.load()
    elif track.spec.needs_task_data:
        raise ValueError(f"track '{args.track}' needs task data: pass --task")
    metrics = track.factory().measure(context)
    if args.format == "json":
        print(json.dumps({_json_key(m): m.value for m in metrics}, indent=1))
        return 0
    layers = [] if args.full else [m for m in metrics if _per_layer(args.track, m)]
    for m in metrics:
        if m not in layers:
            print(f"{_json_key(m):<48} {m.value!s:>16} {m.unit}")
    if layers:
        count = len({m.scope for m in layers})
        print(f"(+{len(layers)} per-layer values of {count} layers: --full lists them, --format json gives them all)")
    return 0


def _per_layer(track: str, metric: Metric) -> bool:
    """A metric of one layer (the complexity track's per-layer breakdown), as the track's metadata declares it."""
    spec = index.metric_spec(metric.name, scoped=True, track=track) if metric.scope else None
    return spec is not None and "layer" in spec.scopes


def _json_key(metric: Metric) -> str:
    return f"{metric.scope}/{metric.name}" if metric.scope else metric.name


# --------------------------------------------------------------------------------------- device-result


def add_device_result_arguments(device: argparse.ArgumentParser) -> None:
    from effbench.recipe import BUDGETS

    device.add_argument("--method", required=True, metavar="M")
    device.add_argument("--task", required=True, metavar="T")
    device.add_argument("--seed", type=seed_argument, default=0)
    device.add_argument("--budget", choices=BUDGETS, default="quick")
    device.add_argument("--division", choices=["closed", "open"], help="the edge run's, if not the method's own")
    device.add_argument("--variant", required=True, help="variant measured: float32, float16, dynamic, int8 or lce")
    device.add_argument("--device", required=True, help="hardware label, e.g. 'Pixel 7 (Tensor G2)'")
    device.add_argument("--threads", type=int, required=True, help="--num_threads given to benchmark_model")
    device.add_argument("--log", type=Path, required=True, help="benchmark_model's output, saved to a file")
    device.add_argument("--out", type=result_folder, default=Path("results"))
    device.set_defaults(handler=command_device_result)


def command_device_result(args: argparse.Namespace) -> int:
    from effbench.config import TrainingConfig
    from effbench.device_results import device_record
    from effbench.method import MethodRef
    from effbench.protocol import division_of
    from effbench.records import ResultStore

    store = ResultStore(args.out)
    training = TrainingConfig(MethodRef.parse(args.method), args.task, args.seed, args.budget)
    text = args.log.read_text()
    division = args.division or division_of(training.method)  # names the edge record measured: not judged
    record = device_record(store, training, division, args.variant, args.device, args.threads, text)
    path = store.save(record)
    for metric in record.metrics:
        print(f"{metric.name:<20} {metric.value!s:>12} {metric.unit}")
    print(f"recorded in {path}")
    return 0


# The commands defined here: name -> (help, the function that adds the command's arguments to its parser).
LOCAL_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "list": ("list registered methods, tasks, tracks or training modifiers", add_list_arguments),
    "run": ("train and measure methods x tasks x seeds x tracks", add_run_arguments),
    "measure": ("run one track on a saved Keras model", add_measure_arguments),
    "device-result": ("record benchmark_model timings of a converted model measured on your own device",
                      add_device_result_arguments),
}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
