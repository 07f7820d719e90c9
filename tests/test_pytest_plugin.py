"""The pytest plugin, driven from outside: sample projects run by `pytester`.

Each sample project has a registry whose resources log every step to
``events.log`` with the task that ran it, so the tests can check what started,
what stopped, in which order, and that each resource entered and exited in
one task.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from lifespan_kit import Lifespan, Registry, ResourceMap
from lifespan_kit._pytest_loops import Host, Reply  # a unit test of the host task

pytest_plugins = ["pytester"]

SAMPLE_APP = """
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio

from lifespan_kit import Registry

LOG = Path(__file__).with_name("events.log")


def log(event: str) -> None:
    with LOG.open("a") as file:
        file.write(event + "\\n")


def task_id() -> int:
    return anyio.get_current_task().id


registry = Registry()


@registry.resource
def settings() -> Iterator[dict[str, str]]:
    log("settings up")
    yield {"dsn": "real"}
    log("settings down")


@registry.resource
async def db(settings: dict[str, str]) -> AsyncIterator[str]:
    # Holds a task group across its yield: it must exit in the task it entered.
    entered = task_id()
    log("db up")
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep_forever)
        yield f"db({settings['dsn']})"
        tg.cancel_scope.cancel()
    log("db down" + ("" if task_id() == entered else " IN ANOTHER TASK"))


@registry.resource
async def repo(db: str) -> AsyncIterator[str]:
    log("repo up")
    yield f"repo({db})"
    log("repo down")


@registry.resource
def clock() -> Iterator[str]:
    log("clock up")
    yield "clock"
    log("clock down")
"""


def events(pytester: pytest.Pytester) -> list[str]:
    log = Path(pytester.path, "events.log")
    return log.read_text().splitlines() if log.exists() else []


def project(pytester: pytest.Pytester, *ini_lines: str, app: str = SAMPLE_APP) -> None:
    pytester.makepyfile(sample_app=app)
    options = "\n".join(("lifespan_kit_registry = sample_app:registry", *ini_lines))
    pytester.makeini(f"[pytest]\npythonpath = .\n{options}\n")


# Installed plugins that load into every run: each sample project turns on
# only those it is about.
OPTIONAL_PLUGINS = ("randomly", "xdist", "xdist.looponfail", "hypothesispytest")


def run(
    pytester: pytest.Pytester,
    *args: str,
    plugin: str = "anyio",
    plugins: tuple[str, ...] = (),
    timeout: float | None = None,
) -> pytest.RunResult:
    """Run the sample project's tests with one async plugin: anyio or asyncio."""
    other = "asyncio" if plugin == "anyio" else "anyio"
    if plugin == "asyncio":
        args = ("-o", "asyncio_default_fixture_loop_scope=function", *args)
    disabled = [f"-pno:{name}" for name in OPTIONAL_PLUGINS if name not in plugins]
    return pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-p",
        plugin,
        "-p",
        f"no:{other}",
        *disabled,
        *args,
        timeout=timeout,
    )


ANYIO_TESTS = """
import pytest


def test_sync_first(clock):
    assert clock == "clock"


@pytest.fixture(params=["asyncio", "trio"], scope="module")
def anyio_backend(request):
    return request.param


@pytest.mark.anyio
async def test_first(repo):
    assert repo == "repo(db(real))"


@pytest.mark.anyio
async def test_second(repo, settings):
    assert settings == {"dsn": "real"}
"""


def test_anyio_session_resources_start_once_per_backend_and_stop_in_reverse(
    pytester: pytest.Pytester,
) -> None:
    project(pytester)
    pytester.makepyfile(test_sample=ANYIO_TESTS)
    run(pytester).assert_outcomes(passed=5)
    once = ["settings up", "db up", "repo up", "repo down", "db down", "settings down"]
    # The sync test's clock comes from a background loop, kept for the session.
    assert events(pytester) == ["clock up", *once, *once, "clock down"]


def test_pytest_asyncio_session_loop_keeps_resources_for_the_session(
    pytester: pytest.Pytester,
) -> None:
    project(pytester, "asyncio_mode = strict")
    pytester.makepyfile(
        test_sample="""
        import pytest

        @pytest.mark.asyncio(loop_scope="session")
        async def test_first(repo):
            assert repo == "repo(db(real))"

        @pytest.mark.asyncio(loop_scope="session")
        async def test_second(repo):
            assert repo == "repo(db(real))"

        def test_sync_last(clock):
            assert clock == "clock"
        """
    )
    run(pytester, plugin="asyncio").assert_outcomes(passed=3)
    assert events(pytester) == [
        "settings up",
        "db up",
        "repo up",
        "clock up",
        "clock down",
        "repo down",
        "db down",
        "settings down",
    ]


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_pytest_asyncio_function_loops_restart_what_the_loop_ends(
    pytester: pytest.Pytester, mode: str
) -> None:
    project(pytester, f"asyncio_mode = {mode}")
    marker = "@pytest.mark.asyncio" if mode == "strict" else ""
    pytester.makepyfile(
        test_sample=f"""
        import pytest

        def test_sync_first(clock):
            assert clock == "clock"

        {marker}
        async def test_first(repo):
            assert repo == "repo(db(real))"

        {marker}
        async def test_second(db):
            assert db == "db(real)"
        """
    )
    run(pytester, plugin="asyncio").assert_outcomes(passed=3)
    assert events(pytester) == [
        "clock up",
        "settings up",
        "db up",
        "repo up",
        "repo down",
        "db down",
        "settings down",
        "settings up",
        "db up",
        "db down",
        "settings down",
        "clock down",
    ]


