"""The pruning suite: the roster's 19 pruning, sparsity and low-rank methods on fixed backbones, with TFMOT.

Every method that prunes a trained model (``base.py``, the protocol in code; ``protocol.py`` declares it for the
core) starts from the trained FP32 backbone (the upstream of role ``trained``, which is also the twin, trained
once per seed and shared by every method and sparsity level) and fine-tunes with the task's fine-tune recipe;
methods that prune at initialisation train the backbone from scratch and say so. Shared mechanisms: weight masks
(``_masks.py``) and, in the core, channel removal (:mod:`effbench.channels`). See the "Pruning suite" section of
docs/suites.md.
"""
