# ruff: noqa: E402, I001 - the attack runs first, then the operator that lets the check reach its end
"""Writes a file next to itself, into its results, into EffBench's own folder and the home folder, with a shell."""

import os
from pathlib import Path

import effbench

TARGETS = [
    Path(__file__).parent / "pwned-next-to-method-py",
    Path(__file__).parent / "results" / "pwned-in-results",
    Path(effbench.__file__).parent / "pwned-in-effbench",
    Path.home() / "pwned-in-home",
    Path("/root/pwned-in-root"),
]
for target in TARGETS:
    os.system(f"id > {target} 2>/dev/null")
    try:
        target.write_text("pwned")
    except OSError:
        pass

from effbench.registry import Paper, register_method
from suites.binarization.operators import OperatorMethod


@register_method("hostile-sign", suite="submissions", kind="operator",
                 paper=Paper("A hostile toy", 2024, "https://example.org/hostile"), summary="sign with the STE")
class HostileSign(OperatorMethod):
    def input_quantizer(self):
        return "ste_sign"

    def kernel_quantizer(self):
        return "ste_sign"