def test_session_fixture_holding_a_task_group_fails_without_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    # The baseline: pytest-asyncio runs a fixture's setup and teardown in two
    # tasks, so a task group held across the yield cannot exit.
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile(
        test_sample="""
        import anyio
        import pytest
        import pytest_asyncio

        @pytest_asyncio.fixture(scope="session", loop_scope="session")
        async def db():
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.sleep_forever)
                yield "db"
                tg.cancel_scope.cancel()

        @pytest.mark.asyncio(loop_scope="session")
        async def test_uses_db(db):
            assert db == "db"
        """
    )
    result = run(pytester, plugin="asyncio")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*cancel scope*different task*"])


def test_session_resource_holding_a_task_group_works_with_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    project(pytester, "asyncio_mode = auto")
    pytester.makepyfile(
        test_sample="""
        import pytest

        @pytest.mark.asyncio(loop_scope="session")
        async def test_uses_db(db):
            assert db == "db(real)"
        """
    )
    run(pytester, plugin="asyncio").assert_outcomes(passed=1)
    assert "db down" in events(pytester)


OVERRIDE_TESTS = """
import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"], scope="module")
def anyio_backend(request):
    return request.param


async def test_before(repo):
    assert repo == "repo(db(real))"


@pytest.mark.lifespan_kit(db="fake-db")
async def test_overridden(repo):
    assert repo == "repo(fake-db)"


async def test_after(repo):
    assert repo == "repo(db(real))"
"""


def test_marker_override_restarts_dependents_for_that_test_only(
    pytester: pytest.Pytester,
) -> None:
    project(pytester)
    pytester.makepyfile(test_sample=OVERRIDE_TESTS)
    run(pytester, "-k", "asyncio").assert_outcomes(passed=3)
    assert events(pytester) == [
        "settings up",
        "db up",
        "repo up",
        # test_overridden: a repo of its own on the fake db, stopped after it
        "repo up",
        "repo down",
        # the session's repo was kept for test_after
        "repo down",
        "db down",
        "settings down",
    ]


def test_override_does_not_start_what_only_the_replaced_resource_needed(
    pytester: pytest.Pytester,
) -> None:
    project(pytester)
    pytester.makepyfile(
        test_sample="""
        import pytest

        @pytest.mark.anyio
        @pytest.mark.lifespan_kit(db="fake-db")
        async def test_overridden(repo):
            assert repo == "repo(fake-db)"
        """
    )
    run(pytester).assert_outcomes(passed=2)
    assert "settings up" not in events(pytester)
    assert "db up" not in events(pytester)


def test_module_and_class_markers_and_the_fixture_override(
    pytester: pytest.Pytester,
) -> None:
    project(pytester)
    pytester.makepyfile(
        test_module_override="""
        import pytest

        pytestmark = [pytest.mark.anyio, pytest.mark.lifespan_kit(db="module-db")]

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        async def test_module_level(repo):
            assert repo == "repo(module-db)"

        @pytest.mark.lifespan_kit(db="class-db")
        class TestClassLevel:
            async def test_class_level(self, repo):
                assert repo == "repo(class-db)"

            @pytest.mark.lifespan_kit(db="test-db")
            async def test_closest_marker_wins(self, repo):
                assert repo == "repo(test-db)"

        """,
        test_fixture_override="""
        import pytest

        pytestmark = [pytest.mark.anyio, pytest.mark.lifespan_kit(db="module-db")]

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.fixture
        def lifespan_kit_overrides():
            return {"db": "fixture-db"}

        async def test_fixture_beats_markers(repo):
            assert repo == "repo(fixture-db)"
        """,
    )
    run(pytester).assert_outcomes(passed=4)
    assert events(pytester).count("repo up") == 4
    assert "db up" not in events(pytester)


