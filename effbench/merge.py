"""``effbench merge DIR... --out DIR``: one result folder from the folders of several machines.

Records and the files kept beside them are merged; trained-model caches (``artifacts/``) are not. Every
record is read and validated first (a hand-edited record, a NaN, a kept file whose SHA-256 differs from its
record's are refused), including those already in ``--out``. Two records of one config hash must be
identical, and are then merged once; if they differ, that is a conflict, reported with both files, and
nothing is written. Each record is written atomically after its files, as ``effbench run`` writes them.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path

from effbench.records import Record, ResultStore, read_record


class MergeError(ValueError):
    """The folders cannot be merged; nothing was written."""


@dataclass(frozen=True)
class Found:
    """A valid record and the file it was read from."""

    record: Record
    path: Path
    root: Path


def add_command(subparsers: argparse._SubParsersAction) -> None:
    merge = subparsers.add_parser("merge", help="merge the result folders of several machines into one")
    merge.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="result folders to merge")
    merge.add_argument("--out", type=Path, required=True, help="the merged folder (may already hold records)")
    merge.set_defaults(handler=command_merge)


def command_merge(args: argparse.Namespace) -> int:
    added = merge_folders(args.folders, args.out)
    print(f"merged {len(args.folders)} folder(s) into {args.out}: {added} new record(s)")
    return 0


def merge_folders(folders: list[Path], out: Path) -> int:
    """Merge the records of ``folders`` into ``out``; return how many were new there."""
    target = ResultStore(out)
    chosen = collect([*folders, out] if out.exists() else folders)
    new = [found for config_hash, found in chosen.items() if not target.has(config_hash)]
    for found in new:
        kept_files(found)  # every file is checked before anything is written
    for found in new:
        target.save_with_files(found.record, kept_files(found))
    return len(new)


def collect(folders: list[Path]) -> dict[str, Found]:
    """Config hash -> one valid record; raises on a conflict, naming both files."""
    chosen: dict[str, Found] = {}
    for root in folders:
        if not root.is_dir():
            raise MergeError(f"{root}: no such result folder")
        for config_hash, path in ResultStore(root).record_paths().items():
            found = Found(read_record(path), path, root)
            earlier = chosen.setdefault(config_hash, found)
            if earlier.record.to_json() != found.record.to_json():
                raise MergeError(conflict(earlier, found))
    return chosen


def conflict(first: Found, second: Found) -> str:
    a, b = first.record.to_json(), second.record.to_json()
    fields = ", ".join(sorted(key for key in a if key != "content_hash" and a[key] != b[key]))
    return (
        f"{first.path} and {second.path} are records of the same run (config hash "
        f"{first.record.config_hash}) that differ in: {fields}; keep one of them (delete the other) and "
        "merge again. Nothing was written."
    )


def kept_files(found: Found) -> dict[str, bytes]:
    """The files kept beside a record, checked against the sizes and SHA-256s it lists."""
    files = {}
    for name, spec in found.record.files.items():
        path = found.root / spec["path"]
        try:
            content = path.read_bytes()
        except OSError as error:
            raise MergeError(f"{path}: file of the record {found.path} cannot be read: {error}") from None
        if len(content) != spec["bytes"] or hashlib.sha256(content).hexdigest() != spec["sha256"]:
            raise MergeError(f"{path}: its content differs from the size and SHA-256 in the record {found.path}")
        files[name] = content
    return files
