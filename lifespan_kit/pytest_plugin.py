"""pytest plugin: the resources of a registry become test fixtures.

pytest loads it through the ``pytest11`` entry point. It does nothing until the
``lifespan_kit_registry`` ini option names a registry::

    [tool.pytest.ini_options]
    lifespan_kit_registry = "myapp.resources:registry"
    lifespan_kit_scope = "session"              # the default lifetime
    lifespan_kit_scopes = ["db = module"]       # per resource

Then every resource is a fixture of the same name (``lifespan_kit_prefix``
prepends a prefix), and ``@pytest.mark.lifespan_kit(db=FakeDatabase())`` on a
test, a class or a module replaces resources there. See the pytest page of the
docs for the whole story.

Async tests get resources on their own event loop, pytest-asyncio's or anyio's
(asyncio or trio); sync tests get them from a background loop. Each group of
resources enters and exits in one host task (see `lifespan_kit._pytest_layers`).

Importing this module loads neither the core library nor pydantic: pytest
imports it in every run of every project where lifespan_kit is installed.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal, cast

import pytest

if TYPE_CHECKING:
    from typing import Protocol

    from lifespan_kit._models import Bundle
    from lifespan_kit._pytest_layers import State
    from lifespan_kit._registry import Registry

    class _FixtureManager(Protocol):
        def getfixturedefs(
            self, argname: str, node: pytest.Session
        ) -> Sequence[pytest.FixtureDef[object]] | None: ...


__all__ = ["MARKER", "SCOPES", "Scope"]

# pytest leaves the frames of this module out of failure reports, so that a
# report shows the test and the resource code the user wrote.
__tracebackhide__ = True

Scope = Literal["session", "package", "module", "class", "function"]
"""A pytest fixture scope: how long a resource fixture's value lives.

Example:
    ```python
    from lifespan_kit.pytest_plugin import Scope

    scope: Scope = "module"  # as in `lifespan_kit_scopes = db = module`
    ```
"""

SCOPES: Final[tuple[Scope, ...]] = (
    "session",
    "package",
    "module",
    "class",
    "function",
)
"""Every scope, widest first: a resource lives no longer than its dependencies.

Example:
    ```python
    from lifespan_kit.pytest_plugin import SCOPES

    assert SCOPES.index("session") < SCOPES.index("function")
    ```
"""

MARKER: Final = "lifespan_kit"
"""The marker that replaces resources for a test, a class or a module.

Example:
    ```python
    import pytest

    @pytest.mark.lifespan_kit(clock="fixed")
    def test_clock(clock: str) -> None:
        assert clock == "fixed"
    ```
"""

_STATE = pytest.StashKey["State"]()
_SETTINGS = pytest.StashKey["Settings"]()
_RUNNERS = pytest.StashKey["dict[str, tuple[object, pytest.FixtureDef[object]]]"]()
# Where the resource fixtures are kept, in a module or a conftest.
_FIXTURE_KEY: Final = "_lifespan_kit_fixture_"
# Resource fixtures to check for clashes: (fixtures, where from, from a conftest).
_Check = tuple[dict[str, object], str, bool]
_TO_CHECK = pytest.StashKey["list[_Check]"]()
_REGISTRY_FIXTURE = "lifespan_kit_registry"
# pytest-asyncio's event loops: one runner fixture per loop scope.
_RUNNER_FIXTURES: Final = frozenset(f"_{scope}_scoped_runner" for scope in SCOPES)
# Where pytest itself registers the fixtures of a conftest (its plugin name).
_CONFTEST_SUFFIX: Final = "conftest.py"


class Settings:
    """The plugin's ini options, read once."""

    __slots__ = (
        "bundle",
        "default_scope",
        "prefix",
        "registry",
        "registry_path",
        "scopes",
    )

    registry: Registry | None
    registry_path: str
    default_scope: int
    scopes: Mapping[str, int]
    prefix: str
    bundle: type[Bundle] | None

    def __init__(
        self,
        registry: Registry | None,
        registry_path: str,
        default_scope: int,
        scopes: Mapping[str, int],
        prefix: str,
        bundle: type[Bundle] | None,
    ) -> None:
        self.registry = registry
        self.registry_path = registry_path
        self.default_scope = default_scope
        self.scopes = scopes
        self.prefix = prefix
        self.bundle = bundle


