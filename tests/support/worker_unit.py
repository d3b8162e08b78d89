"""The production container's `docker run` flags, read from the one place they are written:
the role's systemd unit template (roles/fondation_worker/templates/fondation-worker@.service.j2).

The template is rendered with the role's defaults and vars plus the caller's overrides (role
variables, as an inventory would set them), its ExecStart split into argv, and every flag
turned into Docker SDK ``containers.run`` arguments. A flag this parser does not know fails
loudly: a new hardening flag in the unit cannot be silently missing from the chaos fleet.
"""

from __future__ import annotations

import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .paths import REPO_ROOT

ROLE = REPO_ROOT / "roles" / "fondation_worker"
UNIT_TEMPLATE = ROLE / "templates" / "fondation-worker@.service.j2"


@dataclass
class ContainerFlags:
    """The unit's ``docker run`` for one replica, as Docker SDK arguments."""

    image: str = ""
    user: str = ""
    read_only: bool = False
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    pids_limit: int | None = None
    mem_limit: str | None = None
    tmpfs: dict[str, str] = field(default_factory=dict)
    # host path or volume name -> {"bind": container path, "mode": "rw" | "ro"}
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    env_files: list[str] = field(default_factory=list)
    publish: list[str] = field(default_factory=list)
    network: str | None = None  # the egress network (roles/egress_proxy), when on
    labels: dict[str, str] = field(default_factory=dict)
    log_config: dict[str, Any] = field(default_factory=dict)
    # --rm, --name, --pull, --attach: how systemd runs it, not what the container is.
    lifecycle: dict[str, str] = field(default_factory=dict)

    def hardening(self) -> dict[str, Any]:
        """What confines the container: the arguments every worker container must carry."""
        kwargs: dict[str, Any] = {
            "user": self.user,
            "read_only": self.read_only,
            "cap_drop": self.cap_drop,
            "security_opt": self.security_opt,
            "tmpfs": self.tmpfs,
        }
        if self.pids_limit is not None:
            kwargs["pids_limit"] = self.pids_limit
        if self.mem_limit is not None:
            kwargs["mem_limit"] = self.mem_limit
        return kwargs

    def hardening_argv(self) -> list[str]:
        """The same confinement as ``docker run`` flags (for callers of the docker CLI)."""
        argv = ["--user", self.user]
        if self.read_only:
            argv.append("--read-only")
        for capability in self.cap_drop:
            argv += ["--cap-drop", capability]
        for option in self.security_opt:
            argv += ["--security-opt", option]
        if self.pids_limit is not None:
            argv += ["--pids-limit", str(self.pids_limit)]
        if self.mem_limit is not None:
            argv += ["--memory", self.mem_limit]
        for path, options in self.tmpfs.items():
            argv += ["--tmpfs", f"{path}:{options}" if options else path]
        return argv

    def volume_at(self, prefix: str) -> str:
        """Where the volume whose name starts with ``prefix`` is mounted (``fondation-work-``:
        the worker's TEMP_DIR)."""
        return next(v["bind"] for k, v in self.volumes.items() if k.startswith(prefix))


def _role_variables(overrides: dict[str, Any]) -> dict[str, Any]:
    """defaults/main.yml and vars/main.yml, with the overrides on top. Values that are
    templates themselves are rendered when plain Jinja2 can (``default(...)``), else kept as
    a ``<name>`` placeholder (Ansible-only filters, inventory facts)."""
    values: dict[str, Any] = {}
    for part in ("defaults", "vars"):
        loaded = yaml.safe_load((ROLE / part / "main.yml").read_text()) or {}
        values.update(loaded)
    values.update(overrides)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    resolved: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, str) and "{{" in value and name not in overrides:
            try:
                with warnings.catch_warnings():  # regex escapes in Ansible-only expressions
                    warnings.simplefilter("ignore", DeprecationWarning)
                    value = env.from_string(value).render()
            except (jinja2.TemplateError, TypeError):
                value = f"<{name}>"
        resolved[name] = value
    return resolved


def exec_start_argv(replica: str = "1", **overrides: Any) -> list[str]:
    """The unit's ExecStart for replica ``replica`` (systemd's %i), split into argv."""
    env = jinja2.Environment(  # the template module's settings in Ansible
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    variables = {"ansible_managed": "Ansible managed", **_role_variables(overrides)}
    text = env.from_string(UNIT_TEMPLATE.read_text()).render(**variables)
    command: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            inside = True
            line = line.removeprefix("ExecStart=")
        if inside:
            command.append(line.rstrip().removesuffix("\\"))
            if not line.rstrip().endswith("\\"):
                break
    if not command:
        raise ValueError(f"no ExecStart in {UNIT_TEMPLATE}")
    return shlex.split(" ".join(command).replace("%i", replica))


def container_flags(replica: str = "1", **overrides: Any) -> ContainerFlags:
    """The unit's ``docker run`` flags for ``replica``, with role variables ``overrides``."""
    return parse_docker_run(exec_start_argv(replica, **overrides))


def parse_docker_run(argv: list[str]) -> ContainerFlags:
    """A ``/usr/bin/docker run ... IMAGE`` argv as ContainerFlags."""
    if argv[:2] != ["/usr/bin/docker", "run"]:
        raise ValueError(f"ExecStart is not a docker run: {argv[:3]}")
    flags = ContainerFlags()
    args = iter(argv[2:])
    for arg in args:
        if not arg.startswith("--"):
            flags.image = arg
            if next(args, None) is not None:
                raise ValueError(f"arguments after the image {arg} in the unit's docker run")
            break
        match arg:
            case "--read-only":
                flags.read_only = True
            case "--rm":
                flags.lifecycle["rm"] = "true"
            case "--name" | "--pull" | "--attach":
                flags.lifecycle[arg[2:]] = next(args)
            case "--user":
                flags.user = next(args)
            case "--cap-drop":
                flags.cap_drop.append(next(args))
            case "--security-opt":
                flags.security_opt.append(next(args))
            case "--pids-limit":
                flags.pids_limit = int(next(args))
            case "--memory":
                flags.mem_limit = next(args)
            case "--tmpfs":
                path, _, options = next(args).partition(":")
                flags.tmpfs[path] = options
            case "--volume":
                source, target, *mode = next(args).split(":")
                flags.volumes[source] = {"bind": target, "mode": mode[0] if mode else "rw"}
            case "--publish":
                flags.publish.append(next(args))
            case "--network":
                flags.network = next(args)
            case "--env-file":
                flags.env_files.append(next(args))
            case "--env":
                key, _, value = next(args).partition("=")
                flags.environment[key] = value
            case "--label":
                key, _, value = next(args).partition("=")
                flags.labels[key] = value
            case "--log-driver":
                flags.log_config["type"] = next(args)
            case "--log-opt":
                key, _, value = next(args).partition("=")
                flags.log_config.setdefault("config", {})[key] = value
            case _:
                raise ValueError(
                    f"{UNIT_TEMPLATE.name}: docker run flag {arg} is unknown to "
                    f"{Path(__file__).name}: map it, so chaos runs what production runs"
                )
    return flags
