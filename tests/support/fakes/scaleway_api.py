"""A fake of Scaleway's public Instance API, for the `scaleway_instance` role's tests.

It serves, on loopback and in memory, exactly the endpoints the role calls, with the paths,
JSON shapes, status codes and error bodies of Scaleway's published API:

- ``/instance/v1/zones/{zone}/servers`` (list, create), ``/servers/{id}`` (get, delete),
  ``/servers/{id}/action`` (poweron, poweroff, reboot, terminate),
  ``/servers/{id}/user_data/{key}`` (get, set: text/plain);
- ``/instance/v1/zones/{zone}/ips`` (list, create), ``/ips/{id}`` (get, update, delete);
- ``/instance/v1/zones/{zone}/security_groups`` (list, create), ``/security_groups/{id}``
  (get, update, delete), ``/security_groups/{id}/rules`` (list, replace);
- ``/instance/v1/zones/{zone}/volumes/{id}`` (delete a detached local volume) and
  ``/block/v1/zones/{zone}/volumes/{id}`` (get, delete a block volume);
- ``/marketplace/v2/local-images`` (resolve an image label such as ``debian_bookworm``).

Behaviour worth knowing in a test:

- every instance/block request must carry ``X-Auth-Token: <token>``; otherwise 401
  ``{"type": "denied_authentication", ...}``. The marketplace is public, as Scaleway's is.
- a zone outside :data:`ZONES` answers 404 ``{"type": "unknown_resource", ...}``.
- a created server is ``stopped``; ``poweron`` makes it ``starting`` and it becomes
  ``running`` after ``polls_to_running`` GETs of that server. ``terminate`` makes it
  ``stopping`` and, ``polls_to_running`` GETs later, deletes it with its volumes (its flexible
  IP is detached, not deleted). DELETE of a server needs it stopped and leaves its volumes.
- a block volume left by a deleted server stays ``in_use`` (its reference ``detaching``) until
  the ``polls_to_detach``-th GET of it, which answers ``available``; deleting it before that
  answers 412 ``precondition_failed``, as Block Storage does for a volume in use.
- a rule's ``ip_range`` comes back the way Scaleway writes it: a single address without its
  prefix (``1.2.3.4/32`` is answered as ``1.2.3.4``, ``2001:db8::1/128`` as ``2001:db8::1``).
- ``quota`` set to ``"instance"`` or ``"standard"`` makes server creation answer 403 with the
  Instance API's legacy quota body or the standard ``quotas_exceeded`` body.
- every request is recorded in :attr:`FakeScaleway.requests` (never the token's value).

Run it alone with ``python tests/support/fakes/scaleway_api.py --port 8080 --token T``, or start it
from a test with ``FakeScaleway(token).start()``.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ZONES = frozenset(
    {
        "fr-par-1", "fr-par-2", "fr-par-3",
        "nl-ams-1", "nl-ams-2", "nl-ams-3",
        "pl-waw-1", "pl-waw-2", "pl-waw-3",
    }
)  # fmt: skip
ORGANIZATION = "11111111-1111-1111-1111-111111111111"

# What the Marketplace knows: label -> (image name, local image type, compatible types).
IMAGES = {
    "debian_bookworm": ("Debian Bookworm", "instance_local", ["DEV1-S", "DEV1-M", "DEV1-L"]),
    "debian_trixie": ("Debian Trixie", "instance_sbs", ["DEV1-S", "DEV1-M", "DEV1-L"]),
}
ROOT_VOLUME_SIZE = 20_000_000_000

# With enable_default_security, Scaleway blocks outbound SMTP with rules nobody may edit.
SMTP_PORTS = (25, 465, 587)

ALLOWED_ACTIONS = {
    "stopped": ["poweron", "backup"],
    "starting": [],
    "running": ["poweroff", "terminate", "reboot", "stop_in_place", "backup"],
    "stopping": [],
}


class ApiError(Exception):
    """An error answer: status code and Scaleway's JSON error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


