"""Validating and ordering the graph: pure, synchronous, before anything starts."""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import create_model

from lifespan_kit import Bundle, Registry
from lifespan_kit.errors import (
    DependencyCycleError,
    GraphError,
    LifespanKitError,
    MissingDependencyError,
    UnknownResourceError,
)

EXAMPLES = int(os.environ.get("LIFESPAN_KIT_EXAMPLES", "300"))
DERANDOMIZE = not os.environ.get("LIFESPAN_KIT_EXPLORE")


def accepts_anything(**_: object) -> None:
    """A factory whose dependencies all come from depends=."""


def add_with_dependencies(
    registry: Registry, name: str, targets: Sequence[str]
) -> None:
    """Register `name` as depending on each of `targets`, in that order."""
    depends = {f"d{index}": target for index, target in enumerate(targets)}
    registry.add(name, accepts_anything, depends=depends)


def bundle_of(names: Sequence[str]) -> type[Bundle]:
    """Build a bundle class with one field of type object per name."""
    fields: dict[str, object] = dict.fromkeys(names, (object, ...))
    return create_model("Wanted", __base__=Bundle, **fields)  # type: ignore[call-overload, no-any-return]  # fields built at runtime


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


def test_two_fields_aliasing_one_resource_start_it_once() -> None:
    """A resource named by two bundle fields is validated and ordered once."""
    from pydantic import Field

    class Resources(Bundle):
        primary: int = Field(alias="db")
        replica: int = Field(alias="db")

    registry = Registry()
    registry.add("db", 1)
    assert registry.check(Resources) == ("db",)


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


def test_unknown_bundle_fields_are_reported_in_field_order() -> None:
    """Every field naming no resource is reported, in the bundle's order."""
    registry = Registry()
    registry.add("db", 1)
    with pytest.raises(GraphError) as info:
        registry.check(bundle_of(["zeta", "db", "alpha"]))
    assert [p.resource_name for p in info.value.problems] == ["zeta", "alpha"]


@pytest.mark.parametrize(
    ("extra", "bundle_fields", "other_problem"),
    [
        pytest.param(
            ("api", ["db", "cahce"]), None, MissingDependencyError, id="missing"
        ),
        pytest.param(None, ["a", "dbb"], UnknownResourceError, id="unknown-field"),
    ],
)
def test_cycle_is_reported_alongside_other_problems(
    extra: tuple[str, list[str]] | None,
    bundle_fields: list[str] | None,
    other_problem: type[LifespanKitError],
) -> None:
    """A cycle is not hidden by a missing dependency or an unknown bundle field."""
    registry = Registry()
    add_with_dependencies(registry, "a", ["b"])
    add_with_dependencies(registry, "b", ["a"])
    registry.add("db", 1)
    if extra is not None:
        add_with_dependencies(registry, *extra)
    bundle = None if bundle_fields is None else bundle_of(bundle_fields)
    for validate in (registry.check, registry.lifespan):
        with pytest.raises(GraphError) as info:
            validate(bundle)
        first, cycle = info.value.problems
        assert isinstance(first, other_problem)
        assert isinstance(cycle, DependencyCycleError)
        assert cycle.cycle == ("a", "b", "a")
        assert "cycle: a -> b -> a" in str(info.value)


def test_a_cycle_upstream_of_another_cycle_is_reported() -> None:
    """A cycle that depends on another cycle is reported too, each once."""
    registry = Registry()
    add_with_dependencies(registry, "api", ["repo"])
    add_with_dependencies(registry, "repo", ["db", "api"])
    add_with_dependencies(registry, "db", ["pool"])
    add_with_dependencies(registry, "pool", ["db"])
    add_with_dependencies(registry, "web", ["api"])
    with pytest.raises(GraphError) as info:
        registry.check()
    cycles = [
        p.cycle for p in info.value.problems if isinstance(p, DependencyCycleError)
    ]
    assert cycles == [("api", "repo", "api"), ("db", "pool", "db")]
    assert len(info.value.problems) == 2


