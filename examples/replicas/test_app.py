"""The reports service: one migration, one leader, fenced writes, and its two run modes.

The data always lives in PostgreSQL, in a schema of each test's own (the
tests skip without a server, and fail in CI). Most tests replace the lock
backend with `MemoryLocks`, shared by the lifespans that stand for replicas;
the others run the real one, in-process and as a worker process.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import asyncpg
import httpx
import pytest
import redis.asyncio
from pydantic import SecretStr, ValidationError

from examples.replicas.app import Resources, SupersededError, registry
from examples.replicas.database import SCHEMA_VERSION, WRITE_REPORT, open_database
from examples.replicas.settings import Settings, default_replica_name
from examples.replicas.web import create_app
from lifespan_kit import Registry
from lifespan_kit.errors import BackgroundTaskError, LockLostError
from lifespan_kit.replicas import Locks, MemoryLocks
from tests.integrations.driver import LifespanFailedError, open_client
from tests.servers import postgres_dsn, redis_url

ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT = 20.0
FAST = {"lease": 0.6, "renew_deadline": 0.4, "retry": 0.05, "interval": 0.05}
WAITS_FOR_A_LOCK = """select exists (select from pg_stat_activity
    where application_name = $1 and wait_event_type = 'Lock')"""


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run on asyncio only: the service's drivers (asyncpg, redis.asyncio) need it."""
    return str(request.param)


@pytest.fixture(autouse=True)
def no_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test chooses every setting it depends on."""
    for variable in os.environ:
        if variable.startswith("REPLICAS_"):
            monkeypatch.delenv(variable)


@dataclass(frozen=True)
class Deployment:
    """One deployment of the service: its database schema and its lock names."""

    database_url: str
    service_name: str

    def settings(self, replica_name: str, **changes: object) -> Settings:
        options: dict[str, object] = {
            "database_url": SecretStr(self.database_url),
            "service_name": self.service_name,
            "replica_name": replica_name,
            **FAST,
            **changes,
        }
        return Settings.model_validate(options)

    def replica(self, name: str, locks: Locks) -> Registry:
        """A replica that shares the in-process `locks` with the others."""
        return registry.override(settings=self.settings(name), locks=locks)

    async def reports(self) -> list[tuple[str, int]]:
        """Who wrote each report, with which token, oldest first (none unmigrated)."""
        connection = await asyncpg.connect(self.database_url)
        try:
            rows = await connection.fetch(
                "select written_by, token from reports order by id"
            )
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await connection.close()
        return [(str(row["written_by"]), int(row["token"])) for row in rows]

    async def wait_for_report(
        self, written_by: Callable[[str], bool] = bool, *, count: int = 1
    ) -> tuple[str, int]:
        """Wait for `count` reports by writers `written_by` accepts; return the last."""
        with anyio.fail_after(TIMEOUT):
            while True:
                found = [
                    report for report in await self.reports() if written_by(report[0])
                ]
                if len(found) >= count:
                    return found[-1]
                await anyio.sleep(0.02)


@pytest.fixture
async def deployment() -> AsyncIterator[Deployment]:
    """A schema of the test's own (the search_path of its URL), dropped after."""
    dsn = postgres_dsn()
    tag = secrets.token_hex(4)
    schema = f"replicas_example_{tag}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"create schema {schema}")
        separator = "&" if "?" in dsn else "?"
        yield Deployment(f"{dsn}{separator}search_path={schema}", f"reports-{tag}")
    finally:
        await admin.execute(f"drop schema {schema} cascade")
        await admin.close()


