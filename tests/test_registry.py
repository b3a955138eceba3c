"""The registries: one decorator registers, duplicates and unknown slugs are clear errors."""

import pytest

from effbench.method import MethodRef
from effbench.registry import METHODS, TASKS, TRACKS, Paper, RegistryError, register_method
from tests.conftest import TOY_PAPER


def test_registered_method_is_found_by_slug_and_pattern(toy_methods):
    assert METHODS.get("toy-dense").spec.kind == "architecture"
    assert [e.spec.slug for e in METHODS.select("toy-*")] == ["toy-broken", "toy-dense", "toy-halved"]
    assert [e.spec.slug for e in METHODS.select(suite="toys", pattern="*dense")] == ["toy-dense"]


def test_duplicate_slug_is_an_error_naming_both_modules(toy_methods):
    with pytest.raises(RegistryError, match="'toy-dense' is registered twice"):
        register_method("toy-dense", suite="toys", kind="training", paper=TOY_PAPER, summary="x")(type("X", (), {}))


def test_unknown_slug_suggests_close_matches(toy_methods):
    with pytest.raises(RegistryError, match="unknown method 'toy-dens'.*did you mean toy-dense"):
        METHODS.get("toy-dens")


@pytest.mark.parametrize("slug", ["Upper", "has space", "a:b", "", "a*b", "-lead"])
def test_invalid_slugs_are_rejected(slug):
    with pytest.raises(RegistryError, match="invalid"):
        register_method(slug, suite="s", kind="training", paper=Paper("t", 2020, "u"), summary="x")


def test_bad_kind_and_scale_are_rejected():
    with pytest.raises(RegistryError, match="kind 'magic'"):
        register_method("x-kind", suite="s", kind="magic", paper=TOY_PAPER, summary="x")
    with pytest.raises(RegistryError, match="scale 'huge'"):
        register_method("x-scale", suite="s", kind="training", paper=TOY_PAPER, summary="x", scale="huge")


def test_method_options_parse_and_unknown_options_are_rejected(toy_methods):
    ref = MethodRef.parse("toy-dense:units=32")
    assert ref.options == (("units", 32),) and ref.variant == "units=32" and str(ref) == "toy-dense:units=32"
    assert ref.create().options == {"units": 32}
    with pytest.raises(RegistryError, match="has no option width"):
        MethodRef.parse("toy-dense:width=2").create()
    with pytest.raises(ValueError, match="key=value"):
        MethodRef.parse("toy-dense:units")


def test_builtin_entries_are_registered():
    assert {"digits", "mnist1d", "mnist", "fashion_mnist", "cifar10", "cifar100"} <= {e.spec.slug for e in TASKS}
    assert {"accuracy", "complexity"} <= {e.spec.slug for e in TRACKS}
    assert {"mlp", "vgg-small", "resnet-cifar", "mobilenetv2", "simplenet"} <= {
        e.spec.slug for e in METHODS.select(suite="architectures")
    }
