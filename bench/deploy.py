"""Deploy wall time on the local target (issue 6): a first converge, a no-op re-run, and an
upgrade through the health gate.

Exactly what `make deploy` runs, minus the image build and the demo job:
``scripts/local-target.sh up`` then ``ansible-playbook -i inventories/local
playbooks/deploy.yml`` with FONDATION_CONVEX_URL from ``scripts/devbackend.sh start`` (the
default dev backend). Before the first converge the target is removed
(``scripts/local-target.sh down``), so it starts from a fresh Debian 12 systemd container.
The upgrade is a code-only release: the current archive's image with the worker package,
given a fresh release stamp, copied into a new top layer (as a worker-only rebuild changes
only the image's last layer), saved as an archive named after its ID and passed as
``fondation_worker_image_archive``; the play ships the layers the host lacks, restarts the
replica and waits for /healthz. The bytes shipped come from the play's own report ("shipped
N bytes"). Logs of each run: build/bench/deploy-*.log.

The no-op is measured twice: through the Docker connection (inventories/local, what `make
deploy` uses) and over real SSH as a real VPS is reached: the same target given sshd and a
non-root sudo user (README, "Deploying for real"), an inventory that names the same host with
its address, its key and its known_hosts (host keys are checked as ansible.cfg says).

Run: .venv/bin/python -m bench.deploy [--json] [--keep-target]   (needs build/images/ from
`make image`; --keep-target reuses a running target instead of starting from a fresh one)
Targets (issue 17): no-op re-run at most 8 s with changed=0 (both connections); a code-only
upgrade ships at most 10 MB and takes at most 45 s through the health gate (no job in flight:
no drain).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    BENCH_BUILD,
    ROOT,
    Row,
    archive_image_short_id,
    emit,
    image_archive,
    log,
    met_at_most,
    run,
)

NOOP_TARGET_S = 8.0
UPGRADE_TARGET_S = 45.0
UPGRADE_BYTES_TARGET = 10_000_000
PACKAGE = "/opt/venv/lib/python3.11/site-packages/fondation_worker"
TARGET = os.environ.get("FONDATION_LOCAL_TARGET", "fondation-local")
UPGRADE_LABEL = "org.fondation.bench-upgrade"


def convex_url() -> str:
    started = run([str(ROOT / "scripts" / "devbackend.sh"), "start"], 120, capture_output=True)
    if started.returncode != 0:
        raise RuntimeError(f"devbackend.sh start failed: {started.stderr[-500:]}")
    return started.stdout.strip().splitlines()[-1]


def slowest_tasks(name: str, count: int = 3) -> str:
    """The slowest tasks of a run, from profile_tasks' summary in its log."""
    text = (BENCH_BUILD / f"deploy-{name}.log").read_text(encoding="utf-8", errors="replace")
    tasks = re.findall(r"^(\S.*?) -{3,} (\d+\.\d+)s$", text, re.MULTILINE)
    ranked = sorted(((float(s), t.strip()) for t, s in tasks), reverse=True)[:count]
    return "; ".join(f"{task} {seconds:.1f} s" for seconds, task in ranked)


