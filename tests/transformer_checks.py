"""What the specifications of the transformer architectures (macaron, moe-switch, rmt) share: their two kinds of
task input, NumPy forms of the tiny transformer's sublayers, and a save/reload check on valid inputs."""

from __future__ import annotations

import numpy as np

from effbench.method import MethodRef
from effbench.registry import TASKS, TaskSpec, load_builtin_entries
from effbench.tf import keras

load_builtin_entries()
LISTOPS: TaskSpec = TASKS.get("listops-short").spec
DIGITS: TaskSpec = TASKS.get("digits").spec


def build_for(reference: str, spec: TaskSpec) -> keras.Model:
    return MethodRef.parse(reference).create().build_for(spec)


def task_inputs(spec: TaskSpec, size: int, seed: int = 0) -> np.ndarray:
    """``size`` inputs of the task's shape: ids below its vocabulary (as float32, as tasks store them), else noise."""
    rng = np.random.default_rng(seed)
    if spec.vocabulary:
        return rng.integers(0, spec.vocabulary, size=(size, *spec.input_shape)).astype(np.float32)
    return rng.uniform(size=(size, *spec.input_shape)).astype(np.float32)


def labels(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=size)


def assert_reloads_and_predicts_the_same(model: keras.Model, x: np.ndarray, path) -> keras.Model:
    """Saved as .keras and loaded without custom objects, the model gives the same logits on ``x``."""
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-5)
    return reloaded


def weights_of(model: keras.Model, name: str) -> list[np.ndarray]:
    return [w.numpy() for w in model.get_layer(name).weights]


def layer_norm(model: keras.Model, name: str, x: np.ndarray) -> np.ndarray:
    gamma, beta = weights_of(model, name)
    mean, variance = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + 1e-6) * gamma + beta


def dense(model: keras.Model, name: str, x: np.ndarray) -> np.ndarray:
    kernel, bias = weights_of(model, name)
    return x @ kernel + bias


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def heads_of(x: np.ndarray, heads: int) -> np.ndarray:
    """(batch, tokens, dim) -> (batch, heads, tokens, dim / heads)."""
    b, t, d = x.shape
    return x.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)


def merged(x: np.ndarray) -> np.ndarray:
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def attention_sublayer(model: keras.Model, block: str, x: np.ndarray, heads: int) -> np.ndarray:
    """The tiny transformer's pre-norm multi-head self-attention update of ``x`` (no residual)."""
    normed = layer_norm(model, f"{block}_attention_norm", x)
    q, k, v = (heads_of(dense(model, f"{block}_{part}", normed), heads) for part in ("query", "key", "value"))
    weights = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]))
    return dense(model, f"{block}_output", merged(weights @ v))


def mlp_sublayer(model: keras.Model, name: str, x: np.ndarray) -> np.ndarray:
    """The pre-norm GELU MLP update of ``x`` whose layers are ``{name}_norm``, ``{name}_in``, ``{name}_out``."""
    hidden = gelu_tanh(dense(model, f"{name}_in", layer_norm(model, f"{name}_norm", x)))
    return dense(model, f"{name}_out", hidden)


def block_io(model: keras.Model, block: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The input of block ``block`` (the output of the layer before its first norm) and its output, on ``x``."""
    first = next(layer for layer in model.layers if layer.name.startswith(f"{block}_"))
    last = [layer for layer in model.layers if layer.name.startswith(f"{block}_")][-1]
    probe = keras.Model(model.input, [first.input, last.output])
    inputs, outputs = probe(x, training=False)
    return np.asarray(inputs), np.asarray(outputs)
