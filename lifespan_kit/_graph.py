"""Validating and ordering the dependency graph (pure and synchronous).

A `Plan` is what the orchestrator runs: the resources a lifespan needs, in
topological order (ties broken by registration order), with each node's
dependencies and dependents as indexes into that order.
"""

from __future__ import annotations

import heapq
from collections import deque
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
    import difflib  # only for an error: the import stays cheap

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
    for root in roots:
        if root not in registered:
            close, listed = suggest(root, known)
            problems.append(
                UnknownResourceError(
                    root, context=root_context, suggestions=close, available=listed
                )
            )
        elif root not in paths:
            stack.append(root)
            paths[root] = (root,)
    stack.reverse()  # the first root is explored first
    _collect(registered, stack, paths, problems)
    targets = {
        name: _unique_targets(resource)
        for name, resource in registered.items()
        if name in paths
    }
    # Ordered even when problems were found already: a cycle is reported
    # alongside missing dependencies and unknown names, not after they are fixed.
    order = _topological_order(targets, problems)
    if problems:
        raise GraphError(problems)
    return _make_plan(registered, order, targets, paths)


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
    targets: Mapping[str, Mapping[str, None]], problems: list[LifespanKitError]
) -> list[str]:
    """Order the keys of `targets` (Kahn's algorithm); report every cycle group.

    `targets` maps each needed resource, in registration order, to the names
    it depends on.
    """
    needed = list(targets)
    rank = {name: index for index, name in enumerate(needed)}
    waiting = dict.fromkeys(needed, 0)
    dependents: dict[str, list[str]] = {name: [] for name in needed}
    for name in needed:
        for target in targets[name]:
            # A missing dependency (already reported) has no entry: skip it.
            waiters = dependents.get(target)
            if waiters is not None:
                waiting[name] += 1
                waiters.append(name)
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
        # What never became ready is in a cycle, or depends on one.
        blocked = [name for name in needed if waiting[name] > 0]
        problems.extend(
            DependencyCycleError(cycle) for cycle in _cycles(targets, blocked)
        )
    return order


def _unique_targets(resource: Resource[object]) -> dict[str, None]:
    return dict.fromkeys(d.resource_name for d in resource.dependencies)


def _cycles(
    targets: Mapping[str, Mapping[str, None]], blocked: list[str]
) -> list[tuple[str, ...]]:
    """Return one cycle per group of resources that depend on each other.

    A group is a strongly connected component of the blocked subgraph with
    more than one resource, or a resource that depends on itself. Its cycle
    starts at its first resource in `blocked` order and is the shortest one
    back to it; the groups come in that order too.
    """
    rank = {name: index for index, name in enumerate(blocked)}
    inside = {name: [t for t in targets[name] if t in rank] for name in blocked}
    cycles: list[tuple[str, ...]] = []
    for component in strongly_connected(blocked, inside):
        start = min(component, key=rank.__getitem__)
        if len(component) > 1 or start in inside[start]:
            cycles.append(_shortest_cycle(start, set(component), inside))
    cycles.sort(key=lambda cycle: rank[cycle[0]])
    return cycles


def strongly_connected(
    nodes: list[str], targets: Mapping[str, list[str]]
) -> list[list[str]]:
    """Tarjan's algorithm, iterative: a long chain never hits the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(targets[root]))]
        while work:
            name, pending = work[-1]
            for target in pending:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(targets[target])))
                    break
                if target in on_stack:
                    low[name] = min(low[name], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[name])
                if low[name] == index[name]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == name:
                            break
                    components.append(component)
    return components


def _shortest_cycle(
    start: str, component: set[str], targets: Mapping[str, list[str]]
) -> tuple[str, ...]:
    """Find the shortest cycle through `start` inside its component (breadth first).

    The search always ends with a return: in a strongly connected component
    with a cycle, every resource has a path back to `start`.
    """
    parent: dict[str, str] = {start: start}
    queue = deque([start])
    while True:
        name = queue.popleft()
        for target in targets[name]:
            if target == start:
                path = [name]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return (*reversed(path), start)
            if target in component and target not in parent:
                parent[target] = name
                queue.append(target)


def _make_plan(
    registered: Mapping[str, Resource[object]],
    order: list[str],
    targets: Mapping[str, Mapping[str, None]],
    paths: dict[str, tuple[str, ...]],
) -> Plan:
    index = {name: position for position, name in enumerate(order)}
    resources = tuple(registered[name] for name in order)
    dependencies = tuple(
        tuple(index[target] for target in targets[name]) for name in order
    )
    dependents: list[list[int]] = [[] for _ in order]
    for position, positions in enumerate(dependencies):
        for target in positions:
            dependents[target].append(position)
    return Plan(
        resources=resources,
        dependencies=dependencies,
        dependents=tuple(tuple(d) for d in dependents),
        paths=tuple(paths[name] for name in order),
    )
