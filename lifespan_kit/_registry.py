"""`Registry`: the named resource definitions of an application."""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Final, NoReturn, TypeVar, cast, overload

import lifespan_kit
from lifespan_kit._bundle import (
    ResourceMap,
    bundle_resource_names,
    create_bundle,
)
from lifespan_kit._graph import Plan, build_plan, suggest
from lifespan_kit._lifespan import Lifespan
from lifespan_kit._report import Listener
from lifespan_kit._resource import (
    Resource,
    check_name,
    classify,
    create_resource,
    describe_origin,
)
from lifespan_kit._settings import Timeouts, create_timeouts, validate_concurrency
from lifespan_kit._types import (
    AsyncContextManagerLike,
    ContextManagerLike,
    FactoryKind,
    HealthCheck,
    ValueT,
)
from lifespan_kit.errors import (
    DuplicateResourceError,
    InvalidFactoryError,
    UnknownResourceError,
)

BundleT = TypeVar("BundleT", bound="lifespan_kit.Bundle")

AnyHealthCheck = Callable[[NoReturn], Awaitable[object] | object]
"""A health check for a value whose type the decorator does not know yet."""

BackgroundFunction = Callable[..., Awaitable[None]]
"""An async function that runs as a background task until it is cancelled."""

_ROOTS_ALL: Final = None