def playbook(
    name: str, url: str, extra: list[str], inventory: Path = ROOT / "inventories" / "local"
) -> tuple[float, int]:
    """Run the deploy play; (seconds, changed count). Raises when the play fails."""
    env = {
        **os.environ,
        "FONDATION_CONVEX_URL": url,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        # Per-task times at the end of each log: where a slow run spends them.
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    log_path = BENCH_BUILD / f"deploy-{name}.log"
    cmd = ["ansible-playbook", "-i", str(inventory), "playbooks/deploy.yml", *extra]
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as out:
        done = run(cmd, 1800, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    text = log_path.read_text(encoding="utf-8", errors="replace")
    recap = re.search(rf"^{re.escape(TARGET)}\s*:.*?changed=(\d+).*?failed=(\d+)", text, re.M)
    if done.returncode != 0 or recap is None or recap.group(2) != "0":
        raise RuntimeError(f"{name}: the deploy play failed (rc {done.returncode}), see {log_path}")
    return seconds, int(recap.group(1))


SSH_USER = "fondation-bench"


def target_exec(script: str, timeout: float = 300) -> str:
    done = run(["docker", "exec", TARGET, "sh", "-ec", script], timeout, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"on {TARGET}: {script[:60]}...: {done.stderr[-500:]}")
    return done.stdout


def ssh_inventory() -> Path:
    """The target as a real VPS is reached: sshd, a non-root sudo user with a key, and an
    inventory naming the same host (so its settings, hence the no-op, are the same) by its
    address. The host key goes to a known_hosts of its own: ansible.cfg checks host keys."""
    home = BENCH_BUILD / "ssh"
    home.mkdir(parents=True, exist_ok=True)
    key = home / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], 60, check=True)
    target_exec(
        "command -v sshd >/dev/null && command -v sudo >/dev/null || {"
        " apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq"
        " --no-install-recommends openssh-server sudo >/dev/null; }\n"
        f"id {SSH_USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {SSH_USER}\n"
        f"echo '{SSH_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{SSH_USER}\n"
        f"chmod 0440 /etc/sudoers.d/{SSH_USER}\n"
        f"install -d -m 0700 -o {SSH_USER} -g {SSH_USER} /home/{SSH_USER}/.ssh\n"
        "systemctl enable --now ssh >/dev/null 2>&1",
        600,
    )
    run(
        ["docker", "cp", f"{key}.pub", f"{TARGET}:/home/{SSH_USER}/.ssh/authorized_keys"],
        60,
        check=True,
    )
    target_exec(f"chown {SSH_USER}: /home/{SSH_USER}/.ssh/authorized_keys")
    address = run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            TARGET,
        ],
        60,
        capture_output=True,
        check=True,
    ).stdout.strip()
    known_hosts = home / "known_hosts"
    scan = run(["ssh-keyscan", "-t", "ed25519", address], 60, capture_output=True)
    if scan.returncode != 0 or not scan.stdout.strip():
        raise RuntimeError(f"ssh-keyscan {address} failed: {scan.stderr[-300:]}")
    known_hosts.write_text(scan.stdout, encoding="utf-8")
    inventory = home / "inventory"
    inventory.mkdir(exist_ok=True)
    group_vars = inventory / "group_vars"
    if not group_vars.exists():
        group_vars.symlink_to(ROOT / "inventories" / "local" / "group_vars")
    (inventory / "hosts.yml").write_text(
        "all:\n  children:\n    workers:\n      hosts:\n"
        f"        {TARGET}:\n"
        f"          ansible_host: {address}\n"
        f"          ansible_user: {SSH_USER}\n"
        f"          ansible_ssh_private_key_file: {key}\n"
        f"          ansible_ssh_common_args: -o UserKnownHostsFile={known_hosts}\n"
        "          ansible_python_interpreter: /usr/bin/python3\n",
        encoding="utf-8",
    )
    return inventory


def target(action: str) -> float:
    start = time.monotonic()
    done = run(
        ["bash", str(ROOT / "scripts" / "local-target.sh"), action], 600, capture_output=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"local-target.sh {action} failed: {done.stderr[-500:]}")
    return time.monotonic() - start


def archive_image_id() -> tuple[Path, str]:
    real = image_archive()
    if not real.is_file():
        raise RuntimeError(f"{real} is missing: run `make image` first")
    short = archive_image_short_id(real)
    if short is None:
        raise RuntimeError(f"cannot read the image ID from {real.name}")
    if run(["docker", "image", "inspect", short], 60, capture_output=True).returncode != 0:
        load = run(["docker", "load", "-i", str(real)], 900, capture_output=True)
        if load.returncode != 0:
            raise RuntimeError(f"docker load failed: {load.stderr[-300:]}")
    return real, short


def upgrade_archive(base: str) -> Path:
    """A code-only release of the base image (its worker package, stamped anew, in a new top
    layer, one more label): a new image ID, saved like scripts/build-image.sh does."""
    for old in BENCH_BUILD.glob("fondation-worker-bench-upgrade-*.tar.gz*"):
        old.unlink()
    tag = "fondation-worker:bench-upgrade"
    # The release stamp goes into the package, so the code layer differs from any earlier
    # run's: a repeated bench would otherwise build a layer the host already holds and ship
    # only the image config.
    stamp = time.time_ns()
    dockerfile = (
        f"FROM {base}\nUSER root\nRUN echo {stamp} > {PACKAGE}/BENCH_RELEASE\n"
        f"FROM {base}\nCOPY --from=0 {PACKAGE}/ {PACKAGE}/\n"
        f"LABEL {UPGRADE_LABEL}={stamp}\n"
    )
    # `docker build` cannot name an image ID in FROM: give the base a temporary tag.
    run(["docker", "tag", base, "fondation-worker:bench-base"], 60, check=True)
    try:
        built = run(
            ["docker", "build", "-q", "-t", tag, "-"], 300, input=dockerfile, capture_output=True
        )
        if built.returncode != 0:
            raise RuntimeError(f"docker build failed: {built.stderr[-300:]}")
    finally:
        run(["docker", "rmi", "fondation-worker:bench-base"], 60, capture_output=True)
    image_id = run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", tag], 60, capture_output=True, check=True
    ).stdout.strip()
    short = image_id.removeprefix("sha256:")[:12]
    archive = BENCH_BUILD / f"fondation-worker-bench-upgrade-{short}.tar.gz"
    tmp = archive.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        gzip = subprocess.Popen(["gzip", "-1"], stdin=save.stdout, stdout=out)
        if save.stdout is not None:
            save.stdout.close()
        try:
            save_rc, gzip_rc = save.wait(900), gzip.wait(900)
        except subprocess.TimeoutExpired:
            save.kill()
            gzip.kill()
            raise
    if save_rc or gzip_rc:
        raise RuntimeError("docker save | gzip failed")
    tmp.rename(archive)
    # As scripts/build-image.sh does: the layer index the role reads, written with the archive.
    run(
        [
            sys.executable,
            str(ROOT / "roles/fondation_worker/files/slim_image_archive.py"),
            "--archive",
            str(archive),
            "--index-only",
        ],
        600,
        check=True,
    )
    return archive