def test_registry_fixture_overrides_resources_for_a_directory(
    pytester: pytest.Pytester,
) -> None:
    project(pytester)
    pytester.makepyfile(
        conftest="""
        import pytest
        from sample_app import registry

        @pytest.fixture(scope="session")
        def lifespan_kit_registry():
            return registry.override(settings={"dsn": "test"})
        """,
        test_sample="""
        def test_sync(settings):
            assert settings == {"dsn": "test"}
        """,
    )
    run(pytester).assert_outcomes(passed=1)
    assert events(pytester) == []


def test_per_resource_scope_and_dependents_follow_it(pytester: pytest.Pytester) -> None:
    project(pytester, "lifespan_kit_scopes =\n    db = function")
    pytester.makepyfile(
        test_sample="""
        import pytest

        @pytest.mark.anyio
        @pytest.mark.parametrize("anyio_backend", ["asyncio"])
        @pytest.mark.parametrize("round", [1, 2])
        async def test_repo(repo, round):
            assert repo == "repo(db(real))"
        """
    )
    run(pytester).assert_outcomes(passed=2)
    per_test = ["db up", "repo up", "repo down", "db down"]
    assert events(pytester) == ["settings up", *per_test, *per_test, "settings down"]


@pytest.mark.parametrize(("scope", "starts"), [("module", 2), ("package", 1)])
def test_scope_stops_at_the_end_of_its_node(
    pytester: pytest.Pytester, scope: str, starts: int
) -> None:
    project(pytester, f"lifespan_kit_scope = {scope}")
    test = """
        def test_clock(clock):
            assert clock == "clock"

        def test_clock_again(clock):
            assert clock == "clock"
    """
    pytester.makepyfile(test_one=test, test_two=test)
    run(pytester).assert_outcomes(passed=4)
    assert events(pytester) == ["clock up", "clock down"] * starts


FAILING_APP = """
from collections.abc import AsyncIterator, Iterator

from lifespan_kit import Registry

registry = Registry()


@registry.resource
def healthy() -> Iterator[str]:
    yield "healthy"


@registry.resource
async def broken(healthy: str) -> AsyncIterator[str]:
    raise ConnectionRefusedError("database is down")
    yield "never"


@registry.resource
def dependent(broken: str) -> str:
    return "never"


@registry.resource
def leaky() -> Iterator[str]:
    yield "leaky"
    raise OSError("could not close")


@registry.resource
def leaky_too() -> Iterator[str]:
    yield "leaky too"
    raise OSError("could not close either")
"""


def test_failed_start_fails_only_the_tests_that_use_it(
    pytester: pytest.Pytester,
) -> None:
    project(pytester, app=FAILING_APP)
    pytester.makepyfile(
        test_sample="""
        def test_healthy(healthy):
            assert healthy == "healthy"

        def test_broken(broken):
            pass

        def test_dependent(dependent):
            pass

        def test_healthy_again(healthy):
            assert healthy == "healthy"
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*StartupError: Resource 'broken' failed during startup.*",
            "*cause: ConnectionRefusedError: database is down*",
        ]
    )
    assert result.stdout.str().count("ERROR at setup") == 2


def test_teardown_failure_is_reported_once_at_the_end_of_its_scope(
    pytester: pytest.Pytester,
) -> None:
    project(pytester, "lifespan_kit_scope = module", app=FAILING_APP)
    pytester.makepyfile(
        test_sample="""
        def test_one(leaky):
            pass

        def test_two(leaky):
            pass

        def test_three():
            pass
        """,
        test_two_failures="""
        def test_both(leaky, leaky_too):
            pass
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_three*",
            "*could not close*",
            "*ERROR at teardown of test_both*",
            "*2 lifespan_kit resources failed to stop*",
        ]
    )


def test_prefix_and_bundle_fixture(pytester: pytest.Pytester) -> None:
    app = SAMPLE_APP + textwrap.dedent(
        """
        from lifespan_kit import Bundle

        class Resources(Bundle):
            settings: dict[str, str]
            clock: str
        """
    )
    project(
        pytester,
        "lifespan_kit_prefix = res_",
        "lifespan_kit_bundle = sample_app:Resources",
        app=app,
    )
    pytester.makepyfile(
        test_sample="""
        from sample_app import Resources

        def test_prefixed(res_clock):
            assert res_clock == "clock"

        def test_bundle(lifespan_kit_bundle):
            assert isinstance(lifespan_kit_bundle, Resources)
            assert lifespan_kit_bundle.clock == "clock"
        """
    )
    run(pytester).assert_outcomes(passed=2)
    assert events(pytester) == [
        "clock up",
        "settings up",
        "settings down",
        "clock down",
    ]


