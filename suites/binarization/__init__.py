"""The binarization suite: the roster's 19 binarization methods on fixed backbones (BiBench's protocol).

Operators (``operators.py``, BiBench's protocol in code; ``protocol.py`` declares it for the core) binarize
the task's default backbone, or the tiny transformer for the transformer methods, and compare with its FP32
twin; shared mechanisms live in the private modules ``_quantizers.py`` (quantizers), ``_layers.py`` (learned
output scales) and ``_attention.py`` (binary attention cores). See the "Binarization suite" section of
docs/suites.md for the list and what each deviates.
"""
