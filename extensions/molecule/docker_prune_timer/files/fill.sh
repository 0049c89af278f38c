#!/usr/bin/env bash
# Fill /var/lib/docker the way the incident did: CI rebuilds (dangling images with the classic builder, build
# cache with BuildKit), finished job containers, a service stopped by the backup, and one container logging
# into an unbounded json-file log. Prints one JSON line describing what must survive.
set -euo pipefail
rounds=${1:-4}
log_mb=${2:-450}
cd /root/ci

# Services that must survive: a running web service, a database the nightly backup stopped (restart policy
# unless-stopped), and a keep-labelled tool image no container uses.
docker build -q -f Dockerfile.service --build-arg SIZE_MB=80 --build-arg NAME=web -t svc-web:latest . >/dev/null
docker build -q -f Dockerfile.service --build-arg SIZE_MB=50 --build-arg NAME=db -t svc-db:latest . >/dev/null
docker build -q -f Dockerfile.keep -t tool-keep:latest . >/dev/null
docker run -d --name web svc-web:latest sleep 86400 >/dev/null
docker run -d --name db --restart unless-stopped svc-db:latest sleep 86400 >/dev/null
docker stop -t 1 db >/dev/null

# The CI server: several builds a day, each leaving its previous image and cache behind, each job a container.
for i in $(seq 1 "$rounds"); do
  DOCKER_BUILDKIT=0 docker build -q -f Dockerfile.app --build-arg BUILD="$i" -t ci-app:latest . >/dev/null
  DOCKER_BUILDKIT=1 docker build -q -f Dockerfile.big --build-arg BUILD="$i" -t ci-big:latest . >/dev/null
  docker run --name "job-$i" ci-app:latest sh -c 'dd if=/dev/zero of=/tmp/out bs=1M count=25 2>/dev/null'
done

# One chatty container: log_mb of output as fast as it can, then a line a second, never rotated.
docker run -d --name chatty --log-driver json-file pmr-workload:latest sh -c \
  "yes 'GET /api/orders?page=1 200 0.004s $(head -c 160 /dev/zero | tr '\0' x)' | head -c ${log_mb}000000; \
   while true; do echo tick; sleep 1; done" >/dev/null
log=$(docker inspect -f '{{.LogPath}}' chatty)
for _ in $(seq 1 120); do
  size=$(stat -c %s "$log")
  [ "$size" -ge $((log_mb * 1000000)) ] && break
  sleep 0.5
done

printf '{"web": "%s", "db": "%s", "chatty": "%s", "chatty_started": "%s", "chatty_log": "%s", "log_size": %s}\n' \
  "$(docker inspect -f '{{.Id}}' web)" "$(docker inspect -f '{{.Id}}' db)" "$(docker inspect -f '{{.Id}}' chatty)" \
  "$(docker inspect -f '{{.State.StartedAt}}' chatty)" "$log" "$(stat -c %s "$log")"