def test_without_a_registry_the_plugin_adds_no_resource_fixtures(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_sample="""
        def test_registry(lifespan_kit_registry):
            pass

        def test_bundle(lifespan_kit_bundle):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*no registry is configured*"])


def test_bundle_fixture_without_a_bundle_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    project(pytester)
    pytester.makepyfile(
        test_sample="""
        def test_bundle(lifespan_kit_bundle):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no bundle is configured*"])


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("lifespan_kit_registry = sample_app", "*is not `module:attribute`*"),
        ("lifespan_kit_registry = missing_module:registry", "*cannot import*"),
        ("lifespan_kit_registry = sample_app:nothing", "*has no attribute 'nothing'*"),
        ("lifespan_kit_registry = sample_app:log", "*not a lifespan_kit Registry*"),
        ("lifespan_kit_bundle = sample_app:log", "*is not a Bundle subclass*"),
        ("lifespan_kit_scope = forever", "*scope 'forever'*is not one of*"),
        ("lifespan_kit_scopes = db", "*is not `name = scope`*"),
        ("lifespan_kit_scopes = dbx = module", "*names 'dbx', which*"),
    ],
)
def test_bad_configuration_is_a_usage_error(
    pytester: pytest.Pytester, ini: str, message: str
) -> None:
    pytester.makepyfile(sample_app=SAMPLE_APP)
    registry = (
        ""
        if ini.startswith("lifespan_kit_registry")
        else ("lifespan_kit_registry = sample_app:registry\n")
    )
    pytester.makeini(f"[pytest]\npythonpath = .\n{registry}{ini}\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_marker_and_unknown_override_name(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        test_sample="""
        import pytest

        @pytest.mark.lifespan_kit("db")
        def test_positional(clock):
            pass

        @pytest.mark.lifespan_kit(dbb="fake")
        def test_typo(clock):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["E * takes resource names as keywords*", "*No resource is named 'dbb'*"]
    )


