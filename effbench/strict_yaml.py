"""Strict reading of the hand-written YAML files users give EffBench (submissions, paper results).

:func:`load_mapping` parses a file's text into its top-level mapping and refuses, with the file and line:
anchors and aliases (a small file could expand into a huge one: a YAML bomb) and nesting deeper than
``MAX_DEPTH``, checked on the parser's events before anything is built; a key given twice in one mapping
(``yaml.safe_load`` would let the second silently win); invalid YAML; and a top level that is not a mapping.
Errors are raised as the caller's own error class, so each command keeps its error type.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 16

TYPE_NAMES = {
    bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping",
}  # fmt: skip


class StrictYamlError(ValueError):
    """A YAML file that parses but breaks one of the rules of the module docstring."""


def load_mapping(path: Path, text: str, error: type[Exception], expected: str) -> dict[str, Any]:
    """The top-level mapping of ``text`` (read from ``path``); ``error(message)`` for anything refused.

    ``expected`` describes the mapping for the message when the top level is something else.
    """
    try:
        check_events(path, yaml.parse(text, Loader=yaml.SafeLoader))
        check_duplicate_keys(path, yaml.compose(text, Loader=yaml.SafeLoader))
        data = yaml.safe_load(text)
    except StrictYamlError as refused:
        raise error(str(refused)) from None
    except yaml.YAMLError as invalid:
        raise error(f"{path}: not valid YAML: {invalid}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected {expected}, found {found(data)}")
    return data


def check_events(path: Path, events: Iterator[yaml.Event]) -> None:
    """Refuse anchors, aliases and deep nesting while parsing: nothing is expanded or built yet."""
    depth = 0
    for event in events:
        line = event.start_mark.line + 1
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            raise StrictYamlError(
                f"{path}: line {line}: anchors and aliases ('&{event.anchor}', '*{event.anchor}') are not allowed: "
                "they let a small file expand to a huge one (a YAML bomb); write the values out"
            )
        depth += isinstance(event, yaml.CollectionStartEvent) - isinstance(event, yaml.CollectionEndEvent)
        if depth > MAX_DEPTH:
            raise StrictYamlError(f"{path}: line {line}: nested more than {MAX_DEPTH} levels deep")


def check_duplicate_keys(path: Path, node: yaml.Node | None) -> None:
    """A key given twice in one mapping would silently win over the first: refuse it."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                # A complex key (`? [a, b]`) is a list or mapping: no field is named by one.
                raise StrictYamlError(f"{path}: line {key.start_mark.line + 1}: a key must be a plain value such as "
                                      "a field name, not a list or mapping")  # fmt: skip
            name = key.value
            if name in seen:
                raise StrictYamlError(f"{path}: line {key.start_mark.line + 1}: key '{name}' is given twice")
            seen.add(name)
            check_duplicate_keys(path, value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            check_duplicate_keys(path, item)


def found(value: Any) -> str:
    """How an error message shows a value it did not expect: its type, and its start."""
    if value is None:
        return "nothing"
    shown = repr(value)
    return f"{TYPE_NAMES.get(type(value), type(value).__name__)} {shown if len(shown) <= 60 else shown[:57] + '...'}"
