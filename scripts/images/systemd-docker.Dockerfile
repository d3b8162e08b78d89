# The systemd host with the Docker engine and the usual host packages already installed: a
# VPS that already runs Docker. The Molecule scenarios about fleet rollouts and runbooks
# start from it; installing from nothing stays tested on bare hosts (Debian 13 in the default
# scenario, Debian 12 in make test's deploy stage). The packages are the ones the roles install
# (docker_engine, host_baseline, fondation_worker) and the test git server's, installed the
# way the roles' apt tasks install them (recommends included), so the roles find them there.
ARG BASE=fondation/debian-systemd:12
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y docker.io ca-certificates curl logrotate python3-requests git openssl \
 && apt-get clean
