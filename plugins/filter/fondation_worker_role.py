"""Filters of the fondation_worker role: the rows, decisions and commands its plays used to
compute in Jinja, as plain Python that pytest reaches (tests/unit/test_role_filters.py).

Kamal builds every command in code and tests the strings; so does this file:

- ``fondation_worker_cli``: how to run the worker CLI on a host (argv and where it runs);
- ``fondation_worker_status_rows`` / ``fondation_worker_status_report``: what
  ``playbooks/status.yml`` says about each replica, from systemd, ``docker container ls``
  and the two HTTP probes;
- ``fondation_worker_check_lines``: the verdict line ``fondation-worker check`` printed for
  one check, per replica.

ansible.cfg and the Molecule base config point Ansible at this directory (filter_plugins).
The functions take what the tasks registered (plain lists and dicts) and return plain data;
nothing here imports Ansible.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# systemd's view of a replica: [replica, load, active, sub] (discover.yml).
NO_UNIT = ("", "not-loaded", "inactive", "dead")
# Docker's view: [replica, state, image, version label, Claude CLI version label].
NO_CONTAINER = ("", "absent", "", "", "")
_IMAGE_ID = re.compile(r"^sha256:([0-9a-f]{12})[0-9a-f]*$")


def short_id(image: str) -> str:
    """``sha256:<64 hex>`` as its first 12 hex digits; anything else unchanged."""
    found = _IMAGE_ID.match(image or "")
    return found.group(1) if found else (image or "")


def cli(
    running: Sequence[int],
    image: str,
    *,
    operator_token: bool,
    uid: int | str,
    gid: int | str,
    env_file: str,
    extra_volumes: Sequence[str] = (),
    credential_file: str | None = None,
    egress_network: str | None = None,
    egress_proxy_url: str | None = None,
) -> dict[str, Any]:
    """How to run ``fondation-worker`` on the host: inside the first running replica
    (``docker exec``), else in a throwaway container of ``image`` confined as a replica is
    (read-only, no capabilities, the image's user, the worker's env file, its credential's
    env file, its network and proxy when egress is enforced, and the extra volumes).

    With ``operator_token`` the argv passes OPERATOR_TOKEN by name only (``-e
    OPERATOR_TOKEN``): its value comes from the command's environment, never argv.
    Returns ``{"argv": [...], "where": "<for the report>"}``.
    """
    env = ["-e", "OPERATOR_TOKEN"] if operator_token else []
    if running:
        replica = f"fondation-worker-{running[0]}"
        return {
            "argv": ["docker", "exec", *env, replica, "fondation-worker"],
            "where": f"inside {replica}",
        }
    if not image:
        raise ValueError("no replica runs and no image is deployed: deploy the worker first")
    argv = [
        "docker",
        "run",
        *env,
        "--rm",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        f"--user={uid}:{gid}",
        f"--env-file={env_file}",
        *([f"--env-file={credential_file}"] if credential_file else []),
        *(
            [
                f"--network={egress_network}",
                *(
                    f"--env={name}={egress_proxy_url}"
                    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
                ),
            ]
            if egress_network and egress_proxy_url
            else []
        ),
        *(f"--volume={volume}" for volume in extra_volumes),
        image,
        "fondation-worker",
    ]
    return {
        "argv": argv,
        "where": f"in a throwaway container of {short_id(image)} (no replica runs)",
    }


def _by_replica(
    entries: Sequence[Sequence[str]], replica: int, missing: Sequence[str]
) -> list[str]:
    for entry in entries:
        if entry and str(entry[0]) == str(replica):
            # Older workers' containers have fewer labels: pad to the full row.
            return [*map(str, entry), *missing[len(entry) :]]
    return list(missing)


def _json(probe: Mapping[str, Any]) -> dict[str, Any]:
    body = probe.get("json")
    return dict(body) if isinstance(body, Mapping) else {}


def _first(*candidates: tuple[Mapping[str, Any], str], default: Any) -> Any:
    """The value of the first mapping that has the key (even when it is null)."""
    for body, key in candidates:
        if key in body:
            return body[key]
    return default


def status_rows(
    replicas: Sequence[int],
    units: Sequence[Sequence[str]],
    containers: Sequence[Sequence[str]],
    healthz: Sequence[Mapping[str, Any]],
    readyz: Sequence[Mapping[str, Any]],
    current_image: str,
) -> list[dict[str, Any]]:
    """One row per replica: its unit, container, /healthz and /readyz put together.

    ``healthz`` and ``readyz`` are the registered ``uri`` results, one per replica in the
    order of ``replicas`` (``status`` -1 and a ``msg`` when nothing answered). A replica
    still running its start-up checks is ``starting``, not failed. ``current_job``,
    ``version`` and ``claude_cli`` (the worker's ``claude_cli_version``) come from the
    worker's JSON; workers that do not send them fall back on the image's labels (the job is
    then "unknown"). ``layers`` are the defence layers /readyz names (Landlock and its ABI...).
    """
    if not (len(replicas) == len(healthz) == len(readyz)):
        raise ValueError("one /healthz and one /readyz result per replica")
    rows = []
    for replica, health, ready in zip(replicas, healthz, readyz, strict=True):
        unit = _by_replica(units, replica, NO_UNIT)
        container = _by_replica(containers, replica, NO_CONTAINER)
        code = int(health.get("status", -1))
        ready_code = int(ready.get("status", -1))
        hjson, rjson = _json(health), _json(ready)
        health_text = str(health.get("msg", "no answer")) if code < 0 else f"HTTP {code}"
        reasons_default = [] if ready_code == 200 else [str(ready.get("msg", "no answer"))]
        job = (
            _first((hjson, "current_job"), (rjson, "current_job"), default="unknown (not reported)")
            if hjson or rjson
            else "unknown"
        )
        rows.append(
            {
                "replica": int(replica),
                "unit": f"{unit[2]}/{unit[3]}",
                "container": container[1],
                "image": short_id(container[2]),
                "current_image": container[2] == current_image,
                "healthy": code == 200,
                "health": hjson.get("status", health_text),
                "ready": ready_code == 200,
                "starting": bool(rjson.get("starting", False)) and ready_code != 200,
                "reasons": list(rjson.get("reasons", reasons_default)),
                "current_job": job,
                "version": _first(
                    (hjson, "version"), (rjson, "version"), default=container[3] or "unknown"
                ),
                "claude_cli": _first(
                    (hjson, "claude_cli_version"),
                    (rjson, "claude_cli_version"),
                    default=container[4] or "unknown",
                )
                or "unknown",
                # The defence layers /readyz names (empty from workers that predate them).
                "layers": dict(rjson.get("layers") or {}),
            }
        )
    return rows


def _readiness(row: Mapping[str, Any]) -> str:
    if row["ready"]:
        return "ready"
    reasons = "; ".join(str(r) for r in row["reasons"])
    return ("starting: " if row["starting"] else "NOT ready: ") + reasons


def _layers(row: Mapping[str, Any]) -> str:
    layers: Mapping[str, Any] = row.get("layers") or {}
    if not layers:
        return "unknown (not reported)"
    return ", ".join(f"{name} {state}" for name, state in layers.items())


def status_report(rows: Sequence[Mapping[str, Any]], host: str, current_image: str) -> list[str]:
    """The status play's report: a summary line for the host, then one line per replica."""
    healthy = sum(1 for row in rows if row["healthy"])
    ready = sum(1 for row in rows if row["ready"])
    lines = [
        f"{host}: {len(rows)} replica(s) found ({healthy} healthy, {ready} ready); image.env "
        f"points at {short_id(current_image) or 'nothing'}."
    ]
    for row in rows:
        image = ""
        if row["image"]:
            elsewhere = "" if row["current_image"] else ", NOT the one image.env names"
            image = f" (image {row['image']}{elsewhere})"
        job = row["current_job"] if row["current_job"] is not None else "none"
        lines.append(
            f"[{row['replica']}] unit {row['unit']}, container {row['container']}{image}, "
            f"health {row['health']}, {_readiness(row)}, job {job}, version {row['version']}, "
            f"Claude CLI {row['claude_cli']}, layers {_layers(row)}."
        )
    return lines


def check_lines(results: Sequence[Mapping[str, Any]], check: str) -> dict[int, str]:
    """Per replica (the loop variable of each registered result of a loop over replicas),
    the line ``fondation-worker check`` printed for ``check`` (``ok    claude: ...``), or
    why there is none."""
    pattern = re.compile(rf"^(ok|FAIL|warn)\s+{re.escape(check)}: .*$", re.MULTILINE)
    verdicts = {}
    for result in results:
        found = pattern.search(str(result.get("stdout", "")))
        if found:
            line = found.group(0)
        elif result.get("skipped"):
            line = "not checked (skipped)"
        else:
            line = f"no {check} line in the output of fondation-worker check"
            stderr = str(result.get("stderr", "")).strip()
            if stderr:
                line += f" ({stderr.splitlines()[-1]})"
        verdicts[int(result[str(result["ansible_loop_var"])])] = line
    return verdicts


class FilterModule:
    """Ansible's entry point: the filters by the names the role's tasks use."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "fondation_worker_cli": cli,
            "fondation_worker_status_rows": status_rows,
            "fondation_worker_status_report": status_report,
            "fondation_worker_check_lines": check_lines,
        }