def _unknown(kind: str, ident: str) -> ApiError:
    return ApiError(404, {"type": "unknown_resource", "message": f'{kind} "{ident}" not found'})


def _invalid(message: str) -> ApiError:
    return ApiError(400, {"type": "invalid_request_error", "message": message})


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorized: bool
    body: Any = None


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: str
    auth: bool = True


def _route(method: str, path: str, handler: str, auth: bool = True) -> _Route:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return _Route(method, re.compile(f"^{regex}$"), handler, auth)


_Z = "/instance/v1/zones/{zone}"
ROUTES = [
    _route("GET", f"{_Z}/servers", "list_servers"),
    _route("POST", f"{_Z}/servers", "create_server"),
    _route("GET", f"{_Z}/servers/{{server_id}}", "get_server"),
    _route("DELETE", f"{_Z}/servers/{{server_id}}", "delete_server"),
    _route("POST", f"{_Z}/servers/{{server_id}}/action", "server_action"),
    _route("GET", f"{_Z}/servers/{{server_id}}/user_data/{{key}}", "get_user_data"),
    _route("PATCH", f"{_Z}/servers/{{server_id}}/user_data/{{key}}", "set_user_data"),
    _route("GET", f"{_Z}/ips", "list_ips"),
    _route("POST", f"{_Z}/ips", "create_ip"),
    _route("GET", f"{_Z}/ips/{{ip_id}}", "get_ip"),
    _route("PATCH", f"{_Z}/ips/{{ip_id}}", "update_ip"),
    _route("DELETE", f"{_Z}/ips/{{ip_id}}", "delete_ip"),
    _route("GET", f"{_Z}/security_groups", "list_security_groups"),
    _route("POST", f"{_Z}/security_groups", "create_security_group"),
    _route("GET", f"{_Z}/security_groups/{{sg_id}}", "get_security_group"),
    _route("PATCH", f"{_Z}/security_groups/{{sg_id}}", "update_security_group"),
    _route("DELETE", f"{_Z}/security_groups/{{sg_id}}", "delete_security_group"),
    _route("GET", f"{_Z}/security_groups/{{sg_id}}/rules", "list_rules"),
    _route("PUT", f"{_Z}/security_groups/{{sg_id}}/rules", "set_rules"),
    _route("DELETE", f"{_Z}/volumes/{{volume_id}}", "delete_local_volume"),
    _route("GET", "/block/v1/zones/{zone}/volumes/{volume_id}", "get_block_volume"),
    _route("DELETE", "/block/v1/zones/{zone}/volumes/{volume_id}", "delete_block_volume"),
    _route("GET", "/marketplace/v2/local-images", "list_local_images", auth=False),
]