def shipped_bytes(name: str) -> int | None:
    """What the play reported shipping to the host (tasks/lib/image_archive.yml)."""
    text = (BENCH_BUILD / f"deploy-{name}.log").read_text(encoding="utf-8", errors="replace")
    found = re.findall(r"shipped (\d+) bytes \(([^)]*)\)", text)
    return int(found[-1][0]) if found else None


def running_image() -> str:
    done = run(
        ["docker", "exec", TARGET, "docker", "inspect", "-f", "{{.Image}}", "fondation-worker-1"],
        60,
        capture_output=True,
    )
    return done.stdout.strip().removeprefix("sha256:")[:12]


def main() -> int:
    BENCH_BUILD.mkdir(parents=True, exist_ok=True)
    archive_in, base = archive_image_id()
    pin = ["-e", f"fondation_worker_image_archive={archive_in}"]
    url = convex_url()
    fresh = "--keep-target" not in sys.argv
    log(f"{'fresh' if fresh else 'kept'} target; Convex {url}; image {base}")
    if fresh:
        target("down")
    up_s = target("up")
    converge_s, converge_changed = playbook("first", url, pin)
    log(f"first converge: up {up_s:.0f} s + play {converge_s:.0f} s")
    noop_s, noop_changed = playbook("noop", url, pin)
    log(f"no-op: {noop_s:.1f} s, changed={noop_changed}")
    ssh = ssh_inventory()
    # The first run over SSH is a no-op too (same host, same settings); the second is the
    # figure, so both connections are measured warm the same way.
    playbook("ssh-warm", url, pin, ssh)
    ssh_s, ssh_changed = playbook("noop-ssh", url, pin, ssh)
    log(f"no-op over SSH: {ssh_s:.1f} s, changed={ssh_changed}")
    archive = upgrade_archive(base)
    upgrade_s, upgrade_changed = playbook(
        "upgrade", url, ["-e", f"fondation_worker_image_archive={archive}"]
    )
    now_running = ""
    with contextlib.suppress(subprocess.TimeoutExpired):
        now_running = running_image()
    expected = archive.name.rsplit("-", 1)[1].removesuffix(".tar.gz")
    sent = shipped_bytes("upgrade")
    log(f"upgrade: {upgrade_s:.0f} s, {sent} bytes shipped, replica runs {now_running}")
    rows = [
        Row(
            f"deploy: first converge ({'fresh' if fresh else 'kept'} target)",
            up_s + converge_s,
            "s",
            note=(
                f"target up {up_s:.0f} s + play {converge_s:.0f} s, changed={converge_changed}, "
                f"image {base}"
            ),
        ),
        Row(
            "deploy: no-op re-run",
            noop_s,
            "s",
            f"<= {NOOP_TARGET_S:.0f} s, changed=0",
            bool(met_at_most(noop_s, NOOP_TARGET_S)) and noop_changed == 0,
            note=f"changed={noop_changed}; slowest tasks: {slowest_tasks('noop')}",
        ),
        Row(
            "deploy: no-op re-run over SSH (non-root sudo user)",
            ssh_s,
            "s",
            f"<= {NOOP_TARGET_S:.0f} s, changed=0",
            bool(met_at_most(ssh_s, NOOP_TARGET_S)) and ssh_changed == 0,
            note=f"changed={ssh_changed}; slowest tasks: {slowest_tasks('noop-ssh')}",
        ),
        Row(
            "deploy: code-only upgrade, bytes shipped to the host",
            None if sent is None else sent / 1e6,
            "MB",
            f"<= {UPGRADE_BYTES_TARGET / 1e6:.1f} MB",
            None if sent is None else sent <= UPGRADE_BYTES_TARGET,
            note=f"full archive {archive.stat().st_size / 1e6:.0f} MB",
        ),
        Row(
            "deploy: upgrade through the health gate",
            upgrade_s,
            "s",
            f"<= {UPGRADE_TARGET_S:.0f} s + drain (no job: no drain)",
            bool(met_at_most(upgrade_s, UPGRADE_TARGET_S)) and now_running == expected,
            note=(
                f"new image {expected} (code-only), changed={upgrade_changed}, replica "
                f"{'runs it and is healthy' if now_running == expected else 'runs ' + now_running}"
                f"; slowest tasks: {slowest_tasks('upgrade')}"
            ),
        ),
    ]
    emit("deploy", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
