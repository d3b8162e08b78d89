"""Worker configuration from the environment (pydantic-settings).

Every duration is in milliseconds and its name ends in ``_MS``, every size in MiB (``_MB``);
``units.seconds`` turns milliseconds into seconds. Each field names, in ``json_schema_extra``,
its unit and the Ansible role variable that sets it in production (or what sets it instead):
``python -m fondation_worker.reference`` writes docs/CONFIGURATION.md and the role's bounds
from them. ``load_settings`` returns valid settings or raises ``ConfigError`` with one message
per problem; the CLI prints them one per line and exits 2.

Which credential each command needs is declared once, in ``CREDENTIALS``: the worker's
commands need ``WORKER_TOKEN``, the operator's ``OPERATOR_TOKEN`` only (an operator's laptop
never holds a worker's credential), ``status`` either. ``load_settings(command)`` names only
what that command lacks.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, JsonValue, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError
from .healthcheck import DEFAULT_HEALTH_BIND, parse_bind
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


def _doc(unit: str = "", role: str = "", note: str = "") -> dict[str, JsonValue]:
    """A setting's unit and the role variable that sets it (``note``: what does, if none)."""
    return {"unit": unit, "role_variable": role, "note": note}


# Settings whose name gained its unit (issue 18): the old name is refused, not ignored.
RENAMED = (
    "POLL_INTERVAL_MS",
    "IDLE_POLL_MAX_MS",
    "JOB_TIMEOUT_MS",
    "STEP_TIMEOUT_MS",
    "CLONE_TIMEOUT_MS",
    "DRAIN_TIMEOUT_MS",
)


def renamed_problems(environ: Mapping[str, str]) -> list[str]:
    """One line per old, unit-less name still set, naming its replacement."""
    problems = []
    for new in RENAMED:
        old = new.removesuffix("_MS")
        if environ.get(old, ""):
            problems.append(f"{old}: no longer read; set {new} (milliseconds) instead")
    return problems


@dataclass(frozen=True)
class Credential:
    """What a group of commands authenticates to Convex with: the first of ``settings`` that
    is set (a tuple of Settings fields, in order of preference)."""

    who: str
    commands: tuple[str, ...]
    settings: tuple[str, ...]
    hint: str

    def missing(self) -> str:
        """The config-error line when none of ``settings`` is set."""
        names = " or ".join(name.upper() for name in self.settings)
        which = "one is" if len(self.settings) > 1 else "is"
        commands = ", ".join(self.commands)
        return f"{names}: {which} required by {self.who} ({commands}) but not set: {self.hint}"


# The one place that says which credential each command needs. Convex accepts only the
# operator token for the operator functions and only the worker token for the worker's; the
# queue counts (`status`) take either, so it runs inside a replica and on a laptop alike.
CREDENTIALS = (
    Credential(
        "the worker commands",
        ("run", "check"),
        ("worker_token",),
        "set it to the Convex deployment's WORKER_TOKEN",
    ),
    Credential(
        "the operator commands",
        ("enqueue", "stuck", "reclaim", "requeue", "cancel"),
        ("operator_token",),
        "set it to the Convex deployment's OPERATOR_TOKEN; the worker token has no operator rights",
    ),
    Credential(
        "the queue counts command",
        ("status",),
        ("operator_token", "worker_token"),
        "the operator's token, or the worker's inside a replica",
    ),
)


