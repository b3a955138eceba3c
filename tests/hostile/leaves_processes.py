# ruff: noqa: E402, I001 - the attack runs first, then the operator that lets the check reach its end
"""Starts processes meant to outlive the sandbox: a forked child and a new session, both sleeping."""

import os
import subprocess

if os.fork() == 0:
    os.execvp("sleep", ["sleep", "98765"])
subprocess.Popen(["sleep", "98766"], start_new_session=True)

from effbench.registry import Paper, register_method
from suites.binarization.operators import OperatorMethod


@register_method("hostile-sign", suite="submissions", kind="operator",
                 paper=Paper("A hostile toy", 2024, "https://example.org/hostile"), summary="sign with the STE")
class HostileSign(OperatorMethod):
    def input_quantizer(self):
        return "ste_sign"

    def kernel_quantizer(self):
        return "ste_sign"

