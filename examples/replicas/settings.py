"""The service's settings, read from ``REPLICAS_*`` environment variables."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lifespan_kit.replicas import Timing


def default_replica_name() -> str:
    """Name this replica by its host (a pod's name) and its process id."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class Settings(BaseSettings):
    """Configuration from the environment.

    ``REPLICAS_DATABASE_URL`` (required) is the PostgreSQL server that holds the
    reports. ``REPLICAS_LOCKS`` picks the lock backend that coordinates the
    replicas: ``postgres`` (advisory locks on that same server, the default) or
    ``redis`` (leases on ``REPLICAS_REDIS_URL``). ``REPLICAS_LEASE``,
    ``REPLICAS_RENEW_DEADLINE`` and ``REPLICAS_RETRY`` are the locks' timing in
    seconds (15, 10 and 2, as Kubernetes' leader election), and
    ``REPLICAS_INTERVAL`` the seconds between two reports.
    ``REPLICAS_SERVICE_NAME`` starts the name of every lock the service takes,
    so that two services can share a server; ``REPLICAS_REPLICA_NAME`` is how
    this replica appears to the others (the host name and pid by default).
    """

    model_config = SettingsConfigDict(
        env_prefix="REPLICAS_", frozen=True, extra="forbid"
    )

    database_url: SecretStr
    locks: Literal["postgres", "redis"] = "postgres"
    redis_url: SecretStr | None = None
    lease: float = Field(default=15.0, gt=0)
    renew_deadline: float = Field(default=10.0, gt=0)
    retry: float = Field(default=2.0, gt=0)
    interval: float = Field(default=60.0, gt=0)
    service_name: str = Field(default="reports", min_length=1, max_length=100)
    replica_name: str = Field(default_factory=default_replica_name, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.locks == "redis" and self.redis_url is None:
            message = "REPLICAS_REDIS_URL is required when REPLICAS_LOCKS=redis."
            raise ValueError(message)
        _ = self.timing  # lease > renew_deadline > retry, or a ValueError
        return self

    @property
    def timing(self) -> Timing:
        """The locks' lease, renewal deadline and retry period."""
        return Timing(
            lease=self.lease, renew_deadline=self.renew_deadline, retry=self.retry
        )

    def lock_key(self, name: str) -> str:
        """The name of one of the service's locks, unique to the service."""
        return f"{self.service_name}:{name}"