@dataclass
class FakeScaleway:
    """In-memory Scaleway. Start it, point the role's ``scaleway_instance_api_url`` at
    :attr:`url`, then inspect :attr:`servers`, :attr:`ips`, :attr:`security_groups`,
    :attr:`volumes` and :attr:`user_data`."""

    token: str
    host: str = "127.0.0.1"
    port: int = 0
    polls_to_running: int = 2
    polls_to_detach: int = 2
    quota: str | None = None
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    ips: dict[str, dict[str, Any]] = field(default_factory=dict)
    security_groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    user_data: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _countdown: dict[str, int] = field(default_factory=dict)
    _detaching: dict[str, int] = field(default_factory=dict)
    _terminating: set[str] = field(default_factory=set)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _addresses: Any = field(
        default_factory=lambda: (str(a) for a in ipaddress.ip_network("203.0.113.0/24").hosts())
    )
    _macs: Any = field(default_factory=lambda: itertools.count(1))
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the fake first"
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    def start(self) -> FakeScaleway:
        fake = self

        class Handler(_Handler):
            api = fake

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def reset(self) -> None:
        with self._lock:
            for table in (self.servers, self.ips, self.security_groups, self.rules):
                table.clear()
            for table2 in (self.volumes, self.user_data, self._countdown, self._detaching):
                table2.clear()
            self._terminating.clear()
            self.requests.clear()
            self.quota = None

    def add_rule(self, sg_id: str, **spec: Any) -> None:
        """Add an editable rule to a security group, as a hand edit in the console would."""
        with self._lock:
            zone = self._security_group(sg_id)["zone"]
            self.rules[sg_id].append(self._rule(zone, spec, editable=True))

    # --- dispatch ----------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes
    ) -> tuple[int, Any, str]:
        """Answer one request: (status, body, content type). Body None means no content."""
        split = urlsplit(raw_path)
        path = split.path.rstrip("/") or "/"
        query = parse_qs(split.query)
        authorized = headers.get("x-auth-token") == self.token
        content_type = headers.get("content-type", "")
        body: Any = None
        if raw_body:
            if content_type.startswith("application/json"):
                try:
                    body = json.loads(raw_body)
                except ValueError:
                    return 400, {"type": "invalid_request_error", "message": "bad JSON"}, "json"
            else:
                body = raw_body.decode("utf-8", errors="replace")
        with self._lock:
            self.requests.append(Request(method, path, query, authorized, body))
            for route in ROUTES:
                match = route.pattern.match(path)
                if match is None or route.method != method:
                    continue
                params = match.groupdict()
                try:
                    if route.auth and not authorized:
                        raise ApiError(401, self._denied(headers))
                    zone = params.get("zone")
                    if zone is not None and zone not in ZONES:
                        raise _unknown("Zone", zone)
                    status, payload = getattr(self, "_" + route.handler)(
                        query=query, body=body, **params
                    )
                except ApiError as exc:
                    return exc.status, exc.body, "json"
                if isinstance(payload, str):
                    return status, payload, "text"
                return status, payload, "json"
            if any(r.pattern.match(path) for r in ROUTES):
                return (
                    405,
                    {"type": "invalid_request_error", "message": "method not allowed"},
                    "json",
                )
            return 404, {"type": "not_found", "message": f"no such path: {path}"}, "json"

    @staticmethod
    def _denied(headers: dict[str, str]) -> dict[str, Any]:
        reason = "not_found" if headers.get("x-auth-token") else "invalid_argument"
        return {
            "type": "denied_authentication",
            "method": "api_key",
            "reason": reason,
            "message": "authentication is denied",
        }

    # --- helpers -------------------------------------------------------------------------

    def _server(self, server_id: str) -> dict[str, Any]:
        server = self.servers.get(server_id)
        if server is None:
            raise _unknown("Instance", server_id)
        return server

    def _security_group(self, sg_id: str) -> dict[str, Any]:
        group = self.security_groups.get(sg_id)
        if group is None:
            raise _unknown("Security group", sg_id)
        return group

    def _ip(self, ip_id: str) -> dict[str, Any]:
        ip = self.ips.get(ip_id)
        if ip is None:
            raise _unknown("IP", ip_id)
        return ip

    @staticmethod
    def _require(body: Any, *names: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _invalid("Validation Error")
        missing = {name: ["required key not provided"] for name in names if name not in body}
        if missing:
            raise ApiError(
                400,
                {"type": "invalid_request_error", "message": "Validation Error", "fields": missing},
            )
        return body

    def _set_state(self, server: dict[str, Any], state: str) -> None:
        server["state"] = state
        server["allowed_actions"] = list(ALLOWED_ACTIONS[state])
        server["modification_date"] = _now()

    def _server_ip(self, ip: dict[str, Any], dynamic: bool) -> dict[str, Any]:
        return {
            "id": ip["id"],
            "address": ip["address"],
            "gateway": "62.210.0.1",
            "netmask": "32",
            "family": "inet",
            "dynamic": dynamic,
            "provisioning_mode": "dhcp",
            "tags": list(ip["tags"]),
            "ipam_id": ip["ipam_id"],
            "state": "attached",
        }

    def _new_ip(self, zone: str, project: str, tags: list[str]) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "address": next(self._addresses),
            "prefix": None,
            "reverse": None,
            "server": None,
            "organization": ORGANIZATION,
            "project": project,
            "zone": zone,
            "type": "routed_ipv4",
            "state": "detached",
            "tags": list(tags),
            "ipam_id": str(uuid.uuid4()),
        }

    def _attach(self, ip: dict[str, Any], server: dict[str, Any] | None) -> None:
        previous = ip["server"]
        if previous is not None and previous["id"] in self.servers:
            owner = self.servers[previous["id"]]
            owner["public_ips"] = [p for p in owner["public_ips"] if p["id"] != ip["id"]]
            owner["public_ip"] = owner["public_ips"][0] if owner["public_ips"] else None
        if server is None:
            ip["server"], ip["state"] = None, "detached"
            return
        ip["server"] = {"id": server["id"], "name": server["name"]}
        ip["state"] = "attached"
        server["public_ips"] = [
            p for p in server["public_ips"] if not p["dynamic"] and p["id"] != ip["id"]
        ] + [self._server_ip(ip, dynamic=False)]
        server["public_ip"] = server["public_ips"][0]

    def _sg_summary(self, group: dict[str, Any]) -> dict[str, str]:
        return {"id": group["id"], "name": group["name"]}

    def _default_security_group(self, zone: str, project: str) -> dict[str, Any]:
        for group in self.security_groups.values():
            if group["project"] == project and group["project_default"] and group["zone"] == zone:
                return group
        _, payload = self._create_security_group(
            zone=zone,
            query={},
            body={"name": "Default security group", "project": project, "project_default": True},
        )
        return self.security_groups[payload["security_group"]["id"]]

    def _remove_server(self, server: dict[str, Any], delete_volumes: bool) -> None:
        server_id = server["id"]
        for volume in server["volumes"].values():
            if delete_volumes:
                self.volumes.pop(volume["id"], None)
            elif volume["id"] in self.volumes:
                left = self.volumes[volume["id"]]
                left["server"] = None
                if left["volume_type"] == "sbs_volume":  # detached a few polls later
                    left["was_on"] = server_id
                    self._detaching[volume["id"]] = self.polls_to_detach
        for ip in self.ips.values():
            if ip["server"] is not None and ip["server"]["id"] == server_id:
                ip["server"], ip["state"] = None, "detached"
        group = self.security_groups.get(server["security_group"]["id"])
        if group is not None:
            group["servers"] = [s for s in group["servers"] if s["id"] != server_id]
        self.user_data.pop(server_id, None)
        self._countdown.pop(server_id, None)
        self._terminating.discard(server_id)
        del self.servers[server_id]

    # --- marketplace -------------------------------------------------------------------

    def _list_local_images(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        label = query.get("image_label", [""])[0]
        zone = query.get("zone", ["fr-par-1"])[0]
        wanted_type = query.get("type", [""])[0]
        images = []
        if label in IMAGES and zone in ZONES:
            _name, image_type, types = IMAGES[label]
            if not wanted_type or wanted_type == image_type:
                images.append(
                    {
                        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{label}/{zone}/{image_type}")),
                        "compatible_commercial_types": list(types),
                        "arch": "x86_64",
                        "zone": zone,
                        "label": label,
                        "type": image_type,
                    }
                )
        return 200, {"local_images": images, "total_count": len(images)}

    def image_by_id(self, image_id: str, zone: str) -> tuple[str, str, str, list[str]] | None:
        """(label, name, type, compatible types) of a Marketplace local image id."""
        for label, (name, image_type, types) in IMAGES.items():
            if image_id == str(uuid.uuid5(uuid.NAMESPACE_URL, f"{label}/{zone}/{image_type}")):
                return label, name, image_type, types
        return None

    # --- servers -----------------------------------------------------------------------

    def _list_servers(self, zone: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        name = query.get("name", [None])[0]
        project = query.get("project", [None])[0]
        tags = [t for t in query.get("tags", [""])[0].split(",") if t]
        found = [
            s
            for s in self.servers.values()
            if s["zone"] == zone
            and (name is None or name in s["name"])
            and (project is None or s["project"] == project)
            and all(t in s["tags"] for t in tags)
        ]
        return 200, {"servers": found}

    def _create_server(self, zone: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        body = self._require(body, "commercial_type", "name")
        project = body.get("project") or body.get("organization") or ORGANIZATION
        if self.quota == "standard":
            raise ApiError(
                403,
                {
                    "type": "quotas_exceeded",
                    "message": "quota(s) exceeded for this resource",
                    "details": [{"resource": "instances_dev1_s_servers", "quota": 0, "current": 0}],
                },
            )
        if self.quota == "instance":
            raise ApiError(
                403,
                {
                    "type": "invalid_request_error",
                    "message": "Quota exceeded for this resource.",
                    "resource": "compute_servers_type_DEV1-S",
                },
            )
        image_ref = body.get("image")
        image = self.image_by_id(image_ref or "", zone)
        if image is None:
            raise _unknown("Image", str(image_ref))
        label, image_name, image_type, types = image
        commercial_type = body["commercial_type"]
        if commercial_type not in types:
            raise _invalid(f"image {label} is not compatible with {commercial_type}")
        if body.get("security_group"):
            group = self._security_group(body["security_group"])
        else:
            group = self._default_security_group(zone, project)
        server_id = str(uuid.uuid4())
        volume_type = "l_ssd" if image_type == "instance_local" else "sbs_volume"
        volume_id = str(uuid.uuid4())
        summary = {"id": server_id, "name": body["name"]}
        server_volume: dict[str, Any]
        if volume_type == "l_ssd":
            server_volume = {
                "boot": False,
                "id": volume_id,
                "name": image_name,
                "volume_type": "l_ssd",
                "export_uri": None,
                "organization": ORGANIZATION,
                "project": project,
                "server": summary,
                "size": ROOT_VOLUME_SIZE,
                "state": "available",
                "creation_date": _now(),
                "modification_date": _now(),
                "tags": [],
                "zone": zone,
            }
        else:  # block volumes appear in the server with only these fields
            server_volume = {
                "boot": False,
                "volume_type": "sbs_volume",
                "id": volume_id,
                "zone": zone,
            }
        self.volumes[volume_id] = {
            "id": volume_id,
            "volume_type": volume_type,
            "size": ROOT_VOLUME_SIZE,
            "server": summary,
            "project": project,
            "zone": zone,
        }
        mac = next(self._macs)
        server: dict[str, Any] = {
            "id": server_id,
            "name": body["name"],
            "arch": "x86_64",
            "commercial_type": commercial_type,
            "boot_type": "local",
            "organization": ORGANIZATION,
            "project": project,
            "hostname": body["name"],
            "image": {
                "id": image_ref,
                "name": image_name,
                "arch": "x86_64",
                "public": True,
                "state": "available",
                "zone": zone,
            },
            "volumes": {"0": server_volume},
            "tags": list(body.get("tags") or []),
            "state": "stopped",
            "protected": bool(body.get("protected", False)),
            "state_detail": "",
            "public_ip": None,
            "public_ips": [],
            "mac_address": f"de:00:00:00:{mac // 256:02x}:{mac % 256:02x}",
            "routed_ip_enabled": True,
            "ipv6": None,
            "extra_networks": [],
            "dynamic_ip_required": bool(body.get("dynamic_ip_required", True)),
            "enable_ipv6": False,
            "private_ip": None,
            "creation_date": _now(),
            "modification_date": _now(),
            "bootscript": None,
            "security_group": self._sg_summary(group),
            "location": None,
            "maintenances": [],
            "allowed_actions": list(ALLOWED_ACTIONS["stopped"]),
            "placement_group": None,
            "private_nics": [],
            "zone": zone,
            "filesystems": [],
            "end_of_service": False,
        }
        self.servers[server_id] = server
        group["servers"].append(summary)
        if body.get("public_ip"):
            self._attach(self._ip(body["public_ip"]), server)
        elif server["dynamic_ip_required"]:
            dynamic = self._new_ip(zone, project, [])
            server["public_ips"] = [self._server_ip(dynamic, dynamic=True)]
            server["public_ip"] = server["public_ips"][0]
        return 201, {"server": server}

    def _get_server(
        self, zone: str, server_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        server = self._server(server_id)
        if server["state"] in ("starting", "stopping"):
            left = self._countdown.get(server_id, 0) - 1
            self._countdown[server_id] = left
            if left <= 0:
                self._countdown.pop(server_id, None)
                if server["state"] == "starting":
                    self._set_state(server, "running")
                elif server_id in self._terminating:
                    self._remove_server(server, delete_volumes=True)
                    raise _unknown("Instance", server_id)
                else:
                    self._set_state(server, "stopped")
        return 200, {"server": server}

    def _delete_server(
        self, zone: str, server_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        server = self._server(server_id)
        if server["state"] != "stopped":
            raise _invalid("instance should be powered off.")
        self._remove_server(server, delete_volumes=False)
        return 204, None

    def _server_action(
        self, zone: str, server_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        server = self._server(server_id)
        action = self._require(body, "action")["action"]
        if action not in server["allowed_actions"]:
            raise _invalid(f"server should be {'running' if action != 'poweron' else 'stopped'}")
        if action == "poweron":
            self._set_state(server, "starting")
        elif action in ("poweroff", "stop_in_place"):
            self._set_state(server, "stopping")
        elif action == "terminate":
            self._terminating.add(server_id)
            self._set_state(server, "stopping")
        self._countdown[server_id] = self.polls_to_running
        task = {
            "id": str(uuid.uuid4()),
            "description": f"server_{action}",
            "status": "pending",
            "href_from": f"/servers/{server_id}/action",
            "href_result": f"/servers/{server_id}",
            "started_at": _now(),
            "terminated_at": None,
            "progress": 0,
            "zone": zone,
        }
        return 202, {"task": task}

    def _get_user_data(
        self, zone: str, server_id: str, key: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        self._server(server_id)
        value = self.user_data.get(server_id, {}).get(key)
        if value is None:
            raise _unknown("User data", key)
        return 200, value

    def _set_user_data(
        self, zone: str, server_id: str, key: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        self._server(server_id)
        if not isinstance(body, str):
            raise _invalid("user data must be sent as text/plain")
        self.user_data.setdefault(server_id, {})[key] = body
        return 204, None

    # --- flexible IPs ------------------------------------------------------------------

    def _list_ips(self, zone: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        project = query.get("project", [None])[0]
        tags = [t for t in query.get("tags", [""])[0].split(",") if t]
        found = [
            ip
            for ip in self.ips.values()
            if ip["zone"] == zone
            and (project is None or ip["project"] == project)
            and all(t in ip["tags"] for t in tags)
        ]
        return 200, {"ips": found}

    def _create_ip(self, zone: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        body = self._require(body, "project")
        if body.get("type", "routed_ipv4") != "routed_ipv4":
            raise _invalid("the fake only reserves routed_ipv4 addresses")
        ip = self._new_ip(zone, body["project"], body.get("tags") or [])
        self.ips[ip["id"]] = ip
        if body.get("server"):
            self._attach(ip, self._server(body["server"]))
        return 201, {"ip": ip}

    def _get_ip(
        self, zone: str, ip_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        return 200, {"ip": self._ip(ip_id)}

    def _update_ip(
        self, zone: str, ip_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        ip = self._ip(ip_id)
        body = self._require(body)
        if "server" in body:
            self._attach(ip, self._server(body["server"]) if body["server"] else None)
        if "tags" in body:
            ip["tags"] = list(body["tags"])
        if "reverse" in body:
            ip["reverse"] = body["reverse"]
        return 200, {"ip": ip}

    def _delete_ip(
        self, zone: str, ip_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        ip = self._ip(ip_id)
        self._attach(ip, None)
        del self.ips[ip_id]
        return 204, None

    # --- security groups ---------------------------------------------------------------

    def _list_security_groups(
        self, zone: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        name = query.get("name", [None])[0]
        project = query.get("project", [None])[0]
        found = [
            g
            for g in self.security_groups.values()
            if g["zone"] == zone
            and (name is None or name in g["name"])
            and (project is None or g["project"] == project)
        ]
        return 200, {"security_groups": found}

    def _create_security_group(
        self, zone: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        body = self._require(body, "name")
        sg_id = str(uuid.uuid4())
        group = {
            "id": sg_id,
            "name": body["name"],
            "description": body.get("description", ""),
            "enable_default_security": bool(body.get("enable_default_security", True)),
            "inbound_default_policy": body.get("inbound_default_policy", "accept"),
            "outbound_default_policy": body.get("outbound_default_policy", "accept"),
            "organization": ORGANIZATION,
            "project": body.get("project") or ORGANIZATION,
            "tags": list(body.get("tags") or []),
            "project_default": bool(body.get("project_default", False)),
            "organization_default": False,
            "servers": [],
            "stateful": bool(body.get("stateful", True)),
            "state": "available",
            "zone": zone,
            "creation_date": _now(),
            "modification_date": _now(),
        }
        self.security_groups[sg_id] = group
        self.rules[sg_id] = []
        if group["enable_default_security"]:
            for position, port in enumerate(SMTP_PORTS, start=1):
                self.rules[sg_id].append(
                    self._rule(
                        zone,
                        {
                            "protocol": "TCP",
                            "direction": "outbound",
                            "action": "drop",
                            "ip_range": "0.0.0.0/0",
                            "dest_port_from": port,
                            "dest_port_to": None,
                            "position": position,
                        },
                        editable=False,
                    )
                )
        return 201, {"security_group": group}

    @staticmethod
    def _ip_range(value: Any) -> str:
        """A rule's range as Scaleway answers it: a single address loses its /32 or /128."""
        try:
            interface = ipaddress.ip_interface(str(value))
        except ValueError as exc:
            raise _invalid(f"ip_range {value!r} is not a CIDR range") from exc
        if interface.network.prefixlen == interface.max_prefixlen:
            return str(interface.ip)
        return str(value)

    @staticmethod
    def _rule(zone: str, spec: dict[str, Any], editable: bool) -> dict[str, Any]:
        port_from = spec.get("dest_port_from")
        port_to = spec.get("dest_port_to")
        protocol = str(spec.get("protocol", "TCP")).upper()
        if protocol in ("ICMP", "ANY"):
            port_from = port_to = None
        if port_to == port_from:
            port_to = None
        return {
            "id": str(uuid.uuid4()),
            "protocol": protocol,
            "direction": spec.get("direction", "inbound"),
            "action": spec.get("action", "accept"),
            "ip_range": FakeScaleway._ip_range(spec.get("ip_range", "0.0.0.0/0")),
            "dest_port_from": port_from,
            "dest_port_to": port_to,
            "position": int(spec.get("position", 1)),
            "editable": editable,
            "zone": zone,
        }

    def _get_security_group(
        self, zone: str, sg_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        return 200, {"security_group": self._security_group(sg_id)}

    def _update_security_group(
        self, zone: str, sg_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        group = self._security_group(sg_id)
        body = self._require(body)
        for key in (
            "name",
            "description",
            "inbound_default_policy",
            "outbound_default_policy",
            "stateful",
            "tags",
        ):
            if key in body:
                group[key] = body[key]
        group["modification_date"] = _now()
        return 200, {"security_group": group}

    def _delete_security_group(
        self, zone: str, sg_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        group = self._security_group(sg_id)
        if group["servers"]:
            raise ApiError(
                409, {"type": "conflict", "message": "Group is in use. You cannot delete it."}
            )
        del self.security_groups[sg_id]
        self.rules.pop(sg_id, None)
        return 204, None

    def _list_rules(
        self, zone: str, sg_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        self._security_group(sg_id)
        return 200, {"rules": self.rules[sg_id]}

    def _set_rules(
        self, zone: str, sg_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        self._security_group(sg_id)
        wanted = self._require(body, "rules")["rules"]
        kept = [r for r in self.rules[sg_id] if not r["editable"]]
        new = [self._rule(zone, r, editable=True) for r in wanted if r.get("editable", True)]
        self.rules[sg_id] = kept + new
        return 200, {"rules": self.rules[sg_id]}

    # --- volumes -----------------------------------------------------------------------

    def _block_status(self, volume: dict[str, Any]) -> str:
        if volume["server"] is not None or volume["id"] in self._detaching:
            return "in_use"
        return "available"

    def _block_volume(self, volume: dict[str, Any]) -> dict[str, Any]:
        """A block volume as Block Storage v1 answers it (GET /volumes/{id}: no envelope)."""
        references = []
        if volume["server"] is not None or volume["id"] in self._detaching:
            server_id = volume["server"]["id"] if volume["server"] else volume.get("was_on", "")
            references.append(
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"reference/{volume['id']}")),
                    "product_resource_type": "instance_server",
                    "product_resource_id": server_id,
                    "created_at": _now(),
                    "type": "exclusive",
                    "status": "attached" if volume["server"] is not None else "detaching",
                }
            )
        return {
            "id": volume["id"],
            "name": "",
            "type": "sbs_5k",
            "size": volume["size"],
            "project_id": volume.get("project", ORGANIZATION),
            "created_at": _now(),
            "updated_at": _now(),
            "references": references,
            "parent_snapshot_id": None,
            "status": self._block_status(volume),
            "tags": [],
            "zone": volume["zone"],
            "specs": {"perf_iops": 5000, "class": "sbs"},
            "last_detached_at": None,
        }

    def _delete_volume(self, volume_id: str, volume_type: str) -> tuple[int, Any]:
        volume = self.volumes.get(volume_id)
        if volume is None or volume["volume_type"] != volume_type:
            raise _unknown("Volume", volume_id)
        if volume["server"] is not None or volume_id in self._detaching:
            raise ApiError(
                412 if volume_type == "sbs_volume" else 400,
                {"type": "precondition_failed", "precondition": "resource_still_in_use"}
                if volume_type == "sbs_volume"
                else {"type": "invalid_request_error", "message": "a server is attached"},
            )
        del self.volumes[volume_id]
        return 204, None

    def _delete_local_volume(
        self, zone: str, volume_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        return self._delete_volume(volume_id, "l_ssd")

    def _get_block_volume(
        self, zone: str, volume_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        volume = self.volumes.get(volume_id)
        if volume is None or volume["volume_type"] != "sbs_volume":
            raise _unknown("Volume", volume_id)
        if volume_id in self._detaching:
            self._detaching[volume_id] -= 1
            if self._detaching[volume_id] <= 0:
                del self._detaching[volume_id]
        return 200, self._block_volume(volume)

    def _delete_block_volume(
        self, zone: str, volume_id: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        return self._delete_volume(volume_id, "sbs_volume")


class _Handler(BaseHTTPRequestHandler):
    api: FakeScaleway
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, body, kind = self.api.handle(self.command, self.path, headers, raw)
        if body is None:
            payload, content_type = b"", None
        elif kind == "text":
            payload, content_type = body.encode("utf-8"), "text/plain; charset=utf-8"
        else:
            payload = json.dumps(body).encode("utf-8")
            content_type = "application/json"
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", required=True, help="the secret key the fake accepts")
    parser.add_argument("--polls-to-running", type=int, default=2)
    parser.add_argument("--polls-to-detach", type=int, default=2)
    parser.add_argument("--quota", choices=["instance", "standard"], default=None)
    args = parser.parse_args()
    fake = FakeScaleway(
        args.token,
        host=args.host,
        port=args.port,
        polls_to_running=args.polls_to_running,
        polls_to_detach=args.polls_to_detach,
        quota=args.quota,
    ).start()
    print(f"fake Scaleway API on {fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
