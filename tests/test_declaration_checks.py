"""Names, options and depends= are checked where they are declared.

Every public entry point that takes a name or an option rejects a wrong one at
once, with one error that names the resource and says what to write; nothing is
converted behind the user's back, and every valid value is accepted.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from fractions import Fraction

import pytest

import lifespan_kit
from lifespan_kit import Registry, Resource
from lifespan_kit.errors import (
    InvalidFactoryError,
    InvalidOptionError,
    UnknownResourceError,
)


def make_value() -> int:
    """A factory with no dependencies; never started here."""
    return 1  # pragma: no cover  # only declared


async def loop_forever() -> None:
    """A background task; never started here."""


def one_dependency(settings: object) -> object:
    """A factory with one dependency; never started here."""
    return settings  # pragma: no cover  # only declared


def any_keywords(**dependencies: object) -> object:
    """A factory that takes any keyword argument; never started here."""
    return dependencies  # pragma: no cover  # only declared


# --- names --------------------------------------------------------------------

Register = Callable[[Registry, object], object]


def _add(registry: Registry, name: object) -> object:
    return registry.add(name, 1)  # type: ignore[call-overload]  # a wrong name on purpose


def _decorator(registry: Registry, name: object) -> object:
    return registry.resource(name=name)(make_value)  # type: ignore[call-overload]  # a wrong name on purpose


def _background(registry: Registry, name: object) -> object:
    return registry.background(name=name)(loop_forever)  # type: ignore[call-overload]  # a wrong name on purpose


ENTRY_POINTS = [
    pytest.param(_add, id="add"),
    pytest.param(_decorator, id="resource-name"),
    pytest.param(_background, id="background-name"),
]


@pytest.mark.parametrize("register", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("name", "resource_name", "phrase"),
    [
        pytest.param(5, "5", "the name must be a string, not int", id="int"),
        pytest.param(b"db", "b'db'", "must be a string, not bytes", id="bytes"),
        pytest.param("class", "class", "the name is a Python keyword", id="keyword"),
        pytest.param("None", "None", "the name is a Python keyword", id="None"),
        pytest.param("db-pool", "db-pool", "not a valid Python identifier", id="dash"),
        pytest.param("", "", "not a valid Python identifier", id="empty"),
        pytest.param("1db", "1db", "not a valid Python identifier", id="digit"),
    ],
)
def test_a_name_that_cannot_be_a_parameter_name_is_rejected(
    register: Register, name: object, resource_name: str, phrase: str
) -> None:
    """Every way to name a resource rejects a name no parameter can have."""
    registry = Registry()
    with pytest.raises(InvalidFactoryError, match=phrase) as info:
        register(registry, name)
    assert info.value.code == "invalid-factory"
    assert info.value.resource_name == resource_name
    assert len(registry) == 0


@pytest.mark.parametrize("register", ENTRY_POINTS)
@pytest.mark.parametrize("name", ["db", "match", "type", "_", "données", "Db2"])
def test_every_identifier_that_is_no_keyword_is_a_valid_name(
    register: Register, name: str
) -> None:
    """Soft keywords, underscores and non-ASCII identifiers are valid names."""
    registry = Registry()
    register(registry, name)
    assert name in registry


def test_a_keyword_name_names_the_fix() -> None:
    """The fix for a keyword suggests the usual trailing underscore."""
    with pytest.raises(
        InvalidFactoryError, match=r"fix: use another name, such as 'class_'"
    ):
        Registry().add("class", 1)


def test_a_name_passed_where_the_factory_goes_is_explained() -> None:
    """@registry.resource("db") says to pass the name as a keyword."""
    registry = Registry()
    with pytest.raises(InvalidFactoryError, match=r"resource\(name='db'\)") as info:
        registry.resource("db")  # type: ignore[call-overload]  # the common slip
    assert info.value.resource_name == "db"
    with pytest.raises(InvalidFactoryError, match=r"background\(name='consumer'\)"):
        registry.background("consumer")  # type: ignore[call-overload]  # the same slip


def test_a_background_callable_without_a_name_asks_for_one() -> None:
    """A nameless async callable is told to pass name=, not to use async def."""
    registry = Registry()

    async def consume(queue: object) -> None:
        """Never run."""

    with pytest.raises(InvalidFactoryError, match="has no name") as info:
        registry.background(functools.partial(consume, None))
    assert "pass name= to registry.background()" in str(info.value)
    registry.background(name="consumer")(functools.partial(consume, None))
    assert "consumer" in registry


def test_an_override_for_a_name_that_cannot_exist_is_unknown() -> None:
    """override() with a keyword or non-identifier is an unknown resource."""
    registry = Registry()
    registry.add("db", 1)
    for name in ("class", "db-pool"):
        with pytest.raises(UnknownResourceError, match="passed to override") as info:
            registry.override(**{name: 2})
        assert info.value.resource_name == name


# --- timeouts -----------------------------------------------------------------

SetTimeout = Callable[[str, object], object]


def _timeout_on_add(option: str, value: object) -> object:
    return Registry().add("db", make_value, **{option: value})  # type: ignore[call-overload]  # a wrong option on purpose


def _timeout_on_decorator(option: str, value: object) -> object:
    return Registry().resource(**{option: value})(make_value)  # type: ignore[call-overload]  # a wrong option on purpose


def _timeout_on_registry(option: str, value: object) -> object:
    return Registry(**{option: value})  # type: ignore[arg-type]  # a wrong option on purpose


TIMEOUT_ENTRY_POINTS = [
    pytest.param(_timeout_on_add, "db", id="add"),
    pytest.param(_timeout_on_decorator, "make_value", id="resource"),
    pytest.param(_timeout_on_registry, None, id="Registry"),
]
TIMEOUT_OPTIONS = ["start_timeout", "stop_timeout", "health_timeout"]


@pytest.mark.parametrize(("set_timeout", "resource_name"), TIMEOUT_ENTRY_POINTS)
@pytest.mark.parametrize("option", TIMEOUT_OPTIONS)
@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        pytest.param("5", "a number of seconds, not str", id="str"),
        pytest.param(True, "a number of seconds, not bool", id="True"),
        pytest.param(False, "a number of seconds, not bool", id="False"),
        pytest.param(b"5", "a number of seconds, not bytes", id="bytes"),
        pytest.param([5], "a number of seconds, not list", id="list"),
        pytest.param(0, "greater than 0 seconds", id="zero"),
        pytest.param(-1.5, "greater than 0 seconds", id="negative"),
        pytest.param(-math.inf, "greater than 0 seconds", id="minus-inf"),
        pytest.param(math.nan, "greater than 0 seconds", id="nan"),
    ],
)
def test_a_timeout_that_is_not_a_positive_number_is_rejected(
    set_timeout: SetTimeout,
    resource_name: str | None,
    option: str,
    value: object,
    phrase: str,
) -> None:
    """A timeout is never coerced: a string or a bool is an InvalidOptionError."""
    with pytest.raises(InvalidOptionError, match=phrase) as info:
        set_timeout(option, value)
    assert info.value.code == "invalid-option"
    assert info.value.option == option
    assert info.value.resource_name == resource_name
    assert "such as 5 or 0.5" in str(info.value)
    assert "math.inf for no limit" in str(info.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(5, 5.0, id="int"),
        pytest.param(0.25, 0.25, id="float"),
        pytest.param(math.inf, math.inf, id="inf"),
        pytest.param(Fraction(1, 2), 0.5, id="Fraction"),
    ],
)
@pytest.mark.parametrize("option", TIMEOUT_OPTIONS)
def test_every_positive_real_number_is_a_valid_timeout(
    option: str, value: object, seconds: float
) -> None:
    """ints, floats, math.inf and other real numbers are accepted, as floats."""
    index = TIMEOUT_OPTIONS.index(option)
    registry = Registry(**{option: value})  # type: ignore[arg-type]  # typed as float
    assert registry.defaults.resolve(registry.defaults)[index] == seconds
    resource: Resource[object] = registry.add("db", make_value, **{option: value})  # type: ignore[call-overload]  # typed as float
    assert resource.timeouts.resolve(registry.defaults)[index] == seconds


def test_a_background_stop_timeout_is_checked() -> None:
    """@registry.background(stop_timeout=...) is checked like the others."""
    with pytest.raises(InvalidOptionError, match="not str") as info:
        Registry().background(stop_timeout="5")(loop_forever)  # type: ignore[call-overload]  # on purpose
    assert (info.value.option, info.value.resource_name) == (
        "stop_timeout",
        "loop_forever",
    )


def test_the_runner_checks_its_shutdown_timeout() -> None:
    """lifespan_kit.run rejects a string or a bool shutdown_timeout before starting."""
    registry = Registry()

    async def main() -> None:
        """Never called."""

    for value in ("5", True):
        with pytest.raises(InvalidOptionError, match="a number of seconds") as info:
            lifespan_kit.run(main, registry, shutdown_timeout=value)  # type: ignore[arg-type]  # on purpose
        assert info.value.option == "shutdown_timeout"
        assert "of lifespan_kit.run() is invalid" in str(info.value)


@pytest.mark.parametrize(
    ("concurrency", "phrase"),
    [
        pytest.param("1", "an int or None, not str", id="str"),
        pytest.param(1.0, "an int or None, not float", id="float"),
        pytest.param(math.inf, "an int or None, not float", id="inf"),
        pytest.param(False, "an int or None, not bool", id="bool"),
        pytest.param(-1, "at least 1", id="negative"),
    ],
)
def test_a_concurrency_that_is_not_a_positive_int_is_rejected(
    concurrency: object, phrase: str
) -> None:
    """lifespan(concurrency=...) takes an int of at least 1, or None."""
    with pytest.raises(InvalidOptionError, match=phrase) as info:
        Registry().lifespan(concurrency=concurrency)  # type: ignore[call-overload]  # on purpose
    assert info.value.option == "concurrency"
    assert "Option 'concurrency' of the lifespan is invalid." in str(info.value)
    assert "or None for no limit" in str(info.value)


# --- depends= and health= -----------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "depends", "phrase"),
    [
        pytest.param(one_dependency, ["settings"], "not be a list", id="list"),
        pytest.param(one_dependency, "settings", "not be a str", id="str"),
        pytest.param(
            one_dependency, {"settings": 5}, "maps 'settings' to 5", id="int-value"
        ),
        pytest.param(
            any_keywords, {5: "settings"}, "maps 5 to 'settings'", id="int-key"
        ),
        pytest.param(
            one_dependency,
            {"settings": "db-pool"},
            "maps 'settings' to 'db-pool'",
            id="value-not-an-identifier",
        ),
        pytest.param(
            one_dependency,
            {"settings": "class"},
            "maps 'settings' to 'class'",
            id="keyword-value",
        ),
        pytest.param(
            any_keywords,
            {"db-pool": "settings"},
            "maps 'db-pool'",
            id="key-not-an-identifier",
        ),
        pytest.param(
            any_keywords, {"class": "settings"}, "maps 'class'", id="keyword-key"
        ),
    ],
)
def test_depends_must_map_names_to_names(
    factory: Callable[..., object], depends: object, phrase: str
) -> None:
    """depends= is a mapping of parameter names to resource names, all strings."""
    registry = Registry()
    with pytest.raises(InvalidFactoryError, match=phrase) as info:
        registry.add("client", factory, depends=depends)  # type: ignore[call-overload]  # on purpose
    assert info.value.code == "invalid-factory"
    assert info.value.resource_name == "client"
    with pytest.raises(InvalidFactoryError, match=phrase):
        registry.resource(name="client", depends=depends)(factory)  # type: ignore[call-overload]  # on purpose
    assert len(registry) == 0


def test_background_depends_is_checked() -> None:
    """@registry.background(depends=...) is checked like the others."""
    with pytest.raises(InvalidFactoryError, match="maps 'queue' to 5"):
        Registry().background(depends={"queue": 5})(loop_forever)  # type: ignore[dict-item]  # on purpose


@pytest.mark.parametrize("health", [5, "ping"], ids=["int", "str"])
def test_a_health_check_must_be_callable(health: object) -> None:
    """health= is a function; anything else is rejected when it is declared."""
    registry = Registry()
    with pytest.raises(InvalidOptionError, match="must be a function") as info:
        registry.add("db", make_value, health=health)  # type: ignore[call-overload]  # on purpose
    assert (info.value.option, info.value.resource_name) == ("health", "db")
    with pytest.raises(InvalidOptionError, match="must be a function"):
        registry.resource(health=health)(make_value)  # type: ignore[call-overload]  # on purpose
