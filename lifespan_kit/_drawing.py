"""Drawing a registry's dependency graph as text, Mermaid or DOT.

`lifespan-kit graph` draws the resources a lifespan would start, by startup
wave: a resource's wave is the length of its longest chain of dependencies.
An invalid graph is drawn too, since that is the picture a person debugging
it wants: a name that is not registered is a node of its own, and every edge
on a cycle is marked (the error prints one cycle per group of resources that
depend on each other; the drawing shows them all).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from lifespan_kit._graph import strongly_connected
from lifespan_kit._registry import Registry
from lifespan_kit._resource import Resource
from lifespan_kit.errors import (
    LifespanKitError,
    MissingDependencyError,
    UnknownResourceError,
)

_KIND_LABELS: Final = {
    "async_generator": "async generator",
    "coroutine": "async function",
    "generator": "generator",
    "callable": "callable",
    "value": "value",
    "background": "background task",
}
_NOT_REGISTERED: Final = "not registered"


@dataclass
class Node:
    """One resource as the graph shows it."""

    name: str
    kind: str
    timeouts: str
    dependencies: list[str]
    outcome: str | None = None
    wave: int = 0
    is_missing: bool = False
    cycle_dependencies: set[str] = field(default_factory=set[str])

    @property
    def style(self) -> str:
        """How the node is coloured: ok, failed, rolled_back, not_started, missing."""
        if self.is_missing:
            return "missing"
        if self.outcome in (None, "not started"):
            return "not_started"
        assert self.outcome is not None
        if "fail" in self.outcome:
            return "failed"
        return "rolled_back" if self.outcome == "rolled back" else "ok"


def create_nodes(
    registry: Registry,
    names: Sequence[str],
    *,
    outcomes: Mapping[str, str] | None = None,
    problems: Sequence[LifespanKitError] = (),
) -> list[Node]:
    """The nodes to draw: `names` (registered), then the names missing from it.

    Args:
        registry: Where the resources are registered.
        names: The registered resources to draw, in the order to draw them.
        outcomes: Each resource's outcome in a run, from `run --report-file`.
        problems: The graph's problems, if it is invalid: their missing names
            become nodes. Cycles are marked whatever the problems say.
    """
    nodes = {
        name: Node(
            name,
            kind=_KIND_LABELS[registry[name].kind],
            timeouts=_timeouts(registry[name], registry),
            dependencies=list(
                dict.fromkeys(d.resource_name for d in registry[name].dependencies)
            ),
            outcome=None if outcomes is None else outcomes.get(name, "not started"),
        )
        for name in names
    }
    for problem in problems:
        if isinstance(problem, MissingDependencyError):
            _add_missing(nodes, problem.dependency_name)
        elif isinstance(problem, UnknownResourceError):
            _add_missing(nodes, str(problem.resource_name))
    _mark_cycles(nodes)
    _set_waves(nodes)
    return list(nodes.values())


def reachable_names(registry: Registry, roots: Sequence[str] | None) -> list[str]:
    """The registered names `roots` need, themselves included, in registration order.

    Unlike a lifespan's plan, this works on an invalid graph: names that are
    not registered are skipped, and cycles end where they began.
    """
    seen: set[str] = set()
    stack = [name for name in (roots or []) if name in registry]
    if roots is None:
        stack = [resource.name for resource in registry]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(
                d.resource_name
                for d in registry[name].dependencies
                if d.resource_name in registry
            )
    return [resource.name for resource in registry if resource.name in seen]


def _mark_cycles(nodes: Mapping[str, Node]) -> None:
    """Mark each edge on a cycle: both ends in one strongly connected group."""
    names = list(nodes)
    group = {
        name: number
        for number, members in enumerate(
            strongly_connected(names, {n: nodes[n].dependencies for n in names})
        )
        for name in members
    }
    for node in nodes.values():
        # Also a resource that depends on itself: a group of one.
        node.cycle_dependencies = {
            d for d in node.dependencies if group[d] == group[node.name]
        }


def _add_missing(nodes: dict[str, Node], name: str) -> None:
    nodes.setdefault(
        name, Node(name, kind=_NOT_REGISTERED, timeouts="-", dependencies=[])
    )
    nodes[name].is_missing = True


def _set_waves(nodes: Mapping[str, Node]) -> None:
    """Set each node's wave: its longest chain of dependencies, cycles cut.

    A depth-first search in drawing order; an edge back to a node still on
    the search path closes a cycle and does not count. In the order the
    search finishes nodes, every counted dependency comes first.
    """
    finished: list[str] = []
    counted: dict[str, list[str]] = {}
    state: dict[str, bool] = {}  # False: on the path; True: finished
    for root in nodes:
        if root in state:
            continue
        state[root] = False
        counted[root] = []
        work = [(root, iter(nodes[root].dependencies))]
        while work:
            name, pending = work[-1]
            for dependency in pending:
                if state.get(dependency) is False:
                    continue  # closes a cycle
                counted[name].append(dependency)
                if dependency not in state:
                    state[dependency] = False
                    counted[dependency] = []
                    work.append((dependency, iter(nodes[dependency].dependencies)))
                    break
            else:
                work.pop()
                state[name] = True
                finished.append(name)
    for name in finished:
        node = nodes[name]
        node.wave = 1 + max((nodes[d].wave for d in counted[name]), default=-1)


def _timeouts(resource: Resource[object], registry: Registry) -> str:
    start, stop, _ = resource.timeouts.resolve(registry.defaults)
    if resource.kind == "value":
        return "-"
    if resource.kind == "background":
        return f"stop {_seconds(stop)}"
    return f"start {_seconds(start)}, stop {_seconds(stop)}"


def _seconds(value: float) -> str:
    return "none" if value == float("inf") else f"{value:g}s"


def _by_wave(nodes: list[Node]) -> Iterator[tuple[int, list[Node]]]:
    for wave in sorted({node.wave for node in nodes}):
        yield wave, [node for node in nodes if node.wave == wave]


def _edges(nodes: list[Node]) -> Iterator[tuple[str, str, bool]]:
    """Each edge, from dependency to dependent, and whether it is in a cycle."""
    for node in nodes:
        for dependency in node.dependencies:
            yield dependency, node.name, dependency in node.cycle_dependencies


def render_text(nodes: list[Node]) -> Iterator[str]:
    """A table: one row per resource, by wave; problems said in the cells."""
    columns = ["wave", "resource", "kind", "timeouts", "depends on"]
    with_outcome = any(node.outcome is not None for node in nodes)
    if with_outcome:
        columns.append("outcome")
    missing = {node.name for node in nodes if node.is_missing}
    rows = [
        [
            str(node.wave),
            node.name,
            node.kind,
            node.timeouts,
            ", ".join(_dependency(node, d, missing) for d in node.dependencies) or "-",
            *([node.outcome or ""] if with_outcome else []),
        ]
        for node in sorted(nodes, key=lambda node: node.wave)
    ]
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        yield "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()


def _dependency(node: Node, dependency: str, missing: set[str]) -> str:
    if dependency in node.cycle_dependencies:
        return f"{dependency} (cycle)"
    return f"{dependency} ({_NOT_REGISTERED})" if dependency in missing else dependency


_MERMAID_STYLES: Final = {
    "ok": "fill:#e6f4ea,stroke:#1e8e3e",
    "failed": "fill:#fce8e6,stroke:#d93025,stroke-width:2px",
    "rolled_back": "fill:#fef7e0,stroke:#e37400",
    "not_started": "fill:#f1f3f4,stroke:#9aa0a6,stroke-dasharray:4 2",
    "missing": "fill:#fce8e6,stroke:#d93025,stroke-dasharray:4 2",
}
_MERMAID_CYCLE: Final = "stroke:#d93025,stroke-width:2px"
_DOT_STYLES: Final = {
    "ok": 'style=filled, fillcolor="#e6f4ea", color="#1e8e3e"',
    "failed": 'style=filled, fillcolor="#fce8e6", color="#d93025", penwidth=2',
    "rolled_back": 'style=filled, fillcolor="#fef7e0", color="#e37400"',
    "not_started": 'style=dashed, color="#9aa0a6"',
    "missing": 'style=dashed, color="#d93025", fontcolor="#d93025"',
}
_DOT_CYCLE: Final = 'color="#d93025", fontcolor="#d93025", penwidth=2, label="cycle"'


def render_mermaid(nodes: list[Node]) -> Iterator[str]:
    """A Mermaid flowchart: a subgraph per wave, edges from dependency to dependent."""
    # Node ids get a prefix: a resource may be named like a Mermaid keyword.
    yield "flowchart LR"
    for wave, members in _by_wave(nodes):
        yield f'    subgraph wave_{wave} ["wave {wave}"]'
        for node in members:
            label = f"{node.name}<br/>{node.kind}<br/>{node.timeouts}"
            if node.is_missing:
                label = f"{node.name}<br/><b>{_NOT_REGISTERED}</b>"
            elif node.outcome is not None:
                label += f"<br/><b>{node.outcome}</b>"
            yield f'        r_{node.name}["{label}"]'
        yield "    end"
    cycle_edges: list[int] = []
    for index, (dependency, dependent, in_cycle) in enumerate(_edges(nodes)):
        if in_cycle:
            cycle_edges.append(index)
            yield f"    r_{dependency} -->|cycle| r_{dependent}"
        else:
            yield f"    r_{dependency} --> r_{dependent}"
    if cycle_edges:
        yield f"    linkStyle {','.join(map(str, cycle_edges))} {_MERMAID_CYCLE}"
    styled = [
        node
        for node in nodes
        if node.is_missing or any(n.outcome is not None for n in nodes)
    ]
    for style in dict.fromkeys(node.style for node in styled):
        yield f"    classDef {style} {_MERMAID_STYLES[style]}"
    for node in styled:
        yield f"    class r_{node.name} {node.style}"


def render_dot(nodes: list[Node]) -> Iterator[str]:
    """A Graphviz digraph: a labelled cluster per wave, a box per resource."""
    yield "digraph resources {"
    yield "    rankdir=LR;"
    yield "    newrank=true;"
    yield "    node [shape=box];"
    for wave, members in _by_wave(nodes):
        yield f"    subgraph cluster_wave_{wave} {{"
        yield f'        label="wave {wave}";'
        yield '        style=dashed; color="#9aa0a6"; rank=same;'
        for node in members:
            yield f"        {_dot_node(node)}"
        yield "    }"
    for dependency, dependent, in_cycle in _edges(nodes):
        attributes = f" [{_DOT_CYCLE}]" if in_cycle else ""
        yield f'    "{dependency}" -> "{dependent}"{attributes};'
    yield "}"


def _dot_node(node: Node) -> str:
    label = f"{node.name}\\n{node.kind}\\n{node.timeouts}"
    attributes = ""
    if node.is_missing:
        label = f"{node.name}\\n{_NOT_REGISTERED}"
        attributes = f", {_DOT_STYLES['missing']}"
    elif node.outcome is not None:
        label += f"\\n{node.outcome}"
        attributes = f", {_DOT_STYLES[node.style]}"
    return f'"{node.name}" [label="{label}"{attributes}];'