class Registry:
    """Named resource definitions, with the defaults they share.

    Register a resource with the [resource][lifespan_kit.Registry.resource]
    decorator or with [add][lifespan_kit.Registry.add]; start a set of them
    with [lifespan][lifespan_kit.Registry.lifespan].

    Args:
        start_timeout: Default seconds a resource may take to start (60).
        stop_timeout: Default seconds a resource may take to stop (5).
        health_timeout: Default seconds a health check may take (5).

    Raises:
        InvalidOptionError: When a timeout is not a number of seconds greater
            than 0 (a string or a bool is never converted).

    Example:
        ```python
        registry = Registry(stop_timeout=2)

        @registry.resource
        async def settings() -> AsyncIterator[Settings]:
            yield Settings()
        ```

    Added in 0.1.
    """

    def __init__(
        self,
        *,
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
        health_timeout: float | None = None,
    ) -> None:
        self._defaults = create_timeouts(
            None,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            health_timeout=health_timeout,
        )
        self._resources: dict[str, Resource[object]] = {}
        self._listeners: list[Listener] = []
        self._plans: dict[tuple[str, ...] | None, Plan] = {}

    def __repr__(self) -> str:
        return f"<Registry {list(self._resources)!r}>"

    def __contains__(self, name: object) -> bool:
        return name in self._resources

    def __iter__(self) -> Iterator[Resource[object]]:
        return iter(tuple(self._resources.values()))

    def __len__(self) -> int:
        return len(self._resources)

    @property
    def defaults(self) -> Timeouts:
        """The timeouts a resource inherits when it sets none of its own.

        ``resource.timeouts.resolve(registry.defaults)`` gives a resource's
        effective (start, stop, health) limits, in seconds.

        Added in 0.1.
        """
        return self._defaults

    def __getitem__(self, name: str) -> Resource[object]:
        """Return the resource registered as `name`.

        Raises:
            UnknownResourceError: With close matches, when there is none.
        """
        try:
            return self._resources[name]
        except KeyError:
            raise self._unknown(name, "looked up in the registry") from None

    # --- registering ---------------------------------------------------------

    @overload
    def resource(
        self, factory: Callable[..., AsyncIterator[ValueT]], /
    ) -> Resource[ValueT]: ...
    @overload
    def resource(
        self, factory: Callable[..., AsyncContextManagerLike[ValueT]], /
    ) -> Resource[ValueT]: ...
    @overload
    def resource(
        self, factory: Callable[..., ContextManagerLike[ValueT]], /
    ) -> Resource[ValueT]: ...
    @overload
    def resource(
        self, factory: Callable[..., Awaitable[ValueT]], /
    ) -> Resource[ValueT]: ...
    @overload
    def resource(
        self, factory: Callable[..., Iterator[ValueT]], /
    ) -> Resource[ValueT]: ...
    @overload
    def resource(self, factory: Callable[..., ValueT], /) -> Resource[ValueT]: ...
    @overload
    def resource(
        self,
        factory: None = None,
        /,
        *,
        name: str | None = None,
        depends: Mapping[str, str] | None = None,
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
        health_timeout: float | None = None,
        health: AnyHealthCheck | None = None,
        thread: bool = False,
    ) -> _Decorator: ...
    def resource(
        self,
        factory: Callable[..., object] | None = None,
        /,
        *,
        name: str | None = None,
        depends: Mapping[str, str] | None = None,
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
        health_timeout: float | None = None,
        health: AnyHealthCheck | None = None,
        thread: bool = False,
    ) -> Resource[object] | _Decorator:
        """Register a factory as a resource; use bare or with options.

        The resource's name is the function's name unless `name` is given; its
        dependencies are its parameters without defaults, each filled with the
        resource of the same name (or the one `depends` maps it to).

        Args:
            factory: An async generator function (yield once; code after the
                yield is teardown), a callable returning an async or a sync
                context manager (entered with `async with` or `with`), an
                async function, a generator function or a function.
            name: The resource's name.
            depends: Maps a parameter name to the resource that fills it.
            start_timeout: Seconds the start may take.
            stop_timeout: Seconds the teardown may take.
            health_timeout: Seconds the health check may take.
            health: Called with the value by `Lifespan.health()`; it fails by
                raising or by returning False; text it returns is the
                report's `detail`.
            thread: Run a sync factory's call, its entering and its exit in
                one thread of the resource's own, off the event loop.

        Returns:
            The [Resource][lifespan_kit.Resource], or a decorator when called
            with options only.

        Raises:
            DuplicateResourceError: When the name is taken.
            InvalidFactoryError: When the name is not an identifier (or is a
                keyword), `depends` does not map names to names, or the factory
                cannot be run as a resource.
            InvalidOptionError: When a timeout is not a number of seconds
                greater than 0 (a string or a bool is never converted),
                `health` is not a function, or `thread` is set for an async
                factory.

        Example:
            ```python
            @registry.resource(stop_timeout=2, depends={"cfg": "settings"})
            async def db(cfg: Settings) -> AsyncIterator[Database]:
                async with Database.connect(cfg.database_url) as database:
                    yield database
            ```
        """
        # The check receives the value the decorated factory produces.
        check = cast("HealthCheck[object] | None", health)
        options = _Options(
            name, depends, start_timeout, stop_timeout, health_timeout, check, thread
        )
        if factory is None:
            return _Decorator(lambda f: self._register_factory(f, options))
        return self._register_factory(factory, options)

    def _register_factory(self, factory: object, options: _Options) -> Resource[object]:
        name = options.name_for(factory)
        if name is None or not callable(factory):
            raise InvalidFactoryError(
                _unnamed(factory) if name is None else str(name),
                problem=f"{describe_origin(factory)} is not a named callable.",
                remedy=_unnamed_remedy(factory, "resource"),
            )
        return self._register(name, factory, options)

    @overload
    def add(
        self,
        name: str,
        factory: Callable[..., AsyncIterator[ValueT]],
        /,
        *,
        depends: Mapping[str, str] | None = None,
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
        health_timeout: float | None = None,
        health: HealthCheck[ValueT] | None = None,
        thread: bool = False,
    ) -> Resource[ValueT]: ...
    @overload
    def add(
        self,
        name: str,
        factory: Callable[..., AsyncContextManagerLike[ValueT]],
        /,
        *,
        depends: Mapping[str, str] | None = None,
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
        health_timeout: float | None = None,
        health: HealthCheck[ValueT] | None = None,
        thread: bool = False,
    ) -> Resource[ValueT]: ...
    @overload
    def add(
        self,
        name: str,
        factory: Callable[..., ContextManagerLike[ValueT]],
        /,
        *,
        depends: Mapping[str, str] | None = None,
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
        health_timeout: float | None = None,
        health: HealthCheck[ValueT] | None = None,
        thread: bool = False,
    ) -> Resource[ValueT]: ...
    @overload
    def add(
        self,
        name: str,
        factory: Callable[..., Awaitable[ValueT]],
        /,
        *,
        depends: Mapping[str, str] | None = None,
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
        health_timeout: float | None = None,
        health: HealthCheck[ValueT] | None = None,
        thread: bool = False,
    ) -> Resource[ValueT]: ...
    @overload
    def add(
        self,
        name: str,
        factory: Callable[..., Iterator[ValueT]],
        /,
        *,
        depends: Mapping[str, str] | None = None,
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
        health_timeout: float | None = None,
        health: HealthCheck[ValueT] | None = None,
        thread: bool = False,
    ) -> Resource[ValueT]: ...
    @overload
    def add(
        self,
        name: str,
        factory: Callable[..., ValueT],
        /,
        *,
        depends: Mapping[str, str] | None = None,
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
        health_timeout: float | None = None,
        health: HealthCheck[ValueT] | None = None,
        thread: bool = False,
    ) -> Resource[ValueT]: ...
    @overload
    def add(
        self,
        name: str,
        value: ValueT,
        /,
        *,
        health: HealthCheck[ValueT] | None = None,
    ) -> Resource[ValueT]: ...
    def add(
        self,
        name: str,
        factory: object,
        /,
        *,
        depends: Mapping[str, str] | None = None,
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
        health_timeout: float | None = None,
        health: HealthCheck[ValueT] | None = None,
        thread: bool = False,
    ) -> Resource[object]:
        """Register a factory, or a plain value, under `name`.

        A callable is a factory (see [resource][lifespan_kit.Registry.resource]);
        anything else is registered as the value itself, never entered, even
        a context manager; so is any `unittest.mock` object (``Mock``,
        ``MagicMock``, ``AsyncMock``...), callable or not. To register another
        callable as a value, wrap it: ``registry.add("hook", lambda: hook)``;
        to use a mock as a factory, wrap it the same way:
        ``lambda: factory_mock()``.

        Args:
            name: The resource's name.
            factory: The factory or the value.
            depends: Maps a parameter name to the resource that fills it.
            start_timeout: Seconds the start may take.
            stop_timeout: Seconds the teardown may take.
            health_timeout: Seconds the health check may take.
            health: Called with the value by `Lifespan.health()`.
            thread: Run a sync factory's call, its entering and its exit in
                one thread of the resource's own, off the event loop.

        Returns:
            The [Resource][lifespan_kit.Resource].

        Raises:
            DuplicateResourceError: When the name is taken.
            InvalidFactoryError: When the name is not an identifier (or is a
                keyword), `depends` does not map names to names, or the factory
                cannot be run as a resource.
            InvalidOptionError: When a timeout is not a number of seconds
                greater than 0 (a string or a bool is never converted),
                `health` is not a function, or `thread` is set for an async
                factory or a value.

        Example:
            ```python
            registry.add("http", httpx.AsyncClient, stop_timeout=2)
            registry.add("blocking_http", httpx.Client, thread=True)
            registry.add("answer", 42)
            ```
        """
        # The check receives the value this resource produces: ValueT.
        check = cast("HealthCheck[object] | None", health)
        options = _Options(
            name, depends, start_timeout, stop_timeout, health_timeout, check, thread
        )
        return self._register(name, factory, options)

    @overload
    def background(self, func: BackgroundFunction, /) -> Resource[None]: ...
    @overload
    def background(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        depends: Mapping[str, str] | None = None,
        stop_timeout: float | None = None,
    ) -> Callable[[BackgroundFunction], Resource[None]]: ...
    def background(
        self,
        func: BackgroundFunction | None = None,
        /,
        *,
        name: str | None = None,
        depends: Mapping[str, str] | None = None,
        stop_timeout: float | None = None,
    ) -> Resource[object] | Callable[[BackgroundFunction], Resource[object]]:
        """Register an async function that runs in its own task while the app runs.

        Use it for a consumer loop, a scheduler or a heartbeat. Its parameters
        are dependencies, as for [resource][lifespan_kit.Registry.resource].
        The task starts once its dependencies have started (its start does
        not wait for it) and is cancelled at teardown, before its dependencies
        stop; its value is None. If it raises, or returns, while the lifespan
        runs, the error is logged, listeners get a "failed" event,
        [Lifespan.wait_failed][lifespan_kit.Lifespan.wait_failed] returns it
        and leaving the lifespan raises it as a
        [BackgroundTaskError][lifespan_kit.errors.BackgroundTaskError].
        [lifespan_kit.run][lifespan_kit.run] then stops the app and exits 1.

        Args:
            func: The async function; it should run until it is cancelled.
            name: The resource's name; the function's name by default.
            depends: Maps a parameter name to the resource that fills it.
            stop_timeout: Seconds the task may take to finish once cancelled.

        Returns:
            The [Resource][lifespan_kit.Resource], or a decorator when called
            with options only.

        Raises:
            DuplicateResourceError: When the name is taken.
            InvalidFactoryError: When `func` is not an async function, its
                name is not an identifier (or is a keyword), or `depends` does
                not map names to names.
            InvalidOptionError: When `stop_timeout` is not a number of seconds
                greater than 0.

        Example:
            ```python
            @registry.background
            async def consumer(queue: Queue, db: Database) -> None:
                while True:
                    job = await queue.get()
                    await db.execute("insert into done values (?)", job.id)
            ```

        Added in 0.1.
        """
        options = _Options(name, depends, None, stop_timeout, None, None, False)

        def register(function: BackgroundFunction) -> Resource[object]:
            resource_name = options.name_for(function)
            is_async = classify(function) == "coroutine"
            if resource_name is None or not is_async:
                raise InvalidFactoryError(
                    _unnamed(function) if resource_name is None else str(resource_name),
                    problem=f"{describe_origin(function)} "
                    + ("has no name." if is_async else "is not an async function."),
                    remedy=_unnamed_remedy(function, "background")
                    if is_async or isinstance(function, str)
                    else (
                        "declare the background task with `async def`; it runs "
                        "until the lifespan cancels it."
                    ),
                )
            return self._register(resource_name, function, options, "background")

        return register if func is None else register(func)

    def _register(
        self,
        name: object,
        factory: object,
        options: _Options,
        kind: FactoryKind | None = None,
    ) -> Resource[object]:
        name = check_name(name)
        existing = self._resources.get(name)
        if existing is not None:
            raise DuplicateResourceError(
                name, first=existing.origin, second=describe_origin(factory)
            )
        resource = options.create(name, factory, kind)
        self._insert(resource)
        return resource

    def _insert(self, resource: Resource[object]) -> None:
        self._resources[resource.name] = resource
        self._plans.clear()

    def add_listener(self, listener: Listener) -> None:
        """Call `listener` with every [ResourceEvent][lifespan_kit.ResourceEvent].

        Listeners run synchronously, in the task that starts or stops the
        resource; one that raises is logged and never stops the lifespan.

        Example:
            ```python
            registry.add_listener(lambda event: print(event.kind, event.resource_name))
            ```
        """
        self._listeners.append(listener)

    # --- composing -----------------------------------------------------------

    def include(self, other: Registry) -> None:
        """Copy every resource of `other` into this registry.

        Later additions to `other` are not seen; its defaults and listeners stay
        its own (this registry's defaults apply to its resources here).

        Raises:
            DuplicateResourceError: When a name exists in both; nothing is copied.

        Example:
            ```python
            app_registry.include(payments.registry)
            ```
        """
        for resource in other:
            existing = self._resources.get(resource.name)
            if existing is not None:
                raise DuplicateResourceError(
                    resource.name, first=existing.origin, second=resource.origin
                )
        for resource in other:
            self._insert(resource)

    def override(self, **replacements: object) -> Registry:
        """Return a copy in which each named resource is replaced.

        Each replacement is a factory or a plain value, as in
        [add][lifespan_kit.Registry.add]: a `unittest.mock` object such as
        ``Mock(spec_set=Database)`` is the value itself. Dependencies that only
        the replaced factories needed are no longer started.

        Raises:
            UnknownResourceError: When a name is not registered (a typo would
                otherwise add a resource nobody uses).

        Example:
            ```python
            test_registry = registry.override(db=FakeDatabase())
            ```
        """
        copy = self._copy()
        for name, replacement in replacements.items():
            current = self._resources.get(name)
            if current is None:
                raise self._unknown(name, "passed to override()")
            copy._resources[name] = create_resource(
                name,
                replacement,
                depends=None,
                timeouts=current.timeouts,
                health_check=None,
            )
        return copy

    def _copy(self) -> Registry:
        copy = Registry()
        copy._defaults = self._defaults
        copy._resources = dict(self._resources)
        copy._listeners = list(self._listeners)
        return copy

    # --- running -------------------------------------------------------------

    @overload
    def lifespan(
        self,
        bundle: type[BundleT],
        /,
        *,
        concurrency: int | None = None,
        listeners: Sequence[Listener] = (),
    ) -> Lifespan[BundleT]: ...
    @overload
    def lifespan(
        self,
        bundle: None = None,
        /,
        *,
        concurrency: int | None = None,
        listeners: Sequence[Listener] = (),
    ) -> Lifespan[ResourceMap]: ...
    def lifespan(
        self,
        bundle: type[BundleT] | None = None,
        /,
        *,
        concurrency: int | None = None,
        listeners: Sequence[Listener] = (),
    ) -> Lifespan[BundleT] | Lifespan[ResourceMap]:
        """Validate the graph and return a lifespan to enter with ``async with``.

        With a bundle class, it starts exactly the resources the bundle's fields
        name plus their dependencies, and yields the bundle; without one, it
        starts every resource and yields a [ResourceMap][lifespan_kit.ResourceMap].

        Args:
            bundle: A [Bundle][lifespan_kit.Bundle] subclass.
            concurrency: How many resources may start at once; None for no
                limit, 1 to start them one by one in a fixed order.
            listeners: Extra event listeners for this lifespan only.

        Returns:
            The [Lifespan][lifespan_kit.Lifespan].

        Raises:
            GraphError: Listing every missing dependency, cycle and unknown name.
            InvalidBundleError: When `bundle` is not a Bundle subclass.
            InvalidOptionError: When `concurrency` is not an int of at least 1.

        Example:
            ```python
            async with registry.lifespan(Resources) as resources:
                await resources.db.execute("select 1")
            ```
        """
        limit = validate_concurrency(concurrency)
        monitor_listeners = (*self._listeners, *listeners)
        if bundle is None:
            return Lifespan(
                self._plan(_ROOTS_ALL, "requested"),
                build=ResourceMap,
                concurrency=limit,
                defaults=self._defaults,
                listeners=monitor_listeners,
            )
        roots = bundle_resource_names(bundle)
        bundle_class = bundle

        def build(values: Mapping[str, object]) -> BundleT:
            return create_bundle(bundle_class, values)

        return Lifespan(
            self._plan(roots, f"a field of bundle {bundle.__name__}"),
            build=build,
            concurrency=limit,
            defaults=self._defaults,
            listeners=monitor_listeners,
        )

    def check(self, bundle: type[lifespan_kit.Bundle] | None = None) -> tuple[str, ...]:
        """Validate the graph without starting anything.

        Returns:
            The resource names that would start, in sequential start order.

        Raises:
            GraphError: Listing every missing dependency, cycle and unknown name.
            InvalidBundleError: When `bundle` is not a Bundle subclass.

        Example:
            ```python
            assert registry.check(Resources) == ("settings", "db")
            ```
        """
        if bundle is None:
            return self._plan(_ROOTS_ALL, "requested").names
        roots = bundle_resource_names(bundle)
        return self._plan(roots, f"a field of bundle {bundle.__name__}").names

    def _plan(self, roots: tuple[str, ...] | None, context: str) -> Plan:
        plan = self._plans.get(roots)
        if plan is None:
            plan = self._plans[roots] = build_plan(
                self._resources, roots, root_context=context
            )
        return plan

    def _open_resource(
        self, name: str, provided: Mapping[str, object]
    ) -> Lifespan[ResourceMap]:
        """Return a lifespan that starts only `name`, its dependencies given as values.

        Each value in `provided` is passed on as it is, even a callable or a
        context manager: it was started elsewhere (the pytest plugin's wider
        scopes hold it).

        Raises:
            UnknownResourceError: When `name` is not registered.
            GraphError: When a dependency of `name` is missing from `provided`.
        """
        resource = self[name]
        resources = {
            dependency: create_resource(
                dependency,
                value,
                depends=None,
                timeouts=_NO_TIMEOUTS,
                health_check=None,
                kind="value",
            )
            for dependency, value in provided.items()
        }
        resources[name] = resource
        return Lifespan(
            build_plan(resources, (name,)),
            build=ResourceMap,
            concurrency=1,
            defaults=self._defaults,
            listeners=self._listeners,
        )

    def _unknown(self, name: str, context: str) -> UnknownResourceError:
        close, listed = suggest(name, list(self._resources))
        return UnknownResourceError(
            name, context=context, suggestions=close, available=listed
        )


