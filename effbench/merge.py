"""``effbench merge DIR... --out DIR``: one result folder from the folders of several machines.

Records and the files kept beside them are merged; trained-model caches (``artifacts/``) are not. Every
record is read and validated first (strictly: :func:`effbench.records.read_record`), including those already
in ``--out``. Two records of one config hash must be identical, and are then merged once; if they differ,
that is a conflict, reported with both files, and nothing is written. A record's kept files must be where
the store puts them, inside its own result folder (a symbolic link leading out of it is refused), regular
files of the size and SHA-256 the record lists. Each record is written atomically after its files, as
``effbench run`` writes them.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from effbench.records import Found, RecordError, ResultStore, check_inside, collect_records, read_regular_file


class MergeError(ValueError):
    """The folders cannot be merged; nothing was written."""


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
    if out.exists() and not out.is_dir():
        raise MergeError(f"--out {out} is a file, not a result folder: give a folder (new or holding records)")
    for root in folders:
        if not root.is_dir():
            raise MergeError(f"{root}: no such result folder")
    target = ResultStore(out)
    chosen = collect([*folders, out] if out.exists() else folders)
    new = [found for config_hash, found in chosen.items() if not target.has(config_hash)]
    kept = {found.record.config_hash: kept_files(found) for found in new}  # every file checked before any write
    for found in new:
        target.save_with_files(found.record, kept[found.record.config_hash])
    return len(new)


def collect(folders: list[Path]) -> dict[str, Found]:
    """Config hash -> one valid record; raises on a bad record or a conflict, naming the files."""
    try:
        chosen, conflicts = collect_records(folders)
    except RecordError as error:
        raise MergeError(f"{error}. Nothing was written.") from None
    if conflicts:
        raise MergeError(f"{conflicts[0]}; keep one of them (delete the other) and merge again. Nothing was written.")
    return chosen


def kept_files(found: Found) -> dict[str, bytes]:
    """The files kept beside a record, checked against the sizes and SHA-256s it lists.

    The record's reader has checked each path's form (``files/<task>/<method>/<config hash>/<name>``);
    here it must also resolve inside the record's own result folder, and be a regular file.
    """
    files = {}
    for name, spec in found.record.files.items():
        path = found.root / spec["path"]
        differs = MergeError(f"{path}: its content differs from the size and SHA-256 in the record {found.path}")
        what = f"file of the record {found.path}"
        try:
            resolved = check_inside(path, found.root, what)
            # A file of another size is refused before it is read (it could be any size).
            if resolved.is_file() and resolved.stat().st_size != spec["bytes"]:
                raise differs
            content = read_regular_file(path, found.root, spec["bytes"], what)
        except RecordError as error:
            raise MergeError(f"{error}. Nothing was written.") from None
        if len(content) != spec["bytes"] or hashlib.sha256(content).hexdigest() != spec["sha256"]:
            raise differs
        files[name] = content
    return files
