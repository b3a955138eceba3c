"""The offline task generators: deterministic (same seed, same bytes), cached, and each building the examples and
labels its docstring promises."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from effbench.registry import TASKS
from effbench.tasks import (
    _generated,
    _images,
    _shapes,
    ctr_synth,
    digit_sets,
    digits_seq,
    listops,
    noisy_signals,
    seg_shapes,
    shapes32,
    sr_photos,
    texture_patches,
)
from effbench.tasks._digits import digit_pools
from effbench.tasks._generated import cached_arrays, fingerprint

TINY_LISTOPS = replace(listops.SHORT, slug="listops-tiny", train=60, test=20)

# Each generator at a small size, as a function of its seed.
GENERATORS = {
    "shapes32": lambda seed: shapes32.generate(seed, train=40, test=20),
    "seg-shapes": lambda seed: seg_shapes.generate(seed, train=6, test=4),
    "sr-photos": lambda seed: sr_photos.generate(2, seed, train=30),
    "listops": lambda seed: listops.generate(replace(TINY_LISTOPS, seed=seed)),
    "ctr-synth": lambda seed: dict(zip(("x", "y", "p"), ctr_synth.ctr_examples(ctr_synth.ClickModel(seed), 200, seed),
                                       strict=True)),
    "digit-sets": lambda seed: dict(zip("xy", digit_sets.digit_sets(*digit_pools()[:2], 50, seed), strict=True)),
    "texture-patches": lambda seed: dict(zip("xy", texture_patches.texture_patches(seed, 0, 12), strict=True)),
    "digits-seq": lambda seed: dict(zip("xy", digits_seq.digit_sequences(*digit_pools()[:2], 50, seed), strict=True)),
    "noisy-signals": lambda seed: _generated.drawn_splits(noisy_signals.noisy_pairs, seed, 40, 20),
}


def load(slug: str):
    return TASKS.get(slug).factory().load()


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_ones(name):
    generate = GENERATORS[name]
    assert fingerprint(generate(11)) == fingerprint(generate(11))
    assert fingerprint(generate(11)) != fingerprint(generate(12))


# ----------------------------------------------------------------------------------------------- the cache


def test_generated_arrays_are_cached_and_a_damaged_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFBENCH_CACHE", str(tmp_path))
    calls = []

    def generate():
        calls.append(1)
        return {"x": np.arange(6, dtype=np.uint8).reshape(2, 3)}

    first = cached_arrays("toy", {"seed": 1}, generate)
    again = cached_arrays("toy", {"seed": 1}, generate)
    assert len(calls) == 1 and fingerprint(first) == fingerprint(again)
    cached_arrays("toy", {"seed": 2}, generate)  # other parameters: another file
    assert len(calls) == 2
    path = _generated.cache_path("toy", {"seed": 1})
    path.write_bytes(b"not an npz file")
    assert fingerprint(cached_arrays("toy", {"seed": 1}, generate)) == fingerprint(first) and len(calls) == 3
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left behind


# ---------------------------------------------------------------------------------------------- shapes32


def test_shapes32_has_cifar10s_geometry_balanced_classes_and_busy_images():
    task = TASKS.get("shapes32")
    assert task.spec.input_shape == (32, 32, 3) and task.spec.num_classes == 10 and "SYNTHETIC" in task.spec.summary
    images, labels = shapes32.shapes32_scenes(3, 0, 200)
    assert images.dtype == np.uint8 and images.shape == (200, 32, 32, 3)
    assert np.bincount(labels, minlength=10).tolist() == [20] * 10
    assert images.reshape(200, -1).std(axis=1).min() > 5  # textured backgrounds: no blank image


def test_shapes32_splits_hold_20000_training_and_5000_test_images():
    splits = load("shapes32")
    assert len(splits.x_train) + len(splits.x_val) == 20_000 and len(splits.x_test) == 5_000
    assert 0.0 <= splits.x_test.min() and splits.x_test.max() <= 1.0


# ---------------------------------------------------------------------------------------- texture-patches


def test_texture_patches_are_balanced_real_pixels_and_test_patches_come_from_held_out_rows():
    task = TASKS.get("texture-patches")
    assert task.spec.input_shape == (32, 32, 1) and task.spec.num_classes == 3 and "REAL" in task.spec.summary
    images, labels = texture_patches.texture_patches(5, 1, 30)
    assert images.dtype == np.uint8 and images.shape == (30, 32, 32, 1)
    assert np.bincount(labels, minlength=3).tolist() == [10, 10, 10]
    (train_rows, train_end), (test_rows, _) = texture_patches.SPLIT_ROWS
    # The largest crop of a train patch ends before the first row a test patch may use.
    assert train_rows == 0 and train_end <= test_rows


def test_a_patch_is_a_crop_of_its_photograph_before_jitter():
    photo = texture_patches.texture_photo("brick")
    rng = np.random.default_rng(0)
    patch = texture_patches.draw_patches(rng, photo, (0, 64), 1)[0, ..., 0]
    # Replaying the generator's draws: side, top, left, turn, mirror, gain, shift.
    rng = np.random.default_rng(0)
    side = int(rng.integers(24, 49))
    top, left = int(rng.integers(0, 64 - side + 1)), int(rng.integers(0, photo.shape[1] - side + 1))
    crop = np.repeat(np.round(photo[top:top + side, left:left + side] * 255).astype(np.uint8)[..., None], 3, axis=2)
    resized = _images.resize(crop, 32, 32, box=True)[..., 0].astype(np.float32) / 255
    expected = np.rot90(resized, int(rng.integers(0, 4)))
    expected = expected[:, ::-1] if rng.random() < 0.5 else expected
    gain, shift = rng.uniform(0.6, 1.4), rng.uniform(-0.15, 0.15)
    expected = np.clip((expected - expected.mean()) * gain + expected.mean() + shift, 0, 1)
    np.testing.assert_array_equal(patch, np.round(expected * 255).astype(np.uint8))


@pytest.mark.parametrize("shape", sorted({*shapes32.CLASSES, *seg_shapes.CLASSES[1:]}))
def test_every_shape_fills_its_centre_region_and_stays_in_the_unit_disc(shape):
    grid = np.linspace(-1.5, 1.5, 121)
    u, v = np.meshgrid(grid, grid)
    inside = _shapes.signed_distance(shape, u, v) > 0
    assert 0.05 < inside.mean() and not inside[np.hypot(u, v) > 1.05].any()


def test_texture_photos_are_never_held_out_test_photos_of_super_resolution():
    assert not set(_shapes.TEXTURE_PHOTOS) & set(sr_photos.TEST_PHOTOS)


# -------------------------------------------------------------------------------------------- seg-shapes


def test_segmentation_labels_mark_the_visible_shapes_over_a_background():
    images, labels = seg_shapes.scenes(5, 0, 20)
    assert images.shape == (20, 64, 64, 3) and labels.shape == (20, 64, 64) and labels.dtype == np.int32
    assert labels.min() == 0 and labels.max() < len(seg_shapes.CLASSES)
    foreground = (labels > 0).mean(axis=(1, 2))
    assert (foreground > 0.01).all() and foreground.mean() < 0.5  # every scene has a shape; background dominates
    assert len(np.unique(labels)) == len(seg_shapes.CLASSES)


# ------------------------------------------------------------------------------------------- sr-photos


def test_super_resolution_pairs_are_aligned_bicubic_reductions_of_the_photos():
    low_patches, high_patches, photo = sr_photos.test_patches(3)
    high, low = sr_photos.degrade(_images.photo(sr_photos.TEST_PHOTOS[0]), 3)
    assert high.shape[0] % 3 == 0 and low.shape == (high.shape[0] // 3, high.shape[1] // 3, 3)
    np.testing.assert_array_equal(low_patches[1], low[:16, 16:32])
    np.testing.assert_array_equal(high_patches[1], high[:48, 48:96])
    assert photo[0] == 0 and photo[-1] == len(sr_photos.TEST_PHOTOS) - 1


def test_whole_photos_are_held_out_for_test():
    assert not set(sr_photos.TEST_PHOTOS) & set(sr_photos.TRAIN_PHOTOS)
    assert len(sr_photos.TEST_PHOTOS) + len(sr_photos.TRAIN_PHOTOS) == 20


def test_super_resolution_task_maps_low_to_high_resolution_and_groups_test_patches_by_photo():
    task = TASKS.get("sr-photos-x2").factory()
    splits = task.load()
    assert splits.x_test.shape[1:] == (24, 24, 3) and splits.y_test.shape[1:] == (48, 48, 3)
    assert len(task.test_groups()) == len(splits.y_test)
    upscaled = task.reference_outputs(splits.x_test[:4])
    assert upscaled.shape == splits.y_test[:4].shape and np.abs(upscaled - splits.y_test[:4]).mean() < 0.05


# -------------------------------------------------------------------------------------------------- listops


def evaluate(tokens: list[str]) -> int:
    """An independent ListOps evaluator over the token text, by recursive descent."""

    def parse(position: int) -> tuple[int, int]:
        token = tokens[position]
        if token.isdigit():
            return int(token), position + 1
        values, position = [], position + 1
        while tokens[position] != "]":
            value, position = parse(position)
            values.append(value)
        if token == "[MIN":
            result = min(values)
        elif token == "[MAX":
            result = max(values)
        elif token == "[MED":
            result = int(np.median(values))
        else:
            result = sum(values) % 10
        return result, position + 1

    value, end = parse(0)
    assert end == len(tokens)
    return value


def test_listops_labels_are_the_values_of_distinct_expressions_in_the_length_range():
    data = listops.generate(TINY_LISTOPS)
    ids = np.concatenate([data["x_train"], data["x_test"]])
    values = np.concatenate([data["y_train"], data["y_test"]])
    for row, value in zip(ids, values, strict=True):
        assert evaluate(listops.decode(row).split()) == value
    lengths = (ids > 0).sum(axis=1)
    assert lengths.min() > TINY_LISTOPS.min_length and lengths.max() <= TINY_LISTOPS.max_length
    assert len({row.tobytes() for row in ids}) == len(ids)  # no expression twice, so none in train and test


def test_listops_draws_trees_as_lra_does():
    rng = random.Random(0)
    depths = []
    for _ in range(300):
        tokens: list[int] = []
        listops.draw_tree(rng, 1, tokens, 10_000)
        depth = max(np.cumsum([1 if t in listops.OPERATORS else -1 if t == listops.END else 0 for t in tokens]),
                    default=0)  # fmt: skip
        depths.append(depth)
    assert 0.6 < np.mean(np.array(depths) == 0) < 0.9  # a leaf with probability 0.75
    assert max(depths) <= listops.MAX_DEPTH


def test_listops_tasks_are_tokens_with_a_vocabulary():
    spec = TASKS.get("listops-long").spec
    assert (spec.modality, spec.vocabulary, spec.input_shape) == ("tokens", 16, (2000,))


# ---------------------------------------------------------------------------------------------------- CTR


def test_ctr_ids_stay_in_their_fields_and_the_crosses_carry_the_signal():
    model = ctr_synth.ClickModel()
    x, clicks, probability = ctr_synth.ctr_examples(model, 20_000, 1)
    fields = x.astype(int) - ctr_synth.OFFSETS
    assert (fields >= 0).all() and (fields < np.array(ctr_synth.CARDINALITIES)).all()
    assert clicks.mean() == pytest.approx(ctr_synth.CLICK_RATE, abs=0.02)
    from tracks._quality import roc_auc

    assert roc_auc(probability, clicks) > 0.88  # the best any model can do on this draw
    no_crosses = np.full(len(fields), model.bias)
    for field, weights in enumerate(model.first_order):
        no_crosses += weights[fields[:, field]]
    assert roc_auc(no_crosses, clicks) < 0.8  # the first-order part alone falls far short of it


# --------------------------------------------------------------------------------------- digits, as groups


def pool_labels(elements: np.ndarray, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The digit of each element, found by matching it against the pool's images."""
    flat = images.reshape(len(images), -1)
    return np.array([labels[np.flatnonzero((flat == e.reshape(-1)).all(axis=1))[0]] for e in elements])


