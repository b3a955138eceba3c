"""Training modifiers compose with any method (``method+modifier:options``); kd is the first of them."""

import numpy as np
import pytest

from effbench.config import TrainingConfig
from effbench.method import MethodRef, ModifierRef
from effbench.recipe import Recipe
from effbench.records import ResultStore
from effbench.registry import RegistryError
from effbench.runner import execute_plan, make_plan
from effbench.tf import tf
from suites.training.kd import soft_target_loss

KD = "toy-dense+kd:teacher=mlp,temperature=2"


def test_a_modifier_is_written_after_the_method_with_a_plus():
    ref = MethodRef.parse("resnet-cifar:depth=8+kd:teacher=vgg-small,alpha=0.5")
    assert ref.slug == "resnet-cifar" and ref.options == (("depth", 8),)
    assert ref.modifiers == (ModifierRef("kd", (("alpha", 0.5), ("teacher", "vgg-small"))),)
    assert str(ref) == "resnet-cifar:depth=8+kd:alpha=0.5,teacher=vgg-small"
    assert ref.variant == "depth=8+kd:alpha=0.5,teacher=vgg-small"
    assert MethodRef.parse(str(ref)) == ref


def test_the_modifier_and_its_teacher_are_part_of_the_training_hash(toy_methods):
    plain = TrainingConfig(MethodRef.parse("toy-dense"), "digits", 0, "smoke")
    distilled = TrainingConfig(MethodRef.parse(KD), "digits", 0, "smoke")
    other = MethodRef.parse("toy-dense+kd:teacher=vgg-small,temperature=2")
    other_teacher = TrainingConfig(other, "digits", 0, "smoke")
    assert len({plain.hash, distilled.hash, other_teacher.hash}) == 3
    config = distilled.as_dict()
    assert config["modifiers"] == [{"modifier": "kd", "options": {"teacher": "mlp", "temperature": 2, "alpha": 0.9}}]
    teacher = TrainingConfig(MethodRef("mlp"), "digits", 0, "smoke")
    assert config["upstream"] == {"teacher": teacher.hash}
    assert "modifiers" not in plain.as_dict()


def test_bad_modifier_options_are_clear_errors(toy_methods):
    with pytest.raises(RegistryError, match="needs a teacher"):
        MethodRef.parse("toy-dense+kd").create_modifiers()
    with pytest.raises(RegistryError, match="has no option temp .*options: alpha, teacher, temperature"):
        MethodRef.parse("toy-dense+kd:teacher=mlp,temp=3").create_modifiers()
    with pytest.raises(RegistryError, match="unknown modifier 'kdd'; did you mean kd"):
        MethodRef.parse("toy-dense+kdd").create_modifiers()


def test_soft_target_loss_is_t_squared_kl_and_vanishes_when_student_matches_teacher():
    teacher = tf.constant([[2.0, 0.0, -1.0]])
    student = tf.constant([[0.0, 1.0, 0.0]])
    p = np.exp(teacher.numpy() / 2) / np.exp(teacher.numpy() / 2).sum()
    q = np.exp(student.numpy() / 2) / np.exp(student.numpy() / 2).sum()
    expected = 4 * float(np.sum(p * (np.log(p) - np.log(q))))
    assert float(soft_target_loss(student, teacher, 2.0)) == pytest.approx(expected, rel=1e-5)
    assert float(soft_target_loss(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)


def test_kd_trains_any_method_against_its_teacher_trained_once(tmp_path, toy_methods):
    store = ResultStore(tmp_path)
    jobs = make_plan([MethodRef.parse(KD), MethodRef.parse("toy-dense+kd:teacher=mlp,temperature=2,alpha=0.5")],
                     ["digits"], [0], ["accuracy", "training_cost"], "smoke", store)  # fmt: skip
    assert [(str(job.training.method), job.tracks) for job in jobs] == [
        ("mlp", []), (KD, ["accuracy", "training_cost"]),
        ("toy-dense+kd:alpha=0.5,teacher=mlp,temperature=2", ["accuracy", "training_cost"]),
    ]  # fmt: skip
    messages = []
    results = execute_plan(jobs, store, log=messages.append)
    assert not any(result.failures for result in results)
    assert sum(m.startswith("training mlp") for m in messages) == 1
    record = results[1].records[0]
    assert record.method == "toy-dense" and record.variant == "+kd:teacher=mlp,temperature=2"
    assert "soft_loss" in record.curves  # the distiller's soft term was trained on
    cost = {m.name: m.value for m in results[1].records[1].metrics}
    assert cost["upstream_train_seconds"] > 0


def test_recipes_take_adamw_and_any_tf_keras_optimizer_by_name():
    assert type(Recipe(optimizer="adamw", weight_decay=1e-4).make_optimizer(10)).__name__ == "AdamW"
    assert type(Recipe(optimizer="rmsprop").make_optimizer(10)).__name__ == "RMSprop"
    with pytest.raises(ValueError, match="recipe optimizer 'adamm' is not a tf_keras optimizer .*adamw"):
        Recipe(optimizer="adamm")