def credential_of(command: str) -> Credential:
    """The credential ``command`` needs (``KeyError`` for a command that needs none)."""
    for credential in CREDENTIALS:
        if command in credential.commands:
            return credential
    raise KeyError(command)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
        frozen=True,
        env_ignore_empty=True,
    )

    # Convex
    convex_url: str = Field(
        description="Convex deployment URL (https; http only on loopback)",
        json_schema_extra=_doc(role="fondation_worker_convex_url"),
    )
    # Required by the commands CREDENTIALS says (run, check), not by the operator's.
    worker_token: SecretStr | None = Field(
        None,
        description="shared worker token (Convex env WORKER_TOKEN), required by run and check",
        json_schema_extra=_doc(role="fondation_worker_token"),
    )
    # Only the CLI's operator commands use it, and they need it (Convex accepts no other
    # token for them); a running worker never needs it.
    operator_token: SecretStr | None = Field(
        None,
        description="operator token (Convex env OPERATOR_TOKEN), required by the operator commands",
        json_schema_extra=_doc(
            role="fondation_worker_operator_token",
            note="handed to the runbook plays' CLI runs only, never written to the hosts",
        ),
    )
    convex_timeout_ms: int = Field(
        10_000,
        ge=500,
        le=120_000,
        description="timeout of one Convex HTTP call",
        json_schema_extra=_doc("ms", "fondation_worker_convex_timeout_ms"),
    )

    # Polling and leases
    poll_interval_ms: int = Field(
        5_000,
        ge=100,
        le=3_600_000,
        description="time between polls while work is found",
        json_schema_extra=_doc("ms", "fondation_worker_poll_interval_ms"),
    )
    idle_poll_max_ms: int = Field(
        32_000,
        ge=100,
        le=3_600_000,
        description="ceiling of the idle back-off between polls",
        json_schema_extra=_doc("ms", "fondation_worker_idle_poll_max_ms"),
    )
    # The wake path (wakeup.py): subscribe to jobs:wakeup over Convex's WebSocket protocol
    # and claim when it says a job is due. While subscribed, the HTTP poll only runs every
    # SAFETY_POLL_MS; while the subscription is down, polling is as above.
    wakeup: bool = Field(
        True,
        description="subscribe to jobs:wakeup (WebSocket) and claim when a job is due",
        json_schema_extra=_doc(role="fondation_worker_wakeup"),
    )
    safety_poll_ms: int = Field(
        360_000,
        ge=1_000,
        le=3_600_000,
        description="time between polls while subscribed",
        json_schema_extra=_doc("ms", "fondation_worker_safety_poll_ms"),
    )
    max_concurrent_jobs: int = Field(
        1,
        ge=1,
        le=32,
        description="jobs one worker runs at once",
        json_schema_extra=_doc(role="fondation_worker_max_concurrent_jobs"),
    )
    worker_id: str = Field(
        default_factory=default_worker_id,
        description="this worker's name in Convex (default: host name and a random suffix)",
        json_schema_extra=_doc(
            role="fondation_worker_id_prefix", note="replica i gets <prefix>-<i> from the unit"
        ),
    )
    lease_ms: int = Field(
        90_000,
        ge=1_000,
        le=3_600_000,
        description="job lease; Convex refuses a longer one (convex/lib/policy.ts)",
        json_schema_extra=_doc("ms", "fondation_worker_lease_ms"),
    )
    heartbeat_ms: int = Field(
        20_000,
        ge=200,
        le=1_800_000,
        description="time between heartbeats; under half of LEASE_MS",
        json_schema_extra=_doc("ms", "fondation_worker_heartbeat_ms"),
    )

    # Timeouts
    job_timeout_ms: int = Field(
        3_600_000,
        ge=1_000,
        le=86_400_000,
        description="time one job may run",
        json_schema_extra=_doc("ms", "fondation_worker_job_timeout_ms"),
    )
    step_timeout_ms: int = Field(
        1_800_000,
        ge=1_000,
        le=86_400_000,
        description="time one pipeline step (one claude run) may take; at most JOB_TIMEOUT_MS",
        json_schema_extra=_doc("ms", "fondation_worker_step_timeout_ms"),
    )
    clone_timeout_ms: int = Field(
        600_000,
        ge=1_000,
        le=86_400_000,
        description="time the git clone may take; at most JOB_TIMEOUT_MS",
        json_schema_extra=_doc("ms", "fondation_worker_clone_timeout_ms"),
    )
    drain_timeout_ms: int = Field(
        90_000,
        ge=0,
        le=3_600_000,
        description="time a stopping worker gets to finish its jobs before releasing them",
        json_schema_extra=_doc("ms", "fondation_worker_drain_timeout_ms"),
    )
    auth_recheck_ms: int = Field(
        300_000,
        ge=100,
        le=86_400_000,
        description="time between Claude checks while paused on an authentication failure",
        json_schema_extra=_doc("ms", "fondation_worker_auth_recheck_ms"),
    )

    # Disk and repositories
    temp_dir: Path = Field(
        Path("/tmp/fondation"),  # noqa: S108 - inside the container, a volume per replica
        description="job workspaces",
        json_schema_extra=_doc(note="fixed: the image sets it, a volume per replica is mounted"),
    )
    min_free_disk_mb: int = Field(
        1024,
        ge=0,
        description="free space TEMP_DIR needs before a job starts",
        json_schema_extra=_doc("MiB", "fondation_worker_min_free_disk_mb"),
    )
    max_repo_mb: int = Field(
        500,
        ge=1,
        description="largest repository clone",
        json_schema_extra=_doc("MiB", "fondation_worker_max_repo_mb"),
    )
    allowed_repo_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["github.com"],
        description="comma-separated hosts the worker clones from",
        json_schema_extra=_doc(role="fondation_worker_allowed_repo_hosts"),
    )
    git_bin: str = Field(
        "git", description="git program", json_schema_extra=_doc(note="fixed: the image's git")
    )
    git_ca_bundle: Path | None = Field(
        None,
        description="extra CA bundle for git over https",
        json_schema_extra=_doc(
            note="test only: fondation_worker_extra_env with fondation_worker_extra_volumes"
        ),
    )

    # Claude CLI
    claude_bin: str = Field(
        "claude",
        description="Claude Code CLI program",
        json_schema_extra=_doc(note="fixed: the image sets it to its pinned CLI"),
    )
    claude_model: str | None = Field(
        None,
        description="--model for every claude run (default: the CLI's)",
        json_schema_extra=_doc(role="fondation_worker_claude_model"),
    )
    claude_max_turns: int = Field(
        40,
        ge=1,
        le=1000,
        description="--max-turns for every claude run",
        json_schema_extra=_doc(role="fondation_worker_claude_max_turns"),
    )
    claude_max_budget_usd: float | None = Field(
        None,
        gt=0,
        description="--max-budget-usd for every claude run (default: none)",
        json_schema_extra=_doc("USD", "fondation_worker_claude_max_budget_usd"),
    )
    claude_config_dir: Path | None = Field(
        None,
        description="writable CLAUDE_CONFIG_DIR of the claude runs",
        json_schema_extra=_doc(note="fixed: the image sets it, the unit mounts a tmpfs there"),
    )
    # A read-only mount of an operator's login, copied into CLAUDE_CONFIG_DIR at start.
    claude_credentials_source: Path | None = Field(
        None,
        description="read-only login copied into CLAUDE_CONFIG_DIR at start",
        json_schema_extra=_doc(
            note="fixed: the image sets it; the unit mounts fondation_worker_credentials_dir"
        ),
    )
    claude_env_passthrough: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated extra environment names handed to claude",
        json_schema_extra=_doc(role="fondation_worker_claude_env_passthrough"),
    )
    anthropic_api_key: SecretStr | None = Field(
        None,
        description="Anthropic API key for claude",
        json_schema_extra=_doc(role="claude_credentials_api_key"),
    )
    claude_code_oauth_token: SecretStr | None = Field(
        None,
        description="token of `claude setup-token` for claude",
        json_schema_extra=_doc(role="claude_credentials_oauth_token"),
    )
    # The process layer around each claude run (sandbox.py): "landlock" confines it to its
    # clone, config dir and TMPDIR; "off" runs it with the worker's own filesystem view.
    claude_sandbox: Literal["off", "landlock"] = Field(
        "off",
        description="confine each claude run (landlock) or not (off)",
        json_schema_extra=_doc(role="fondation_worker_claude_sandbox"),
    )

    # Health and logs
    health_bind: str = Field(
        DEFAULT_HEALTH_BIND,
        description="HOST:PORT of the health endpoint",
        json_schema_extra=_doc(
            note="fixed by the role inside the container; the host port is "
            "fondation_worker_health_port"
        ),
    )
    log_format: Literal["json", "console"] = Field(
        "json",
        description="log line format",
        json_schema_extra=_doc(role="fondation_worker_log_format"),
    )
    log_file: Path | None = Field(
        None,
        description="also write the log lines to this file",
        json_schema_extra=_doc(
            note="fixed: the unit sets one per replica under fondation_worker_log_dir"
        ),
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info",
        description="lowest level logged",
        json_schema_extra=_doc(role="fondation_worker_log_level"),
    )

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
        secrets_ = (
            self.worker_token,
            self.operator_token,
            self.anthropic_api_key,
            self.claude_code_oauth_token,
        )
        return [secret.get_secret_value() for secret in secrets_ if secret is not None]

    def token_for(self, command: str) -> SecretStr:
        """The token ``command`` calls Convex with (CREDENTIALS); ``ConfigError`` naming
        what is missing when none is set."""
        credential = credential_of(command)
        for name in credential.settings:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                return value
        raise ConfigError([credential.missing()])

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


def _is_set(field: str, environ: Mapping[str, str]) -> bool:
    """Whether the environment sets ``field`` as Settings reads it (any case, not empty)."""
    return any(name.lower() == field and value for name, value in environ.items())


def load_settings(command: str = "run") -> Settings:
    """Settings for ``command`` from the process environment, its credential included
    (CREDENTIALS); ``ConfigError`` (one line per problem)."""
    renamed = renamed_problems(os.environ)
    if renamed:
        raise ConfigError(renamed)
    credential = credential_of(command)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = [_describe(dict(e)) for e in exc.errors()]
        invalid = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")}
        # Report a missing credential with the other problems, not on the next attempt.
        if not invalid & set(credential.settings) and not any(
            _is_set(name, os.environ) for name in credential.settings
        ):
            problems.append(credential.missing())
        raise ConfigError(problems) from None
    problems = settings.cross_field_problems()
    try:
        settings.token_for(command)
    except ConfigError as exc:
        problems = exc.problems + problems
    if problems:
        raise ConfigError(problems)
    return settings
