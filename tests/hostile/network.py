# ruff: noqa: E402, I001 - the attack runs first, then the operator that lets the check reach its end
"""Connects to a server on the host's loopback (port 47123, which the test listens on) and to the internet."""

import socket

for address in (("127.0.0.1", 47123), ("1.1.1.1", 53)):
    try:
        socket.create_connection(address, timeout=2).close()
    except OSError:
        continue
    raise RuntimeError(f"connected to {address}")

from effbench.registry import Paper, register_method
from suites.binarization.operators import OperatorMethod


@register_method("hostile-sign", suite="submissions", kind="operator",
                 paper=Paper("A hostile toy", 2024, "https://example.org/hostile"), summary="sign with the STE")
class HostileSign(OperatorMethod):
    def input_quantizer(self):
        return "ste_sign"

    def kernel_quantizer(self):
        return "ste_sign"