async def run_until(
    replica: Registry,
    stop: anyio.Event,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a replica, started, until `stop` is set."""
    async with replica.lifespan(Resources):
        task_status.started()
        await stop.wait()


# --- one migration, one leader ----------------------------------------------------


async def test_the_first_replica_migrates_and_leads_the_second_stands_by(
    deployment: Deployment,
) -> None:
    """Only the first replica runs the migration and writes reports, with its token."""
    locks = MemoryLocks()
    first = deployment.replica("replica-a", locks).lifespan(Resources)
    second = deployment.replica("replica-b", locks).lifespan(Resources)
    async with first as a, second as b:
        await deployment.wait_for_report(count=5)  # the standby had time to write
        reports = await deployment.reports()
    assert (a.migrations.ran, b.migrations.ran) == (True, False)
    assert a.migrations.version == b.migrations.version == SCHEMA_VERSION
    assert set(reports) == {("replica-a", 1)}


async def test_the_standby_takes_over_with_a_newer_token_when_the_leader_stops(
    deployment: Deployment,
) -> None:
    """Reports go on from the other replica, whose token is greater."""
    locks = MemoryLocks()
    stop_leader = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(run_until, deployment.replica("replica-a", locks), stop_leader)
        await deployment.wait_for_report()
        async with deployment.replica("replica-b", locks).lifespan(Resources):
            stop_leader.set()
            await deployment.wait_for_report(lambda name: name == "replica-b")
    reports = await deployment.reports()
    writers = [name for name, _ in reports]
    switch = writers.index("replica-b")
    assert set(writers[:switch]) == {"replica-a"}
    assert set(writers[switch:]) == {"replica-b"}
    assert reports[0][1] < reports[-1][1]


# --- fencing ----------------------------------------------------------------------


async def test_a_report_with_an_older_token_is_refused(deployment: Deployment) -> None:
    """Once token 5 wrote, token 3 writes nothing; 5 and newer tokens still write."""
    async with open_database(deployment.database_url, app_name="test") as database:
        await database.migrate()
        written = [
            await database.write_report(token=token, written_by=f"token {token}")
            for token in (5, 3, 5, 6, 5)
        ]
        latest = await database.latest_reports()
    assert [report_id is not None for report_id in written] == [
        True,
        False,
        True,
        True,
        False,
    ]
    assert [report.token for report in latest] == [6, 5, 5]


async def test_an_older_token_racing_a_newer_one_waits_then_writes_nothing(
    deployment: Deployment,
) -> None:
    """The fence's row lock makes the older write wait for the newer's commit."""
    refused: list[int | None] = []
    async with open_database(deployment.database_url, app_name="older") as database:
        await database.migrate()
        newer = await asyncpg.connect(deployment.database_url)
        observer = await asyncpg.connect(deployment.database_url)
        try:
            transaction = newer.transaction()
            await transaction.start()
            assert await newer.fetchval(WRITE_REPORT, 6, "newer") is not None

            async def write_older() -> None:
                refused.append(await database.write_report(token=5, written_by="older"))

            async def older_waits() -> bool:
                waits: bool = await observer.fetchval(WAITS_FOR_A_LOCK, "older")
                return waits

            async with anyio.create_task_group() as tg:
                tg.start_soon(write_older)
                with anyio.fail_after(TIMEOUT):
                    while not await older_waits():  # noqa: ASYNC110  # on the server
                        await anyio.sleep(0.02)
                await transaction.commit()
        finally:
            await observer.close()
            await newer.close()
        latest = await database.latest_reports()
    assert refused == [None]
    assert [(report.token, report.written_by) for report in latest] == [(6, "newer")]


async def test_a_leader_fenced_off_by_a_newer_token_fails(
    deployment: Deployment,
) -> None:
    """Its job raises SupersededError, which fails the replica's lifespan."""

    async def supersede_the_leader() -> None:
        lifespan = deployment.replica("replica-a", MemoryLocks()).lifespan(Resources)
        async with lifespan as resources:
            await deployment.wait_for_report()
            await resources.db.write_report(token=10**9, written_by="a newer leader")
            with anyio.fail_after(TIMEOUT):
                await lifespan.wait_failed()

    with pytest.raises(BackgroundTaskError) as info:
        await supersede_the_leader()
    assert info.value.resource_name == "report_job"
    assert isinstance(info.value.__cause__, SupersededError)
    assert "fencing token 1:" in str(info.value.__cause__)


# --- the web app ------------------------------------------------------------------


async def test_the_web_app_serves_reports_and_health(deployment: Deployment) -> None:
    """/reports lists the leader's reports; /readyz and /livez answer 200."""
    replica = deployment.replica("replica-a", MemoryLocks())
    async with open_client(create_app(replica)) as client:
        await deployment.wait_for_report()
        reports = await client.get("/reports")
        ready = await client.get("/readyz")
        live = await client.get("/livez")
    assert reports.status_code == 200
    assert {report["written_by"] for report in reports.json()} == {"replica-a"}
    assert ready.status_code == 200
    assert ready.json()["resources"]["db"]["status"] == "healthy"
    assert live.json() == {"status": "alive", "lifespan": "running"}


async def test_a_lost_lock_turns_the_health_routes_to_503(
    deployment: Deployment,
) -> None:
    """The job is cancelled with LockLostError; /livez and /readyz name it."""
    locks = MemoryLocks()
    key = deployment.settings("replica-a").lock_key("report-job")
    app = create_app(deployment.replica("replica-a", locks))
    answers: list[httpx.Response] = []

    async def lose_the_lock() -> None:
        async with open_client(app) as client:
            await deployment.wait_for_report()
            locks.expire(key)  # as if this replica had not renewed in time
            with anyio.fail_after(TIMEOUT):
                # Polls the route, as a prober does.
                while (live := await client.get("/livez")).status_code == 200:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            answers.extend([live, await client.get("/readyz")])

    with pytest.raises(LifespanFailedError) as info:
        await lose_the_lock()
    live, ready = answers
    assert info.value.event == "lifespan.shutdown.failed"
    assert isinstance(info.value.__cause__, BackgroundTaskError)
    assert isinstance(info.value.__cause__.__cause__, LockLostError)
    assert ready.status_code == 503
    for body in (live.json(), ready.json()):
        assert body["status"] == "failed"
        assert f"Lock '{key}'" in body["failed"]["report_job"]


async def test_on_postgres_locks_readyz_says_which_replica_leads(
    deployment: Deployment,
) -> None:
    """With the real lock backend, the locks' health check names the leader's key."""
    replica = registry.override(settings=deployment.settings("replica-a"))
    async with open_client(create_app(replica)) as client:
        await deployment.wait_for_report()
        ready = await client.get("/readyz")
    key = deployment.settings("replica-a").lock_key("report-job")
    locks = ready.json()["resources"]["locks"]
    assert ready.status_code == 200
    assert locks["status"] == "healthy"
    assert locks["detail"].startswith("PostgreSQL at ")
    assert f"leading '{key}'" in locks["detail"]


# --- settings ---------------------------------------------------------------------


def test_settings_come_from_replicas_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """REPLICAS_* variables set the backend and the timing; the name has a default."""
    monkeypatch.setenv("REPLICAS_DATABASE_URL", "postgresql://app@db/app")
    monkeypatch.setenv("REPLICAS_LOCKS", "redis")
    monkeypatch.setenv("REPLICAS_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("REPLICAS_LEASE", "6")
    monkeypatch.setenv("REPLICAS_RENEW_DEADLINE", "4")
    monkeypatch.setenv("REPLICAS_RETRY", "1")
    settings = Settings()  # type: ignore[call-arg]  # database_url: from the environment
    assert settings.locks == "redis"
    assert (settings.timing.lease, settings.timing.renew_deadline) == (6, 4)
    assert settings.timing.retry == 1
    assert settings.replica_name == default_replica_name()
    assert str(os.getpid()) in settings.replica_name
    assert settings.lock_key("migrations") == "reports:migrations"


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        pytest.param({"REPLICAS_LOCKS": "redis"}, "REPLICAS_REDIS_URL", id="redis"),
        pytest.param(
            {"REPLICAS_LEASE": "5", "REPLICAS_RENEW_DEADLINE": "5"},
            "not in decreasing order",
            id="timing",
        ),
        pytest.param(
            {"REPLICAS_LOCKS": "zookeeper"}, "'postgres' or 'redis'", id="kind"
        ),
    ],
)
def test_inconsistent_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], problem: str
) -> None:
    """Redis locks need a URL; lease > renew_deadline > retry; two backends only."""
    monkeypatch.setenv("REPLICAS_DATABASE_URL", "postgresql://app@db/app")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=problem):
        Settings()  # type: ignore[call-arg]  # database_url: from the environment


