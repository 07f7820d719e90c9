"""Validating and ordering the dependency graph (pure and synchronous).

A `Plan` is what the orchestrator runs: the resources a lifespan needs, in
topological order (ties broken by registration order), with each node's
dependencies and dependents as indexes into that order.
"""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lifespan_kit._resource import Resource
from lifespan_kit.errors import (
    DependencyCycleError,
    GraphError,
    LifespanKitError,
    MissingDependencyError,
    UnknownResourceError,
)

_MAX_LISTED_NAMES = 12


@dataclass(frozen=True, slots=True)
class Plan:
    """The validated subgraph a lifespan starts, in start order.

    Attributes:
        resources: The resources, in start order.
        dependencies: For each position, the positions it depends on.
        dependents: For each position, the positions that depend on it.
        paths: For each position, the dependency path from a requested resource.
    """

    resources: tuple[Resource[object], ...]
    dependencies: tuple[tuple[int, ...], ...]
    dependents: tuple[tuple[int, ...], ...]
    paths: tuple[tuple[str, ...], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The resource names, in start order."""
        return tuple(resource.name for resource in self.resources)


def suggest(name: str, known: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return (close matches, every name if the list is short) for an error."""
    close = tuple(difflib.get_close_matches(name, known, n=3))
    listed = tuple(known) if len(known) <= _MAX_LISTED_NAMES else ()
    return close, listed


def build_plan(
    registered: Mapping[str, Resource[object]],
    roots: Sequence[str] | None,
    *,
    root_context: str = "requested",
) -> Plan:
    """Validate the subgraph reachable from `roots` and order it.

    Args:
        registered: Every resource, in registration order.
        roots: The names to start, or None for every resource.
        root_context: How to describe a root in an error ("field of Resources").

    Returns:
        The plan to run.

    Raises:
        GraphError: With every unknown name, missing dependency and cycle found.
    """
    problems: list[LifespanKitError] = []
    known = list(registered)
    if roots is None:
        roots = known
    paths: dict[str, tuple[str, ...]] = {}
    stack: list[str] = []
    for root in reversed(roots):
        if root in registered:
            stack.append(root)
            paths.setdefault(root, (root,))
        else:
            close, listed = suggest(root, known)
            problems.append(
                UnknownResourceError(
                    root, context=root_context, suggestions=close, available=listed
                )
            )
    _collect(registered, stack, paths, problems)
    needed = [name for name in registered if name in paths]
    if not problems:
        order = _topological_order(registered, needed, problems)
        if not problems:
            return _make_plan(registered, order, paths)
    raise GraphError(problems)


def _collect(
    registered: Mapping[str, Resource[object]],
    stack: list[str],
    paths: dict[str, tuple[str, ...]],
    problems: list[LifespanKitError],
) -> None:
    known = list(registered)
    while stack:
        name = stack.pop()
        path = paths[name]
        for dependency in registered[name].dependencies:
            target = dependency.resource_name
            if target in paths:
                continue
            if target not in registered:
                close, listed = suggest(target, known)
                problems.append(
                    MissingDependencyError(
                        name,
                        dependency_name=target,
                        parameter=dependency.parameter,
                        dependency_path=path,
                        suggestions=close,
                        available=listed,
                    )
                )
                continue
            paths[target] = (*path, target)
            stack.append(target)


def _topological_order(
    registered: Mapping[str, Resource[object]],
    needed: list[str],
    problems: list[LifespanKitError],
) -> list[str]:
    rank = {name: index for index, name in enumerate(needed)}
    waiting = dict.fromkeys(needed, 0)
    dependents: dict[str, list[str]] = {name: [] for name in needed}
    for name in needed:
        for target in _unique_targets(registered[name]):
            waiting[name] += 1
            dependents[target].append(name)
    ready = [rank[name] for name in needed if waiting[name] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = needed[heapq.heappop(ready)]
        order.append(name)
        for dependent in dependents[name]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, rank[dependent])
    if len(order) < len(needed):
        blocked = [name for name in needed if waiting[name] > 0]
        problems.extend(DependencyCycleError(c) for c in _cycles(registered, blocked))
    return order


def _unique_targets(resource: Resource[object]) -> dict[str, None]:
    return dict.fromkeys(d.resource_name for d in resource.dependencies)


def _cycles(
    registered: Mapping[str, Resource[object]], blocked: list[str]
) -> list[tuple[str, ...]]:
    """Find one cycle through each group of blocked nodes, each reported once."""
    candidates = set(blocked)
    seen: set[str] = set()
    cycles: list[tuple[str, ...]] = []
    for start in blocked:
        if start in seen:
            continue
        trail: list[str] = []
        position: dict[str, int] = {}
        name = start
        # Every blocked node has a blocked dependency, so this walk must loop.
        while name not in position and name not in seen:
            position[name] = len(trail)
            trail.append(name)
            name = next(t for t in _unique_targets(registered[name]) if t in candidates)
        seen.update(trail)
        if name in position:
            loop = trail[position[name] :]
            cycles.append((*loop, loop[0]))
    return cycles


def _make_plan(
    registered: Mapping[str, Resource[object]],
    order: list[str],
    paths: dict[str, tuple[str, ...]],
) -> Plan:
    index = {name: position for position, name in enumerate(order)}
    resources = tuple(registered[name] for name in order)
    dependencies = tuple(
        tuple(index[target] for target in _unique_targets(resource))
        for resource in resources
    )
    dependents: list[list[int]] = [[] for _ in order]
    for position, targets in enumerate(dependencies):
        for target in targets:
            dependents[target].append(position)
    return Plan(
        resources=resources,
        dependencies=dependencies,
        dependents=tuple(tuple(d) for d in dependents),
        paths=tuple(paths[name] for name in order),
    )
