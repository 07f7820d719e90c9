"""Validating and ordering the graph: pure, synchronous, before anything starts."""

from __future__ import annotations

import pytest

from lifespan_kit import Bundle, Registry
from lifespan_kit.errors import (
    DependencyCycleError,
    GraphError,
    MissingDependencyError,
    UnknownResourceError,
)


def test_order_is_topological_with_ties_in_registration_order() -> None:
    """check() gives the start order: dependencies first, ties as registered."""
    registry = Registry()
    registry.add("api", lambda db, cache: None)
    registry.add("cache", lambda settings: None)
    registry.add("db", lambda settings: None)
    registry.add("settings", 1)
    assert registry.check() == ("settings", "cache", "db", "api")


def test_missing_dependency_names_who_asked_and_suggests() -> None:
    """A missing dependency names the asking resource, the path and close names."""
    registry = Registry()
    registry.add("settings", 1)
    registry.add("db", lambda setings: None)
    registry.add("api", lambda db: None)

    class Resources(Bundle):
        api: object

    with pytest.raises(GraphError) as info:
        registry.check(Resources)
    (problem,) = info.value.problems
    assert isinstance(problem, MissingDependencyError)
    assert problem.code == "missing-dependency"
    assert problem.resource_name == "db"
    assert problem.dependency_name == "setings"
    assert problem.dependency_path == ("api", "db")
    assert problem.suggestions == ("settings",)
    text = str(info.value)
    assert "Resource 'db' depends on 'setings', which is not registered." in text
    assert "dependency path: api -> db" in text
    assert "did you mean: 'settings'" in text
    assert "registered: 'settings', 'db', 'api'" in text


def test_renamed_parameter_is_shown_in_the_missing_dependency() -> None:
    """When depends= maps a parameter, the message names both."""
    registry = Registry()
    registry.add("db", lambda cfg: None, depends={"cfg": "config"})
    with pytest.raises(GraphError, match=r"depends on 'config' \(parameter 'cfg'\)"):
        registry.check()


def test_long_registries_list_no_names() -> None:
    """With many registered names only close matches are offered."""
    registry = Registry()
    for index in range(20):
        registry.add(f"resource_{index}", index)
    registry.add("user", lambda resource_x: None)
    with pytest.raises(GraphError) as info:
        registry.check()
    (problem,) = info.value.problems
    assert isinstance(problem, MissingDependencyError)
    assert problem.available == ()
    assert "registered:" not in str(problem)


def test_cycle_is_printed_as_a_loop() -> None:
    """A cycle is reported once, as a -> b -> c -> a."""
    registry = Registry()
    registry.add("a", lambda b: None)
    registry.add("b", lambda c: None)
    registry.add("c", lambda a: None)
    registry.add("d", lambda a: None)
    with pytest.raises(GraphError) as info:
        registry.check()
    (problem,) = info.value.problems
    assert isinstance(problem, DependencyCycleError)
    assert problem.code == "dependency-cycle"
    assert problem.cycle == ("a", "b", "c", "a")
    assert "cycle: a -> b -> c -> a" in str(info.value)
    assert "dependency path" not in str(problem)


def test_self_dependency_is_a_cycle() -> None:
    """A resource that depends on itself is a cycle of one."""
    registry = Registry()
    registry.add("a", lambda a: None)
    with pytest.raises(GraphError, match=r"cycle: a -> a"):
        registry.check()


def test_every_problem_is_reported_together() -> None:
    """Two missing dependencies are listed in one error, numbered."""
    registry = Registry()
    registry.add("a", lambda x: None)
    registry.add("b", lambda y: None)
    with pytest.raises(GraphError) as info:
        registry.check()
    assert [p.resource_name for p in info.value.problems] == ["a", "b"]
    text = str(info.value)
    assert text.startswith("The resource graph has 2 problems.")
    assert "\n1. Resource 'a'" in text
    assert "\n2. Resource 'b'" in text
    assert info.value.code == "invalid-graph"


def test_two_separate_cycles_are_both_reported() -> None:
    """Independent cycles each get their own problem."""
    registry = Registry()
    registry.add("a", lambda b: None)
    registry.add("b", lambda a: None)
    registry.add("c", lambda d: None)
    registry.add("d", lambda c: None)
    with pytest.raises(GraphError) as info:
        registry.check()
    cycles = [p.cycle for p in info.value.problems]  # type: ignore[attr-defined]
    assert cycles == [("a", "b", "a"), ("c", "d", "c")]


def test_bundle_field_without_a_resource_is_reported() -> None:
    """A bundle field naming no resource is an unknown-resource problem."""

    class Resources(Bundle):
        dbb: object

    registry = Registry()
    registry.add("db", 1)
    with pytest.raises(GraphError) as info:
        registry.lifespan(Resources)
    (problem,) = info.value.problems
    assert isinstance(problem, UnknownResourceError)
    assert problem.resource_name == "dbb"
    assert problem.suggestions == ("db",)
    assert "No resource is named 'dbb' (a field of bundle Resources)." in str(problem)


def test_only_the_bundles_subgraph_is_validated() -> None:
    """A broken resource the bundle does not need does not stop the bundle."""

    class Resources(Bundle):
        db: int

    registry = Registry()
    registry.add("db", 1)
    registry.add("broken", lambda missing: None)
    assert registry.check(Resources) == ("db",)
    with pytest.raises(GraphError):
        registry.check()


def test_plans_are_cached_until_the_registry_changes() -> None:
    """Validation runs once per bundle until a resource is added."""
    registry = Registry()
    registry.add("db", 1)
    assert registry.check() == ("db",)
    assert registry.check() == ("db",)
    registry.add("cache", 2)
    assert registry.check() == ("db", "cache")


def test_diamond_dependencies_are_started_once() -> None:
    """A dependency shared through two paths appears once in the order."""
    registry = Registry()
    registry.add("base", 1)
    registry.add("left", lambda base: None)
    registry.add("right", lambda base: None)
    registry.add("top", lambda left, right, base: None)
    assert registry.check() == ("base", "left", "right", "top")
