# A Debian image that boots systemd as PID 1: the stand-in for a fresh VPS in Molecule and
# in `make deploy`'s local target. Only what Ansible needs to manage the host is added.
ARG BASE=debian:bookworm
FROM ${BASE}
ENV container=docker DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      systemd systemd-sysv dbus python3 python3-apt sudo ca-certificates iproute2 procps \
 && apt-get clean \
 # apt lists stay, as on a freshly installed VPS.
 # Units that make no sense in a container and slow boot down.
 && rm -f /lib/systemd/system/multi-user.target.wants/getty.target \
          /etc/systemd/system/*.wants/systemd-timesyncd.service \
 && systemctl mask systemd-udevd.service systemd-udevd-kernel.socket \
      systemd-udevd-control.socket getty.target console-getty.service \
      systemd-logind.service systemd-remount-fs.service sys-kernel-config.mount \
      systemd-firstboot.service
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