def test_self_loop_next_to_a_larger_cycle_is_reported() -> None:
    """A resource depending on itself inside a larger group gives one cycle."""
    registry = Registry()
    add_with_dependencies(registry, "a", ["a", "b"])
    add_with_dependencies(registry, "b", ["a"])
    add_with_dependencies(registry, "c", ["c"])
    with pytest.raises(GraphError) as info:
        registry.check()
    cycles = [
        p.cycle for p in info.value.problems if isinstance(p, DependencyCycleError)
    ]
    assert cycles == [("a", "a"), ("c", "c")]


def test_the_shortest_cycle_through_the_first_resource_is_printed() -> None:
    """Within one group, the cycle starts at its first resource and is shortest."""
    registry = Registry()
    add_with_dependencies(registry, "a", ["b", "d"])
    add_with_dependencies(registry, "b", ["c"])
    add_with_dependencies(registry, "c", ["a"])
    add_with_dependencies(registry, "d", ["a"])
    with pytest.raises(GraphError) as info:
        registry.check()
    (problem,) = info.value.problems
    assert isinstance(problem, DependencyCycleError)
    assert problem.cycle == ("a", "d", "a")


@pytest.mark.parametrize("closed", [True, False], ids=["cycle", "chain"])
def test_a_ten_thousand_long_chain_never_hits_the_recursion_limit(closed: bool) -> None:
    """Validation is iterative: a 10,000-resource chain or cycle is handled."""
    size = 10_000
    registry = Registry()
    for index in range(size):
        target = index + 1 if index + 1 < size else (0 if closed else None)
        add_with_dependencies(
            registry, f"r{index}", [] if target is None else [f"r{target}"]
        )
    if closed:
        with pytest.raises(GraphError) as info:
            registry.check()
        (problem,) = info.value.problems
        assert isinstance(problem, DependencyCycleError)
        assert len(problem.cycle) == size + 1
        assert problem.cycle[:2] == ("r0", "r1")
    else:
        assert registry.check()[:2] == (f"r{size - 1}", f"r{size - 2}")


# --- random graphs with planted problems --------------------------------------


@dataclass(frozen=True)
class DrawnGraph:
    """A registry's dependencies, in registration order, and what to validate."""

    dependencies: dict[str, tuple[str, ...]]
    roots: tuple[str, ...] | None

    def registry(self) -> Registry:
        registry = Registry()
        for name, targets in self.dependencies.items():
            add_with_dependencies(registry, name, targets)
        return registry


@st.composite
def drawn_graphs(draw: st.DrawFn) -> DrawnGraph:
    """Draw a DAG, then plant back edges, self-loops, missing and unknown names.

    Back edges close cycles anywhere: inside one another, upstream or
    downstream of each other, or next to missing names.
    """
    size = draw(st.integers(1, 12))
    names = [f"r{index}" for index in range(size)]
    # Dependencies point to lower indexes; registration order is shuffled.
    edges: dict[str, list[str]] = {
        name: draw(st.lists(st.sampled_from(names[:index]), unique=True, max_size=3))
        if index
        else []
        for index, name in enumerate(names)
    }
    planted = draw(
        st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names)), max_size=4)
    )
    for source, target in planted:
        if target not in edges[source]:
            edges[source].append(target)
    missing = draw(
        st.lists(
            st.tuples(st.sampled_from(names), st.sampled_from(["m0", "m1", "m2"])),
            max_size=3,
        )
    )
    for source, target in missing:
        if target not in edges[source]:
            edges[source].append(target)
    order = draw(st.permutations(names))
    dependencies = {name: tuple(edges[name]) for name in order}
    roots: tuple[str, ...] | None = None
    if draw(st.booleans()):
        candidates = [*names, "u0", "u1"]
        roots = tuple(draw(st.lists(st.sampled_from(candidates), unique=True)))
    return DrawnGraph(dependencies, roots)