def scope_index(scope: str, where: str) -> int:
    """Return the position of `scope` in `SCOPES`, or stop pytest with a usage error."""
    if scope not in SCOPES:
        message = f"scope {scope!r} {where} is not one of {', '.join(SCOPES)}."
        raise pytest.UsageError(message)
    return SCOPES.index(scope)


# --- configuration -------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the ini options (all start with ``lifespan_kit_``)."""
    parser.addini(
        "lifespan_kit_registry",
        "module:attribute of the Registry whose resources become fixtures",
        default="",
    )
    parser.addini(
        "lifespan_kit_scope",
        f"how long a resource fixture lives by default: one of {', '.join(SCOPES)}",
        default="session",
    )
    parser.addini(
        "lifespan_kit_scopes",
        "scopes of single resources, one `name = scope` per line",
        type="linelist",
        default=[],
    )
    parser.addini(
        "lifespan_kit_prefix",
        "prefix of the resource fixtures' names (default: none)",
        default="",
    )
    parser.addini(
        "lifespan_kit_bundle",
        "module:attribute of a Bundle class served by the lifespan_kit_bundle fixture",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Read the ini options and register one fixture per resource."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**replacements): replace resources (values or factories) for "
        "the marked test, class or module.",
    )
    settings = _read_settings(config)
    config.stash[_SETTINGS] = settings
    config.stash[_RUNNERS] = {}
    to_check = config.stash[_TO_CHECK] = []
    if settings.registry is not None:
        fixtures = _resource_fixtures(settings.registry, settings.prefix)
        module = types.ModuleType("lifespan_kit.pytest_plugin.resource_fixtures")
        module.__dict__.update(fixtures)
        config.pluginmanager.register(module, "lifespan_kit-resource-fixtures")
        to_check.append(
            (fixtures, f"lifespan_kit_registry = {settings.registry_path!r}", False)
        )
    manager = id(config.pluginmanager)
    _PREFIXES[manager] = settings.prefix
    for name, conftest in _PENDING_CONFTESTS.pop(manager, []):
        fixtures = _add_conftest_fixtures(conftest, settings.prefix)
        to_check.append((fixtures, f"the lifespan_kit_registry of {name}", True))


_PREFIXES: dict[int, str] = {}
_PENDING_CONFTESTS: dict[int, list[tuple[str | None, types.ModuleType]]] = {}
_PENDING_CHECKS: dict[int, list[_Check]] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_plugin_registered(
    plugin: object, plugin_name: str | None, manager: pytest.PytestPluginManager
) -> None:
    """Give a conftest that sets ``lifespan_kit_registry`` its resource fixtures.

    It runs before pytest reads the conftest's fixtures, so they are scoped to
    the conftest's directory, like fixtures written there by hand.
    """
    registry_module = sys.modules.get("lifespan_kit._registry")
    if registry_module is None:  # no Registry exists yet, so no conftest holds one
        return
    registry = getattr(plugin, _REGISTRY_FIXTURE, None)
    registry_type = cast("type[Registry]", registry_module.Registry)
    if not (
        isinstance(plugin, types.ModuleType) and isinstance(registry, registry_type)
    ):
        return
    prefix = _PREFIXES.get(id(manager))
    if prefix is None:  # an initial conftest: pytest is not configured yet
        _PENDING_CONFTESTS.setdefault(id(manager), []).append((plugin_name, plugin))
        return
    fixtures = _add_conftest_fixtures(plugin, prefix)
    source = f"the lifespan_kit_registry of {plugin_name}"
    session = manager.get_plugin("session")
    if (
        session is None
    ):  # pragma: no cover  # registered by another plugin's pytest_configure
        _PENDING_CHECKS.setdefault(id(manager), []).append((fixtures, source, True))
        return
    clashes = _clashes(cast("pytest.Session", session), fixtures, in_conftest=True)
    _raise_clashes(clashes, source, in_conftest=True)


def _add_conftest_fixtures(
    conftest: types.ModuleType, prefix: str
) -> dict[str, object]:
    registry = cast("Registry", conftest.lifespan_kit_registry)

    @pytest.fixture(scope="session", name=_REGISTRY_FIXTURE)
    def conftest_registry() -> Registry:
        return registry

    fixtures = _resource_fixtures(registry, prefix)
    conftest.__dict__.update(fixtures)
    conftest.__dict__["_lifespan_kit_conftest_registry"] = conftest_registry
    return fixtures


