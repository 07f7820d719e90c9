"""The service's configuration, read from the environment."""

from __future__ import annotations

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


class Settings(BaseSettings):
    """Configuration from environment variables, with embedded defaults.

    With no variable set, the service keeps its notes in an in-memory SQLite
    database and its cache in memory, so it runs with no server at all.
    ``DATABASE_URL=postgresql://...`` switches to PostgreSQL, and
    ``REDIS_URL=redis://...`` to Redis.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    database_url: SecretStr = SecretStr(f"{SQLITE_PREFIX}:memory:")
    redis_url: SecretStr | None = None
    cache_ttl: float = 60.0
    # Tags every connection (PostgreSQL application_name, Redis CLIENT SETNAME),
    # so the service's connections can be told apart on the server.
    app_name: str = "lifespan-kit-notes"
    db_pool_min_size: int = 1
    db_pool_max_size: int = 5

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, url: SecretStr) -> SecretStr:
        if not url.get_secret_value().startswith((SQLITE_PREFIX, *POSTGRES_PREFIXES)):
            message = "DATABASE_URL must start with sqlite:/// or postgresql://."
            raise ValueError(message)
        return url

    @property
    def uses_postgres(self) -> bool:
        """True when the database is PostgreSQL rather than SQLite."""
        return self.database_url.get_secret_value().startswith(POSTGRES_PREFIXES)

    @property
    def sqlite_path(self) -> str:
        """The SQLite file (or ":memory:") named by the database URL."""
        return self.database_url.get_secret_value().removeprefix(SQLITE_PREFIX)
