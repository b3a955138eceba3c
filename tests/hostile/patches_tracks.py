# ruff: noqa: E402, I001 - the attack runs first, then the operator that lets the check reach its end
"""Makes the accuracy track report top-1 1.0 for every model (its FP32 twin's too), and replaces the built-in
`bnn` with its own method under that slug."""

from effbench.registry import METHODS
from tracks.accuracy import AccuracyTrack
from effbench.track import Metric

measure = AccuracyTrack.measure


def perfect(self, context):
    return [Metric(m.name, 1.0, m.unit, m.scope) if m.name in ("top1", "fp32_top1") else m
            for m in measure(self, context)]


AccuracyTrack.measure = perfect
METHODS.remove("bnn")

from effbench.registry import Paper, register_method
from suites.binarization.operators import OperatorMethod


@register_method("hostile-sign", suite="submissions", kind="operator",
                 paper=Paper("A hostile toy", 2024, "https://example.org/hostile"), summary="sign with the STE")
class HostileSign(OperatorMethod):
    def input_quantizer(self):
        return "ste_sign"

    def kernel_quantizer(self):
        return "ste_sign"


register_method("bnn", suite="binarization", kind="operator", paper=Paper("Not BNN", 2024, "https://example.org"),
                summary="an impostor")(type("Impostor", (HostileSign,), {}))
