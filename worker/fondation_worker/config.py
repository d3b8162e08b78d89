"""Worker configuration from the environment (pydantic-settings).

Every duration is in milliseconds (``*_MS`` or the seed's ``POLL_INTERVAL_MS``/``*_TIMEOUT``),
every size in MiB. ``load_settings`` returns valid settings or raises ``ConfigError`` with one
message per problem; the CLI prints them one per line and exits 2.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError
from .healthcheck import parse_bind
from .validate import parse_allowed_hosts

_WORKER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-\[\]]{0,127}$")

# Environment variables handed to ``claude`` besides the worker's own settings: proxies,
# CA bundles, locale and the CLI's own credentials. Never WORKER_TOKEN or a GitHub token.
DEFAULT_CLAUDE_ENV_PASSTHROUGH = (
    "ANTHROPIC_API_KEY",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "LANG",
    "LC_ALL",
    "TZ",
)

SECRET_FIELDS = frozenset(
    {"worker_token", "operator_token", "anthropic_api_key", "claude_code_oauth_token"}
)


def default_worker_id() -> str:
    host = re.sub(r"[^A-Za-z0-9._\-]", "-", socket.gethostname())[:100] or "worker"
    return f"{host}-{secrets.token_hex(3)}"


def _is_local_host(host: str) -> bool:
    if host in ("localhost", "host.docker.internal") or "." not in host:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
        frozen=True,
        env_ignore_empty=True,
    )

    # Convex
    convex_url: str = Field(description="Convex deployment URL (https; http only on loopback)")
    worker_token: SecretStr = Field(description="shared worker token (Convex env WORKER_TOKEN)")
    # Only the CLI's operator commands use it, and they need it (Convex accepts no other
    # token for them); a running worker never needs it.
    operator_token: SecretStr | None = Field(
        None,
        description="operator token (Convex env OPERATOR_TOKEN), required by the operator commands",
    )
    convex_timeout_ms: int = Field(10_000, ge=500, le=120_000)

    # Polling and leases
    poll_interval_ms: int = Field(5_000, ge=100, le=3_600_000, description="ms between polls")
    idle_poll_max_ms: int = Field(32_000, ge=100, le=3_600_000, description="idle poll ceiling")
    # The wake path (wakeup.py): subscribe to jobs:wakeup over Convex's WebSocket protocol
    # and claim when it says a job is due. While subscribed, the HTTP poll only runs every
    # SAFETY_POLL_MS; while the subscription is down, polling is as above.
    wakeup: bool = Field(True, description="subscribe to jobs:wakeup (WebSocket)")
    safety_poll_ms: int = Field(
        360_000, ge=1_000, le=3_600_000, description="ms between polls while subscribed"
    )
    max_concurrent_jobs: int = Field(1, ge=1, le=32)
    worker_id: str = Field(default_factory=default_worker_id)
    lease_ms: int = Field(90_000, ge=1_000, le=3_600_000)
    heartbeat_ms: int = Field(20_000, ge=200, le=1_800_000)

    # Timeouts
    job_timeout_ms: int = Field(3_600_000, ge=1_000, le=86_400_000, description="ms per job")
    step_timeout_ms: int = Field(1_800_000, ge=1_000, le=86_400_000, description="ms per step")
    clone_timeout_ms: int = Field(600_000, ge=1_000, le=86_400_000, description="ms for git clone")
    drain_timeout_ms: int = Field(90_000, ge=0, le=3_600_000, description="ms to drain on stop")
    auth_recheck_ms: int = Field(300_000, ge=100, le=86_400_000)

    # Disk and repositories
    temp_dir: Path = Path("/tmp/fondation")  # noqa: S108 - the seed's documented default
    min_free_disk_mb: int = Field(1024, ge=0)
    max_repo_mb: int = Field(500, ge=1)
    allowed_repo_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["github.com"]
    )
    git_bin: str = "git"
    git_ca_bundle: Path | None = None

    # Claude CLI
    claude_bin: str = "claude"
    claude_model: str | None = None
    claude_max_turns: int = Field(40, ge=1, le=1000)
    claude_max_budget_usd: float | None = Field(None, gt=0)
    claude_config_dir: Path | None = None
    # A read-only mount of an operator's login, copied into CLAUDE_CONFIG_DIR at start.
    claude_credentials_source: Path | None = None
    claude_env_passthrough: Annotated[list[str], NoDecode] = Field(default_factory=list)
    anthropic_api_key: SecretStr | None = None
    claude_code_oauth_token: SecretStr | None = None
    # The process layer around each claude run (sandbox.py): "landlock" confines it to its
    # clone, config dir and TMPDIR; "off" runs it with the worker's own filesystem view.
    claude_sandbox: Literal["off", "landlock"] = "off"

    # Health and logs
    health_bind: str = "127.0.0.1:8080"
    log_format: Literal["json", "console"] = "json"
    log_file: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("convex_url")
    @classmethod
    def _convex_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not contain credentials, a query or a fragment")
        if parts.scheme == "http" and not _is_local_host(parts.hostname):
            raise ValueError("must use https:// (http:// is only accepted for local hosts)")
        return value

    @field_validator("worker_token", "operator_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if len(raw) < 16:
            raise ValueError("must be at least 16 characters")
        if raw != raw.strip() or any(c.isspace() for c in raw):
            raise ValueError("must not contain whitespace")
        return value

    @field_validator("anthropic_api_key", "claude_code_oauth_token")
    @classmethod
    def _claude_credential(cls, value: SecretStr | None) -> SecretStr | None:
        # A value pasted with its quotes or a trailing newline (an env file written by hand)
        # would reach the CLI as is and fail every job with an authentication error.
        if value is None:
            return None
        raw = value.get_secret_value()
        if any(c.isspace() or not c.isprintable() or c in "\"'" for c in raw):
            raise ValueError("must not contain whitespace, quotes or control characters")
        return value

    @field_validator("worker_id")
    @classmethod
    def _worker_id(cls, value: str) -> str:
        if not _WORKER_ID.match(value):
            raise ValueError("must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
        return value

    @field_validator("allowed_repo_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> list[str]:
        hosts = parse_allowed_hosts(value if isinstance(value, str | list | tuple) else str(value))
        if not hosts:
            raise ValueError("must name at least one host")
        for host in hosts:
            if not re.fullmatch(r"[a-z0-9.\-]+(:\d{1,5})?", host):
                raise ValueError(f"{host!r} is not a host name")
        return hosts

    @field_validator("claude_env_passthrough", mode="before")
    @classmethod
    def _passthrough(cls, value: Any) -> list[str]:
        items = value.split(",") if isinstance(value, str) else list(value)
        names = [str(i).strip() for i in items if str(i).strip()]
        for name in names:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name.upper() in ("WORKER_TOKEN", "FONDATION_GIT_TOKEN"):
                raise ValueError(f"{name} must never reach claude")
        return names

    @field_validator("temp_dir")
    @classmethod
    def _temp_dir(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        if value == Path("/"):
            raise ValueError("must not be /")
        return value

    @field_validator("claude_config_dir", "claude_credentials_source", "log_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    @field_validator("git_ca_bundle")
    @classmethod
    def _ca_bundle(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @field_validator("claude_model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not _MODEL.match(value.strip()):
            raise ValueError("is not a model name")
        return value.strip()

    @field_validator("claude_bin", "git_bin")
    @classmethod
    def _binary(cls, value: str) -> str:
        if not value.strip() or value.startswith("-") or any(c.isspace() for c in value):
            raise ValueError("must be a program name or path without spaces")
        return value

    @field_validator("health_bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        parse_bind(value)
        return value.strip()

    # --- derived ----------------------------------------------------------------------

    @property
    def health_address(self) -> tuple[str, int]:
        return parse_bind(self.health_bind)

    @property
    def jobs_dir(self) -> Path:
        return self.temp_dir / "jobs"

    def claude_passthrough_names(self) -> list[str]:
        return [*DEFAULT_CLAUDE_ENV_PASSTHROUGH, *self.claude_env_passthrough]

    def secret_values(self) -> list[str]:
        values = [self.worker_token.get_secret_value()]
        for secret in (self.operator_token, self.anthropic_api_key, self.claude_code_oauth_token):
            if secret is not None:
                values.append(secret.get_secret_value())
        return values

    def cross_field_problems(self) -> list[str]:
        problems: list[str] = []
        if self.heartbeat_ms * 2 >= self.lease_ms:
            problems.append(
                f"HEARTBEAT_MS: {self.heartbeat_ms} must be less than half of LEASE_MS "
                f"({self.lease_ms}), so a lost heartbeat can be retried before the lease ends"
            )
        if self.idle_poll_max_ms < self.poll_interval_ms:
            problems.append(
                f"IDLE_POLL_MAX_MS: {self.idle_poll_max_ms} must be at least POLL_INTERVAL_MS "
                f"({self.poll_interval_ms})"
            )
        if self.step_timeout_ms > self.job_timeout_ms:
            problems.append(
                f"STEP_TIMEOUT_MS: {self.step_timeout_ms} must not exceed JOB_TIMEOUT_MS "
                f"({self.job_timeout_ms})"
            )
        if self.clone_timeout_ms > self.job_timeout_ms:
            problems.append(
                f"CLONE_TIMEOUT_MS: {self.clone_timeout_ms} must not exceed JOB_TIMEOUT_MS "
                f"({self.job_timeout_ms})"
            )
        if self.claude_credentials_source is not None and self.claude_config_dir is None:
            problems.append(
                "CLAUDE_CREDENTIALS_SOURCE: needs CLAUDE_CONFIG_DIR, the writable directory "
                "the login is copied into"
            )
        host = self.health_address[0]
        if host != "localhost":
            try:
                ipaddress.ip_address(host)
            except ValueError:
                problems.append("HEALTH_BIND: host must be an IP address or localhost")
        return problems


def _describe(error: dict[str, Any]) -> str:
    loc = error.get("loc") or ()
    field = str(loc[0]) if loc else "config"
    name = field.upper()
    kind = error.get("type", "")
    if kind == "missing":
        return f"{name}: is required but not set"
    message = str(error.get("msg", "is invalid"))
    message = message.removeprefix("Value error, ")
    if field in SECRET_FIELDS:
        return f"{name}: {message}"
    raw = error.get("input")
    if isinstance(raw, str | int | float) and not isinstance(raw, bool):
        shown = str(raw)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return f"{name}: {message} (got {shown!r})"
    return f"{name}: {message}"


def load_settings() -> Settings:
    """Settings from the process environment; ``ConfigError`` (one line per problem)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError([_describe(dict(e)) for e in exc.errors()]) from None
    problems = settings.cross_field_problems()
    if problems:
        raise ConfigError(problems)
    return settings