def _read_settings(config: pytest.Config) -> Settings:
    registry_path = cast("str", config.getini("lifespan_kit_registry")).strip()
    bundle_path = cast("str", config.getini("lifespan_kit_bundle")).strip()
    registry = None
    if registry_path:
        from lifespan_kit._registry import Registry

        found = _import_object(registry_path, "lifespan_kit_registry")
        if not isinstance(found, Registry):
            message = (
                f"lifespan_kit_registry = {registry_path!r} is a "
                f"{type(found).__name__}, not a lifespan_kit Registry: "
                "point it at the `registry = Registry()` of your application."
            )
            raise pytest.UsageError(message)
        registry = found
    bundle = None
    if bundle_path:
        from lifespan_kit._models import Bundle

        found = _import_object(bundle_path, "lifespan_kit_bundle")
        if not (isinstance(found, type) and issubclass(found, Bundle)):
            message = (
                f"lifespan_kit_bundle = {bundle_path!r} is not a Bundle subclass: "
                "point it at a `class Resources(Bundle)` of your application."
            )
            raise pytest.UsageError(message)
        bundle = found
    scopes: dict[str, int] = {}
    for line in cast("list[str]", config.getini("lifespan_kit_scopes")):
        name, equals, scope = line.partition("=")
        if not equals:
            message = (
                f"lifespan_kit_scopes line {line!r} is not `name = scope`, "
                "e.g. `db = module`."
            )
            raise pytest.UsageError(message)
        scopes[name.strip()] = scope_index(scope.strip(), f"for {name.strip()!r}")
    if registry is not None:
        unknown = sorted(set(scopes) - {resource.name for resource in registry})
        if unknown:
            message = (
                f"lifespan_kit_scopes names {', '.join(map(repr, unknown))}, "
                f"which {registry_path!r} does not register."
            )
            raise pytest.UsageError(message)
    default = scope_index(
        cast("str", config.getini("lifespan_kit_scope")).strip(), "lifespan_kit_scope"
    )
    prefix = cast("str", config.getini("lifespan_kit_prefix")).strip()
    return Settings(registry, registry_path, default, scopes, prefix, bundle)


