"""The quantization suite: the roster's 11 quantization methods on fixed backbones, with TFMOT and LiteRT.

Every method (``base.py``, the protocol in code; ``protocol.py`` declares it for the core) starts from the
trained FP32 backbone (the upstream of role ``trained``, which is also the twin): post-training methods never
train it again, quantization-aware ones fine-tune it with the task's fine-tune recipe. The shared fake
quantization is ``_uniform.py``. See the "Quantization suite" section of docs/suites.md.
"""