def test_async_test_without_an_async_plugin_is_told_what_to_mark(
    pytester: pytest.Pytester,
) -> None:
    project(pytester)
    pytester.makepyfile(
        test_sample="""
        async def test_unmarked(clock):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:asyncio", "-p", "no:anyio", "-p", "no:randomly", "-W", "ignore"
    )
    result.stdout.fnmatch_lines(["*mark it `@pytest.mark.anyio`*"])


def test_interrupted_run_still_stops_the_resources(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        test_sample=ANYIO_TESTS.replace("assert settings", "assert not settings")
    )
    run(pytester, "-x").assert_outcomes(passed=2, failed=1)
    stopped = [event for event in events(pytester) if event.endswith("down")]
    # The failing test's teardown already stopped asyncio's resources (trio's
    # tests come next); the end of the interrupted session stops the rest.
    assert stopped == ["repo down", "db down", "settings down", "clock down"]


async def test_host_task_stops_its_resources_when_cancelled() -> None:
    # When an event loop closes under a layer, its host task is cancelled:
    # it still exits every lifespan it entered, then lets the cancellation go.
    log: list[str] = []
    registry = Registry()

    @registry.resource
    async def first() -> AsyncIterator[str]:
        yield "first"
        log.append("first down")

    @registry.resource
    async def second() -> AsyncIterator[str]:
        yield "second"
        log.append("second down")

    send, receive = anyio.create_memory_object_stream[
        tuple[Lifespan[ResourceMap], str, Reply]
    ](1)
    host = Host(send, lambda name, error: None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(host.serve, receive)
        assert (await host.start(registry.lifespan(), "first"))[first] == "first"
        await host.start(registry.override(first="other").lifespan(), "second")
        tg.cancel_scope.cancel()
    assert log == ["second down", "second down", "first down"]


def test_a_conftest_registry_gives_fixtures_to_its_directory(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(sample_app=SAMPLE_APP)
    pytester.makeini("[pytest]\npythonpath = .\nlifespan_kit_prefix = the_\n")
    pytester.makeconftest(
        """
        from sample_app import registry

        lifespan_kit_registry = registry.override(clock="root clock")
        """
    )
    pytester.makepyfile(
        test_root="""
        def test_root(the_clock):
            assert the_clock == "root clock"
        """
    )
    sub = pytester.mkpydir("sub")
    Path(sub, "conftest.py").write_text(
        textwrap.dedent(
            """
            from sample_app import registry

            lifespan_kit_registry = registry.override(clock="sub clock")
            """
        )
    )
    Path(sub, "test_sub.py").write_text(
        textwrap.dedent(
            """
            def test_sub(the_clock):
                assert the_clock == "sub clock"
            """
        )
    )
    run(pytester).assert_outcomes(passed=2)


def test_skipped_tests_between_do_not_end_the_loop(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        test_sample="""
        import anyio
        import pytest

        skipped = pytest.mark.skip(reason="not on trio")

        @pytest.fixture(params=["asyncio", pytest.param("trio", marks=skipped)])
        def anyio_backend(request):
            return request.param

        @pytest.mark.anyio
        async def test_first(repo):
            pass

        @pytest.mark.anyio
        async def test_second(repo):
            pass

        def test_sync_last_runs_a_loop():
            anyio.run(anyio.sleep, 0)
        """
    )
    run(pytester).assert_outcomes(passed=3, skipped=2)
    assert events(pytester).count("repo up") == 1


def test_a_sync_test_after_async_ones_can_run_its_own_loop(
    pytester: pytest.Pytester,
) -> None:
    # anyio refuses `anyio.run` while its test runner is held: the plugin gives
    # the runner back before a sync test, even one parametrized on the backend.
    project(pytester)
    pytester.makepyfile(
        test_sample="""
        import anyio
        import pytest

        @pytest.fixture(params=["asyncio"])
        def anyio_backend(request):
            return request.param

        @pytest.mark.anyio
        async def test_async(repo):
            assert repo == "repo(db(real))"

        def test_sync_runs_a_loop(anyio_backend):
            anyio.run(anyio.sleep, 0, backend=anyio_backend)
        """
    )
    run(pytester).assert_outcomes(passed=2)
    assert events(pytester)[-1] == "settings down"


# --- every way of choosing anyio's backend -----------------------------------


@pytest.mark.parametrize(
    ("scope", "backend"),
    [
        pytest.param("function", '"trio"', id="function-trio"),
        pytest.param("module", '"asyncio"', id="module-asyncio"),
        pytest.param("session", '("asyncio", {"debug": True})', id="session-options"),
    ],
)
def test_a_plain_anyio_backend_fixture_keeps_session_resources(
    pytester: pytest.Pytester, scope: str, backend: str
) -> None:
    """A backend chosen by a plain fixture of any scope starts resources once."""
    project(pytester)
    pytester.makepyfile(
        test_sample=f"""
        import pytest

        pytestmark = pytest.mark.anyio

        @pytest.fixture(scope="{scope}")
        def anyio_backend():
            return {backend}

        async def test_one(repo):
            assert repo == "repo(db(real))"

        async def test_two(repo):
            assert repo == "repo(db(real))"

        async def test_three(db):
            assert db == "db(real)"
        """
    )
    run(pytester).assert_outcomes(passed=3)
    assert events(pytester) == [
        "settings up",
        "db up",
        "repo up",
        "repo down",
        "db down",
        "settings down",
    ]


def test_sync_tests_share_one_instance_apart_from_async_tests(
    pytester: pytest.Pytester,
) -> None:
    """Sync tests get the background loop's instance; async tests their loop's."""
    app = SAMPLE_APP + textwrap.dedent(
        """
        @registry.resource
        def notes() -> dict[str, str]:
            log("notes up")
            return {}
        """
    )
    project(pytester, app=app)
    pytester.makepyfile(
        test_sample="""
        import pytest

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.mark.anyio
        async def test_async_writes(notes):
            notes["by"] = "async"

        def test_sync_writes(notes):
            assert notes == {}
            notes["by"] = "sync"

        def test_sync_reads(notes):
            assert notes == {"by": "sync"}

        @pytest.mark.anyio
        async def test_async_reads(notes):
            assert notes == {}
        """
    )
    run(pytester).assert_outcomes(passed=4)
    # The sync tests' instance lives on; anyio's runner was given back for
    # them, so the last async test got a fresh one.
    assert events(pytester).count("notes up") == 3


# --- failures: the same report for every test, starting with the user's code --

FAILING_TESTS = """
import pytest

pytestmark = {mark}


@pytest.mark.parametrize("round", range({count}))
async def test_broken(broken, round):
    pass
"""


@pytest.mark.parametrize(
    ("plugin", "mark"),
    [
        pytest.param(
            "asyncio", 'pytest.mark.asyncio(loop_scope="session")', id="asyncio"
        ),
        pytest.param(
            "anyio", 'pytest.mark.parametrize("anyio_backend", ["trio"])', id="trio"
        ),
    ],
)
def test_every_report_of_a_failed_start_has_the_size_of_the_first(
    pytester: pytest.Pytester, plugin: str, mark: str
) -> None:
    """The report does not grow per test and opens with the factory's frame."""
    project(pytester, "asyncio_mode = strict", app=FAILING_APP)
    mark = mark if plugin == "asyncio" else f"[pytest.mark.anyio, {mark}]"
    pytester.makepyfile(test_sample=FAILING_TESTS.format(mark=mark, count=20))
    result = run(pytester, plugin=plugin)
    result.assert_outcomes(errors=20)
    sections = result.stdout.str().split("_ ERROR at setup of ")[1:]
    sizes = {len(section.splitlines()) for section in sections[:-1]}
    assert len(sizes) == 1, sizes
    first = sections[0]
    # The first frame is the resource's own code; the machinery stays hidden.
    places = re.findall(r"^(\S+\.py):\d+: ", first, flags=re.MULTILINE)
    assert places[0] == "sample_app.py", places
    assert not [place for place in places if "lifespan_kit" in place]
    assert "cause: ConnectionRefusedError: database is down" in first


# --- failures while running ---------------------------------------------------

CRASHING_APP = """
from collections.abc import AsyncIterator

import anyio

from lifespan_kit import Registry

registry = Registry()


class Trigger:
    def __init__(self) -> None:
        self.go = anyio.Event()
        self.crashed = anyio.Event()


@registry.resource
async def trigger() -> AsyncIterator[Trigger]:
    yield Trigger()


@registry.resource
def unrelated() -> str:
    return "unrelated"
"""

BACKGROUND_POLLER = """
@registry.background
async def poller(trigger: Trigger) -> None:
    await trigger.go.wait()
    trigger.crashed.set()
    raise ConnectionResetError("the broker closed the connection")


@registry.resource
async def feed(poller: None) -> AsyncIterator[str]:
    yield "feed"


@registry.resource
def summary(feed: str, poller: None) -> str:
    return f"summary({feed})"
"""

TASK_GROUP_POLLER = """
@registry.resource
async def poller(trigger: Trigger) -> AsyncIterator[None]:
    async def poll() -> None:
        await trigger.go.wait()
        trigger.crashed.set()
        raise ConnectionResetError("the broker closed the connection")

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        yield None


@registry.resource
async def feed(poller: None) -> AsyncIterator[str]:
    yield "feed"


@registry.resource
def summary(feed: str, poller: None) -> str:
    return f"summary({feed})"
"""

CRASHING_TESTS = """
import anyio
import anyio.lowlevel
import pytest

pytestmark = {mark}


async def test_crash_while_running(summary, trigger):
    trigger.go.set()
    await trigger.crashed.wait()
    for _ in range(3):
        await anyio.lowlevel.checkpoint()


async def test_dependent_after_the_crash(feed):
    pass


async def test_crashed_resource_after_the_crash(poller):
    pass


async def test_unrelated_resource(unrelated):
    assert unrelated == "unrelated"
"""

ON_BACKEND = '[pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["{}"])]'
RUNNER_MARKS = {
    "asyncio": 'pytest.mark.asyncio(loop_scope="session")',
    "anyio-asyncio": ON_BACKEND.format("asyncio"),
    "trio": ON_BACKEND.format("trio"),
}


def crash_project(pytester: pytest.Pytester, poller: str, runner: str) -> None:
    project(pytester, "asyncio_mode = strict", app=CRASHING_APP + poller)
    pytester.makepyfile(test_sample=CRASHING_TESTS.format(mark=RUNNER_MARKS[runner]))


def check_crash_reports(result: pytest.RunResult) -> None:
    result.assert_outcomes(passed=1, failed=1, errors=2)
    output = result.stdout.str()
    for test in ("test_crash_while_running", "test_dependent_after_the_crash"):
        assert f"{test}" in output
    assert output.count("ConnectionResetError: the broker closed the connection") >= 3
    assert output.count("'poller'") >= 3


@pytest.mark.parametrize("runner", ["asyncio", "anyio-asyncio", "trio"])
def test_a_crashed_background_task_fails_the_tests_that_use_it(
    pytester: pytest.Pytester, runner: str
) -> None:
    """A crash while running fails every test built on it, and only those."""
    crash_project(pytester, BACKGROUND_POLLER, runner)
    plugin = "asyncio" if runner == "asyncio" else "anyio"
    # Bounded: a regression that hangs fails here instead of hanging the run.
    result = run(pytester, "-o", "timeout=20", plugin=plugin, timeout=60)
    check_crash_reports(result)
    result.stdout.fnmatch_lines(["*Background task 'poller' failed*"])


def test_a_crash_stops_an_x_run_without_hanging(pytester: pytest.Pytester) -> None:
    """With -x the run ends after the first failure and stops everything."""
    crash_project(pytester, BACKGROUND_POLLER, "trio")
    result = run(pytester, "-x", "-o", "timeout=20", timeout=60)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ConnectionResetError: the broker closed*"])


@pytest.mark.parametrize("runner", ["anyio-asyncio", "trio"])
def test_a_crash_in_a_resources_task_group_fails_the_tests_that_use_it(
    pytester: pytest.Pytester, runner: str
) -> None:
    """A task-group child's crash is reported like a background task's."""
    crash_project(pytester, TASK_GROUP_POLLER, runner)
    result = run(pytester, "-o", "timeout=10", timeout=60)
    # Reported at once, with the task's own exception, and not again at the end.
    check_crash_reports(result)


# --- pytest-asyncio building another session loop mid-run ---------------------


@pytest.mark.parametrize("how", ["loop_factories", "event_loop_policy"])
def test_resources_stop_cleanly_before_each_session_loop_closes(
    pytester: pytest.Pytester, how: str
) -> None:
    """Each loop's resources stop, in reverse and in their task, before it closes."""
    project(pytester, "asyncio_mode = strict")
    if how == "loop_factories":
        conftest = """
        import asyncio

        def pytest_asyncio_loop_factories(config, item):
            return {
                "first": asyncio.new_event_loop,
                "second": asyncio.SelectorEventLoop,
            }
        """
    else:
        conftest = """
        import asyncio

        import pytest

        @pytest.fixture(scope="session", params=["first", "second"])
        def event_loop_policy(request):
            return asyncio.DefaultEventLoopPolicy()
        """
    pytester.makeconftest(conftest)
    pytester.makepyfile(
        test_sample="""
        import pytest

        @pytest.mark.asyncio(loop_scope="session")
        async def test_repo(repo):
            assert repo == "repo(db(real))"

        @pytest.mark.asyncio(loop_scope="session")
        async def test_db(db):
            assert db == "db(real)"
        """
    )
    result = run(pytester, "-W", "ignore::DeprecationWarning", plugin="asyncio")
    result.assert_outcomes(passed=4)
    assert result.ret == pytest.ExitCode.OK
    assert "never awaited" not in result.stdout.str() + result.stderr.str()
    once = ["settings up", "db up", "repo up", "repo down", "db down", "settings down"]
    assert events(pytester) == once * 2


# --- a narrower lifespan_kit_registry fixture ---------------------------------


def test_a_registry_fixture_that_gives_no_registry_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    """An override of the registry fixture must return a registry."""
    project(pytester)
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def lifespan_kit_registry():
            return {"db": "fake"}
        """
    )
    pytester.makepyfile(test_sample="def test_db(db):\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture gave a dict, not a lifespan_kit Registry*"])


def test_a_function_scoped_registry_fixture_does_not_accumulate_resources(
    pytester: pytest.Pytester,
) -> None:
    """Resources live no longer than the registry fixture they come from."""
    project(pytester)
    pytester.makeconftest(
        """
        import pytest
        from sample_app import registry

        @pytest.fixture
        def lifespan_kit_registry():
            return registry.override(settings={"dsn": "test"})
        """
    )
    pytester.makepyfile(
        test_sample="""
        import pytest

        @pytest.mark.anyio
        @pytest.mark.parametrize("anyio_backend", ["asyncio"])
        @pytest.mark.parametrize("round", [1, 2, 3])
        async def test_db(db, round):
            assert db == "db(test)"
        """
    )
    run(pytester).assert_outcomes(passed=3)
    assert events(pytester) == ["db up", "db down"] * 3


# --- names that clash with pytest's and plugins' fixtures ---------------------

CLASHING_APP = """
from lifespan_kit import Registry

registry = Registry()
registry.add("request", "a request")
registry.add("tmp_path", "a path")
registry.add("free_tcp_port", 8000)
registry.add("capsys", "the app's console")
registry.add("clock", "clock")
"""


def test_resources_named_like_plugin_fixtures_are_refused(
    pytester: pytest.Pytester,
) -> None:
    """A clash with pytest's or a plugin's fixture names each resource and a fix."""
    project(pytester, app=CLASHING_APP)
    pytester.makepyfile(test_sample="def test_nothing():\n    pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*has resources named like fixtures of pytest or of an active plugin*",
            "*resource 'capsys' would replace the fixture 'capsys' of pytest*",
            "*resource 'free_tcp_port' would replace the fixture 'free_tcp_port' of"
            " anyio.pytest_plugin*",
            "*resource 'request' would replace the fixture 'request' of pytest*",
            "*resource 'tmp_path' would replace the fixture 'tmp_path' of pytest*",
            '*lifespan_kit_prefix = "res_"*res_capsys*',
        ]
    )
    assert "'clock'" not in result.stderr.str()


def test_a_prefix_resolves_the_clash(pytester: pytest.Pytester) -> None:
    """With a prefix the resources and pytest's fixtures live side by side."""
    project(pytester, "lifespan_kit_prefix = res_", app=CLASHING_APP)
    pytester.makepyfile(
        test_sample="""
        def test_both(res_tmp_path, tmp_path, res_request, request):
            assert res_tmp_path == "a path"
            assert tmp_path.is_dir()
            assert res_request == "a request"
        """
    )
    run(pytester).assert_outcomes(passed=1)


@pytest.mark.parametrize("where", ["root", "sub"])
def test_a_conftest_registry_with_a_clash_is_refused(
    pytester: pytest.Pytester, where: str
) -> None:
    """In a conftest, a name another fixture depends on is refused (tmpdir's)."""
    pytester.makepyfile(sample_app=CLASHING_APP)
    pytester.makeini("[pytest]\npythonpath = .\n")
    folder = pytester.path if where == "root" else pytester.mkpydir("sub")
    Path(folder, "conftest.py").write_text(
        "from sample_app import registry as lifespan_kit_registry\n"
    )
    Path(folder, "test_sample.py").write_text("def test_nothing():\n    pass\n")
    result = run(pytester)
    assert result.ret != pytest.ExitCode.OK
    output = result.stdout.str() + result.stderr.str()
    assert (
        "resource 'tmp_path' would replace the fixture 'tmp_path' of pytest" in output
    )
    assert "other fixtures depend on those" in output
    assert "conftest.py" in output
    assert "'capsys'" not in output  # nothing else depends on pytest's capsys


def test_a_conftest_resource_overrides_a_leaf_fixture_in_its_directory(
    pytester: pytest.Pytester,
) -> None:
    """A conftest's `cache` resource is the cache there; pytest's stays elsewhere."""
    pytester.makepyfile(
        sample_app="""
        from lifespan_kit import Registry

        registry = Registry()
        registry.add("cache", "the app's cache")
        """
    )
    pytester.makeini("[pytest]\npythonpath = .\n")
    folder = pytester.mkpydir("app_tests")
    Path(folder, "conftest.py").write_text(
        "from sample_app import registry as lifespan_kit_registry\n"
    )
    Path(folder, "test_app.py").write_text(
        'def test_app_cache(cache):\n    assert cache == "the app\'s cache"\n'
    )
    pytester.makepyfile(
        test_elsewhere="""
        def test_pytest_cache(cache):
            cache.set("key", 1)
            assert cache.get("key", None) == 1
        """
    )
    pytester.runpytest_subprocess("-p", "anyio", "-p", "no:asyncio").assert_outcomes(
        passed=2
    )


# --- other runners: xdist, random order, --lf ----------------------------------

ORDER_TESTS = """
import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.mark.parametrize("round", range(4))
async def test_real(repo, round):
    assert repo == "repo(db(real))"


@pytest.mark.lifespan_kit(db="fake-db")
@pytest.mark.parametrize("round", range(4))
async def test_overridden(repo, round):
    assert repo == "repo(fake-db)"


class TestClass:
    pytestmark = pytest.mark.lifespan_kit(db="class-db")

    @pytest.mark.parametrize("round", range(2))
    async def test_class(self, repo, round):
        assert repo == "repo(class-db)"


def test_sync(repo):
    assert repo == "repo(db(real))"
"""


def assert_one_task_each(pytester: pytest.Pytester) -> None:
    logged = events(pytester)
    assert logged.count("db up") == logged.count("db down") > 0
    assert not [event for event in logged if "IN ANOTHER TASK" in event]


@pytest.mark.parametrize("seed", [1, 2])
def test_overrides_never_leak_in_random_order(
    pytester: pytest.Pytester, seed: int
) -> None:
    """Shuffled by pytest-randomly, every test still sees its own overrides."""
    project(pytester)
    pytester.makepyfile(test_sample=ORDER_TESTS)
    result = run(pytester, f"--randomly-seed={seed}", plugins=("randomly",))
    result.assert_outcomes(passed=21)
    assert_one_task_each(pytester)


def test_works_under_xdist(pytester: pytest.Pytester) -> None:
    """Each xdist worker holds its own resources, entered and exited in one task."""
    project(pytester)
    pytester.makepyfile(test_sample=ORDER_TESTS)
    result = run(pytester, "-n", "2", plugins=("xdist",))
    result.assert_outcomes(passed=21)
    assert_one_task_each(pytester)


def test_last_failed_reruns_see_their_own_overrides(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--lf runs only the failures, each still with its own overrides."""
    project(pytester)
    pytester.makepyfile(
        test_sample=ORDER_TESTS
        + textwrap.dedent(
            """

            @pytest.mark.lifespan_kit(db="other-db")
            async def test_fails_once(repo):
                import os

                assert repo == "repo(other-db)"
                assert os.environ.get("SECOND_RUN")
            """
        )
    )
    args = ("-p", "anyio", "-p", "no:asyncio")
    disabled = [f"-pno:{name}" for name in OPTIONAL_PLUGINS]
    first = pytester.runpytest_subprocess(*args, *disabled)
    first.assert_outcomes(passed=21, failed=2)
    monkeypatch.setenv("SECOND_RUN", "1")
    second = pytester.runpytest_subprocess(*args, *disabled, "--lf")
    outcomes = second.parseoutcomes()
    assert (outcomes["passed"], outcomes.get("failed", 0)) == (2, 0)
    assert_one_task_each(pytester)


def test_a_reported_error_without_a_cause_loses_only_its_own_frames() -> None:
    """An error with no cause is reported with no traceback of the machinery."""
    from lifespan_kit._pytest_layers import _prepared  # a unit of the reports
    from lifespan_kit.errors import ResourceFailedError

    try:
        raise ResourceFailedError("poller")
    except ResourceFailedError as error:
        prepared = _prepared(error)
    assert prepared.__traceback__ is None
    assert prepared.__cause__ is None
