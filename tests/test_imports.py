"""Imports flow one way: the core below suites and tracks, the leaderboard reading only the core.

Read from the source (every ``import`` and ``from ... import`` statement, at any depth, including those inside
functions), not by importing it. The core loads the built-in suites and tracks, and the command modules, by
their names as strings (``effbench.registry.BUILTIN_PACKAGES``, ``effbench.cli.COMMAND_MODULES``): that is the
plugin mechanism, which lets the core run what sits above it without depending on it, so it is not an import.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Package -> the top-level packages of this repository it must never import.
FORBIDDEN: dict[str, set[str]] = {
    "effbench": {"leaderboard", "tracks", "suites"},
    "tracks": {"leaderboard", "suites"},
    "suites": {"leaderboard", "tracks"},
    "leaderboard": {"tracks", "suites"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every module ``path`` imports (relative imports stay in their package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def forbidden_imports(package: str) -> list[str]:
    return [f"{path.relative_to(REPO)} imports {name}"
            for path in sorted((REPO / package).rglob("*.py"))
            for name in sorted(imported_packages(path) & FORBIDDEN[package])]  # fmt: skip


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_downwards(package):
    assert forbidden_imports(package) == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "late.py"
    module.write_text("import os\n\n\ndef f():\n    from leaderboard.tables import format_table\n"
                      "    import tracks.edge\n")
    assert imported_packages(module) == {"os", "leaderboard", "tracks"}


def test_the_verifier_imports_no_tensorflow():
    """It runs in a sandbox whose process limit counts threads: TensorFlow's thread pools would hang it there."""
    import subprocess
    import sys

    code = "import sys, effbench.verify; print(sorted(m for m in ('tensorflow', 'tf_keras') if m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert completed.stdout.strip() == "[]"