def reachable_from(
    start: Sequence[str], edges: Mapping[str, Sequence[str]]
) -> set[str]:
    """Every registered name reachable from `start` (inclusive), following edges."""
    seen = {name for name in start if name in edges}
    queue = deque(seen)
    while queue:
        for target in edges[queue.popleft()]:
            if target in edges and target not in seen:
                seen.add(target)
                queue.append(target)
    return seen


def shortest_cycle_length(start: str, edges: Mapping[str, Sequence[str]]) -> int:
    """The number of edges of the shortest cycle through `start`."""
    distance = {start: 0}
    queue = deque([start])
    while queue:
        name = queue.popleft()
        for target in edges[name]:
            if target == start:
                return distance[name] + 1
            if target in edges and target not in distance:
                distance[target] = distance[name] + 1
                queue.append(target)
    raise AssertionError(start)  # pragma: no cover  # only called on a cycle


def expected_problems(
    graph: DrawnGraph,
) -> tuple[list[str], list[tuple[str, str]], list[frozenset[str]]]:
    """Work out, by brute force, the unknown roots, missing names and cycle groups."""
    edges = graph.dependencies
    roots = list(edges) if graph.roots is None else list(graph.roots)
    unknown = [root for root in roots if root not in edges]
    needed = reachable_from(roots, edges)
    missing = sorted(
        (name, target)
        for name in needed
        for target in edges[name]
        if target not in edges
    )
    # Within what is needed, nothing downstream is outside it.
    reach = {name: reachable_from(edges[name], edges) for name in needed}
    groups = {
        frozenset(other for other in reach[name] if name in reach[other])
        for name in needed
        if name in reach[name]
    }
    registration = list(edges)
    ordered = sorted(groups, key=lambda group: min(map(registration.index, group)))
    return unknown, missing, ordered


@settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, database=None, deadline=None)
@given(graph=drawn_graphs())
def test_every_planted_problem_is_reported_and_nothing_else(graph: DrawnGraph) -> None:
    """Random graphs: each problem is reported once, in order; valid graphs pass."""
    unknown, missing, groups = expected_problems(graph)
    registry = graph.registry()
    bundle = None if graph.roots is None else bundle_of(graph.roots)
    edges = graph.dependencies
    if not (unknown or missing or groups):
        order = registry.check(bundle)
        roots = list(edges) if graph.roots is None else graph.roots
        assert set(order) == reachable_from(roots, edges)
        position = {name: index for index, name in enumerate(order)}
        for name in order:
            assert all(position[target] < position[name] for target in edges[name])
        return
    with pytest.raises(GraphError) as info:
        registry.check(bundle)
    problems = info.value.problems
    kinds = [type(problem) for problem in problems]
    # Unknown names first, then missing dependencies, then cycles.
    assert kinds == sorted(
        kinds,
        key=[UnknownResourceError, MissingDependencyError, DependencyCycleError].index,
    )
    assert [
        p.resource_name for p in problems if type(p) is UnknownResourceError
    ] == unknown
    assert (
        sorted(
            (p.resource_name, p.dependency_name)
            for p in problems
            if isinstance(p, MissingDependencyError)
        )
        == missing
    )
    cycles = [p.cycle for p in problems if isinstance(p, DependencyCycleError)]
    assert len(cycles) == len(groups)
    registration = list(edges)
    for cycle, group in zip(cycles, groups, strict=True):
        assert cycle[0] == cycle[-1] == min(group, key=registration.index)
        assert len(set(cycle[:-1])) == len(cycle) - 1
        assert set(cycle) <= group
        assert all(b in edges[a] for a, b in itertools.pairwise(cycle))
        assert len(cycle) - 1 == shortest_cycle_length(cycle[0], edges)
    # The same graph gives the same report, word for word.
    with pytest.raises(GraphError) as again:
        graph.registry().check(bundle)
    assert str(again.value) == str(info.value)
