#!/usr/bin/env bash
# Make sure a Docker engine answers: use the one that does, else install Debian's docker.io and start dockerd.
source "$(dirname "$0")/common.sh"

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

if engine_answers; then
  log "Docker engine answers: $(docker info -f '{{.ServerVersion}} {{.Driver}}')"
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  log "No dockerd: installing Debian's docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
command -v docker >/dev/null 2>&1 || { log "docker client missing after install"; exit 1; }
mkdir -p /var/log
log "Starting dockerd in the background (log: /var/log/pmr-dockerd.log)"
# No systemd on the machine itself; --iptables=false keeps dockerd out of the host firewall.
nohup dockerd --iptables=false >/var/log/pmr-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  engine_answers && { log "Docker engine up: $(docker info -f '{{.ServerVersion}} {{.Driver}}')"; exit 0; }
  sleep 1
done
log "dockerd did not answer within 60 s; last lines of its log:"
tail -n 20 /var/log/pmr-dockerd.log >&2
exit 1