def test_digit_sets_are_labelled_by_the_sum_of_their_digits_mod_10_and_test_digits_are_held_out():
    _, _, test_images, test_labels = digit_pools()
    x, y = digit_sets.digit_sets(test_images, test_labels, 30, seed=1)
    assert x.shape == (30, 3, 64)
    digits = pool_labels(x.reshape(-1, 64), test_images, test_labels).reshape(30, 3)
    np.testing.assert_array_equal(y, digits.sum(axis=1) % 10)
    splits = load("digit-sets")
    train_rows = {row.tobytes() for row in splits.x_train.reshape(-1, 64)}
    assert not any(row.tobytes() in train_rows for row in test_images.reshape(-1, 64)[:50])


def test_digit_sequences_are_labelled_by_the_alternating_sum_so_order_matters():
    images, labels = digit_pools()[:2]
    x, y = digits_seq.digit_sequences(images, labels, 40, seed=2)
    assert x.shape == (40, 4, 8, 8, 1)
    digits = pool_labels(x.reshape(-1, 8, 8, 1), images, labels).reshape(40, 4)
    np.testing.assert_array_equal(y, (digits[:, 0] - digits[:, 1] + digits[:, 2] - digits[:, 3]) % 10)
    swapped = digits[:, [1, 0, 2, 3]]
    changed = (swapped[:, 0] - swapped[:, 1] + swapped[:, 2] - swapped[:, 3]) % 10 != y
    np.testing.assert_array_equal(changed, (digits[:, 0] - digits[:, 1]) % 5 != 0)


# ------------------------------------------------------------------------------------ views and real data


def test_mnist1d_seq_is_mnist1d_seen_as_40_steps():
    flat, steps = load("mnist1d"), load("mnist1d-seq")
    assert steps.x_test.shape[1:] == (40, 1)
    np.testing.assert_array_equal(steps.x_train.reshape(len(steps.x_train), 40), flat.x_train)
    np.testing.assert_array_equal(steps.y_test, flat.y_test)
    assert TASKS.get("mnist1d-seq").factory().recipes is TASKS.get("mnist1d").factory().recipes


def test_breast_cancer_is_standardized_per_feature_on_a_fixed_stratified_split():
    splits = load("breast_cancer")
    assert len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 569
    np.testing.assert_allclose(splits.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(splits.x_train.std(axis=0), 1.0, atol=1e-4)
    assert set(np.unique(splits.y_test)) == {0, 1}
    np.testing.assert_array_equal(load("breast_cancer").x_test, splits.x_test)