def _import_object(path: str, option: str) -> object:
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        message = (
            f"{option} = {path!r} is not `module:attribute`, "
            "e.g. `myapp.resources:registry`."
        )
        raise pytest.UsageError(message)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        message = (
            f"{option}: cannot import {module_name!r} ({exc}); "
            "set `pythonpath` in the pytest configuration or install the project."
        )
        raise pytest.UsageError(message) from exc
    try:
        return cast("object", getattr(module, attribute))
    except AttributeError:
        message = f"{option}: module {module_name!r} has no attribute {attribute!r}."
        raise pytest.UsageError(message) from None


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse resource fixtures that would replace pytest's or a plugin's fixtures."""
    to_check = session.config.stash[_TO_CHECK]
    to_check += _PENDING_CHECKS.pop(id(session.config.pluginmanager), [])
    for fixtures, source, in_conftest in to_check:
        clashes = _clashes(session, fixtures, in_conftest=in_conftest)
        _raise_clashes(clashes, source, in_conftest=in_conftest)


def _clashes(
    session: pytest.Session, fixtures: Mapping[str, object], *, in_conftest: bool
) -> dict[str, str]:
    """Map each resource fixture that shadows a plugin's fixture to that plugin.

    The ini option's registry is a plugin: its fixtures would replace pytest's
    and the plugins' everywhere, so each clash is refused. A conftest's
    registry gives that conftest's fixtures, which override a fixture of the
    same name in its directory as any conftest fixture does (a resource named
    `cache` is the tests' cache there). Refused even there: `request`, and a
    name that another fixture asks for (`tmp_path`, which `tmpdir` uses),
    since that fixture would be handed the resource.
    """
    ours = [
        key.removeprefix(_FIXTURE_KEY)
        for key in fixtures
        if key.startswith(_FIXTURE_KEY)
    ]
    conftests = {
        cast("str", getattr(plugin, "__name__", ""))
        for name, plugin in session.config.pluginmanager.list_name_plugin()
        if name and name.endswith(_CONFTEST_SUFFIX)
    }
    # pytest's fixture manager: the only place that knows every plugin's fixtures.
    fixture_manager = cast(
        "_FixtureManager", session.config.pluginmanager.get_plugin("funcmanage")
    )
    requested = _requested_by_fixtures(fixture_manager) if in_conftest else None
    clashes: dict[str, str] = {}
    for fixture_name in ours:
        if fixture_name == "request":  # pytest's own, built into every test
            clashes[fixture_name] = "pytest"
        if requested is not None and fixture_name not in requested:
            continue  # a conftest may override a fixture nothing else depends on
        for definition in fixture_manager.getfixturedefs(fixture_name, session) or ():
            home = definition.func.__module__
            is_ours = getattr(definition.func, "_lifespan_kit_resource", None)
            if is_ours is None and home not in conftests:
                clashes[fixture_name] = "pytest" if home.startswith("_pytest") else home
    return clashes


def _requested_by_fixtures(fixture_manager: object) -> set[str] | None:
    """Return every name a known fixture asks for, or None if it cannot be read."""
    # pytest keeps no public index of its fixtures: read its own, as pytest 9
    # (by name, then by node) or pytest 8 (by name) keeps it.
    by_node = getattr(fixture_manager, "_arg2node2fixturedefs", None)
    by_name = getattr(fixture_manager, "_arg2fixturedefs", None)
    lists: list[Sequence[pytest.FixtureDef[object]]]
    if isinstance(by_node, dict):
        nodes = cast(
            "dict[str, dict[object, list[pytest.FixtureDef[object]]]]", by_node
        )
        lists = [defs for per_node in nodes.values() for defs in per_node.values()]
    elif isinstance(by_name, dict):  # pragma: no cover  # pytest 8
        lists = list(
            cast("dict[str, list[pytest.FixtureDef[object]]]", by_name).values()
        )
    else:  # pragma: no cover  # a pytest that keeps them elsewhere: refuse clashes
        return None
    return {argument for defs in lists for d in defs for argument in d.argnames}


def _raise_clashes(
    clashes: Mapping[str, str], source: str, *, in_conftest: bool
) -> None:
    if not clashes:
        return
    why = (
        "other fixtures depend on those, and would be handed the resources"
        if in_conftest
        else "their fixtures would replace those everywhere"
    )
    lines = [
        f"  resource {name!r} would replace the fixture {name!r} of {owner}"
        for name, owner in sorted(clashes.items())
    ]
    first = min(clashes)
    message = "\n".join(
        [
            f"{source} has resources named like fixtures of pytest or of an "
            f"active plugin; {why}.",
            *lines,
            "  fix: set a prefix for the resource fixtures, e.g. "
            f'`lifespan_kit_prefix = "res_"` (the fixture becomes `res_{first}`), '
            "or rename the resource.",
        ]
    )
    raise pytest.UsageError(message)


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
def lifespan_kit_registry(pytestconfig: pytest.Config) -> Registry:
    """The registry the resource fixtures come from.

    It is the one the ``lifespan_kit_registry`` ini option (or conftest
    variable) names. Override this fixture in a ``conftest.py`` to replace
    resources for a whole directory. Resources live no longer than this
    fixture: keep the override session-scoped to share them across tests.

    Example:
        ```python
        import pytest

        @pytest.fixture(scope="session")
        def lifespan_kit_registry() -> Registry:
            return registry.override(db=FakeDatabase())
        ```
    """
    registry = pytestconfig.stash[_SETTINGS].registry
    if registry is None:
        message = (
            "no registry is configured: set `lifespan_kit_registry = "
            '"module:attribute"` in the pytest configuration.'
        )
        raise pytest.UsageError(message)
    return registry


@pytest.fixture(scope="session")
def lifespan_kit_overrides() -> Mapping[str, object]:
    """Replacements for each test that sees an override of this fixture.

    They apply like the ``lifespan_kit`` marker on a test, and beat markers;
    the override may use other fixtures and have any scope.

    Example:
        ```python
        from collections.abc import Mapping

        import pytest

        @pytest.fixture
        def lifespan_kit_overrides(tmp_path: object) -> Mapping[str, object]:
            return {"db": FakeDatabase()}
        ```
    """
    return types.MappingProxyType({})


@pytest.fixture
def lifespan_kit_bundle(
    lifespan_kit_registry: Registry,
    lifespan_kit_overrides: Mapping[str, object],
    request: pytest.FixtureRequest,
) -> Bundle:
    """The bundle class the ``lifespan_kit_bundle`` ini option names, filled.

    Its resources are this test's, with its overrides.

    Example:
        ```python
        def test_bundle(lifespan_kit_bundle: Resources) -> None:
            assert lifespan_kit_bundle.db is not None
        ```
    """
    bundle = request.config.stash[_SETTINGS].bundle
    if bundle is None:
        message = (
            "no bundle is configured: set `lifespan_kit_bundle = "
            '"module:Class"` in the pytest configuration.'
        )
        raise pytest.UsageError(message)
    from lifespan_kit._bundle import bundle_resource_names, create_bundle

    names = bundle_resource_names(bundle)
    state = _state(request.config)
    resolver = state.resolver(request, lifespan_kit_registry, lifespan_kit_overrides)
    values = [resolver.value(name) for name in names]
    return create_bundle(bundle, dict(zip(names, values, strict=True)))


def _resource_fixtures(registry: Registry, prefix: str) -> dict[str, object]:
    """Build one fixture per resource, keyed by a name no one else uses."""
    fixtures: dict[str, object] = {}
    for resource in registry:
        name = resource.name

        def resource_fixture(
            lifespan_kit_registry: Registry,
            lifespan_kit_overrides: Mapping[str, object],
            request: pytest.FixtureRequest,
            name: str = name,
        ) -> object:
            state = _state(request.config)
            resolver = state.resolver(
                request, lifespan_kit_registry, lifespan_kit_overrides
            )
            return resolver.value(name)

        fixture_name = f"{prefix}{name}"
        if fixture_name == "request":  # pytest refuses it: report it as a clash
            fixtures[f"{_FIXTURE_KEY}request"] = None
            continue
        resource_fixture.__doc__ = f"The value of resource {name!r}."
        resource_fixture._lifespan_kit_resource = name  # type: ignore[attr-defined]  # recognised by _clashes
        fixture = pytest.fixture(name=fixture_name)(resource_fixture)
        fixtures[f"{_FIXTURE_KEY}{fixture_name}"] = fixture
    return fixtures


def _state(config: pytest.Config) -> State:
    """Return the run's state, made on first use (it loads the core library)."""
    state = config.stash.get(_STATE, None)
    if state is None:
        from lifespan_kit._pytest_layers import State

        state = config.stash[_STATE] = State(
            config.stash[_SETTINGS], config.stash[_RUNNERS]
        )
    return state


# --- hooks that follow the run -------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """Watch the fixtures that decide where and how long resources live."""
    argname = fixturedef.argname
    if argname in _RUNNER_FIXTURES:
        runner = yield
        # Layers on this loop stop when its runner fixture ends (see State).
        request.config.stash[_RUNNERS][argname] = (runner, fixturedef)
        return runner
    if argname == "anyio_backend":
        backend = yield
        state = request.config.stash.get(_STATE, None)
        if state is not None:
            state.use_anyio_backend(backend)
        return backend
    if argname == _REGISTRY_FIXTURE:
        registry = yield
        _state(request.config).cap_registry(registry, fixturedef.scope)
        return registry
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Fail a test whose resource failed while it ran, naming the resource."""
    state = item.config.stash.get(_STATE, None)
    if state is None:
        return (yield)
    try:
        result = yield
    except BaseException:
        state.raise_runtime_failure(item)
        raise
    state.raise_runtime_failure(item)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Before an async test on anyio, give back a runner of another backend."""
    state = pyfuncitem.config.stash.get(_STATE, None)
    backend = pyfuncitem.funcargs.get("anyio_backend")
    if state is not None and backend is not None:
        state.use_anyio_backend(backend)
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    """After a test, give anyio's runner back unless the next test runs on it."""
    try:
        return (yield)
    finally:
        state = item.config.stash.get(_STATE, None)
        if state is not None:
            state.after_test(item, nextitem)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop what an interrupted run left, and the background loop."""
    state = session.config.stash.get(_STATE, None)
    if state is not None:
        state.close()