# --- as a worker process ----------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "locks"),
    [
        pytest.param(("-m", "examples.replicas"), "postgres", id="module-postgres"),
        pytest.param(
            ("-m", "lifespan_kit", "run", "examples.replicas.app:main"),
            "redis",
            id="command-line-redis",
        ),
    ],
)
async def test_the_worker_writes_reports_and_stops_on_sigterm(
    deployment: Deployment, tmp_path: Path, command: tuple[str, ...], locks: str
) -> None:
    """Run as a process, it migrates, leads, writes reports, and exits 143."""
    environment = {
        **os.environ,
        "REPLICAS_DATABASE_URL": deployment.database_url,
        "REPLICAS_SERVICE_NAME": deployment.service_name,
        "REPLICAS_REPLICA_NAME": "worker-1",
        "REPLICAS_LOCKS": locks,
        **{f"REPLICAS_{name.upper()}": str(value) for name, value in FAST.items()},
    }
    locks_url = redis_url() if locks == "redis" else None
    if locks_url is not None:
        environment["REPLICAS_REDIS_URL"] = locks_url
    output = tmp_path / "worker.log"
    try:
        with output.open("wb") as log:
            process = await anyio.open_process(
                [sys.executable, *command],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            with anyio.fail_after(TIMEOUT):
                while "worker-1" not in dict(await deployment.reports()):
                    assert process.returncode is None, output.read_text()
                    await anyio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(TIMEOUT):
                status = await process.wait()
        finally:
            kill_group(process)
    finally:
        if locks_url is not None:
            await delete_redis_keys(locks_url, deployment.service_name)
    text = output.read_text()
    assert status == 143, text
    assert "Schema version 1, migrated by this replica." in text
    assert "Leading the report job" in text


def kill_group(process: anyio.abc.Process) -> None:
    """Kill the process and anything it started, unless it has already exited."""
    if process.returncode is None:
        os.killpg(process.pid, signal.SIGKILL)


async def delete_redis_keys(url: str, prefix: str) -> None:
    """Delete what the Redis lock backend wrote under `prefix`."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