def _unnamed(factory: object) -> str:
    """Say which resource a factory without a name was meant to be."""
    return factory if isinstance(factory, str) else repr(factory)


def _unnamed_remedy(factory: object, decorator: str) -> str:
    if isinstance(factory, str):
        # `@registry.resource("db")`: the name was passed where the factory goes.
        return f"pass the name as a keyword: @registry.{decorator}(name={factory!r})."
    if decorator == "background":
        return "pass name= to registry.background() for a callable without a name."
    return (
        "decorate a function (or pass name= for a callable without a name), or "
        "call registry.add(name, value) for a plain value."
    )


class _Options:
    """The keyword options of `resource` and `add`, validated once."""

    __slots__ = ("depends", "health", "name", "thread", "timeouts_args")

    def __init__(
        self,
        name: object,
        depends: Mapping[str, str] | None,
        start_timeout: float | None,
        stop_timeout: float | None,
        health_timeout: float | None,
        health: HealthCheck[object] | None,
        thread: bool,
    ) -> None:
        self.name = name
        self.depends = depends
        self.timeouts_args = (start_timeout, stop_timeout, health_timeout)
        self.health = health
        self.thread = thread

    def name_for(self, factory: object) -> object:
        """Return the name given with `name=`, else the factory's own, or None."""
        if self.name is not None:
            return self.name
        return getattr(factory, "__name__", None)

    def create(
        self, name: str, factory: object, kind: FactoryKind | None = None
    ) -> Resource[object]:
        start, stop, health = self.timeouts_args
        timeouts = (
            _NO_TIMEOUTS
            if start is None and stop is None and health is None
            else create_timeouts(
                name, start_timeout=start, stop_timeout=stop, health_timeout=health
            )
        )
        return create_resource(
            name,
            factory,
            depends=self.depends,
            timeouts=timeouts,
            health_check=self.health,
            kind=kind,
            thread=self.thread,
        )


_NO_TIMEOUTS: Final = Timeouts()


class _Decorator:
    """What ``@registry.resource(...)`` returns: applies the options to a factory."""

    __slots__ = ("_register",)

    def __init__(
        self, register: Callable[[Callable[..., object]], Resource[object]]
    ) -> None:
        self._register = register

    @overload
    def __call__(
        self, factory: Callable[..., AsyncIterator[ValueT]], /
    ) -> Resource[ValueT]: ...
    @overload
    def __call__(
        self, factory: Callable[..., AsyncContextManagerLike[ValueT]], /
    ) -> Resource[ValueT]: ...
    @overload
    def __call__(
        self, factory: Callable[..., ContextManagerLike[ValueT]], /
    ) -> Resource[ValueT]: ...
    @overload
    def __call__(
        self, factory: Callable[..., Awaitable[ValueT]], /
    ) -> Resource[ValueT]: ...
    @overload
    def __call__(
        self, factory: Callable[..., Iterator[ValueT]], /
    ) -> Resource[ValueT]: ...
    @overload
    def __call__(self, factory: Callable[..., ValueT], /) -> Resource[ValueT]: ...
    def __call__(self, factory: Callable[..., object], /) -> Resource[object]:
        return self._register(factory)
