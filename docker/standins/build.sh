#!/usr/bin/env bash
# Builds stand-ins for the base images docker-compose.yml and docker/Dockerfile* pull, from
# Debian bookworm packages, for machines that reach Debian's and PyPI's mirrors but no container
# registry (our CI). A user with a registry never needs this: `docker compose` pulls the real ones.
#
#   sudo docker/standins/build.sh          # idempotent: tags that already exist are kept
#   STANDINS_REBUILD=1 docker/standins/build.sh
#
# What stands in for what (same tags, so the compose file and Dockerfiles stay unchanged):
#   python:3.11.14-slim-bookworm   debootstrap minbase + python3 (3.11), venv, pip, CA bundle
#   postgres:16.4-bookworm         the same + Debian's PostgreSQL 15, with an entrypoint that
#                                  honours POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB and
#                                  PGDATA=/var/lib/postgresql/data like the official image
#   prom/prometheus:v2.55.1        Debian's prometheus 2.42 (entrypoint /usr/bin/prometheus)
#   prom/pushgateway:v1.10.0       Debian's prometheus-pushgateway
# Grafana has no Debian package: it has no stand-in (tests/deploy leave it out).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
python_tag=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$repo/docker/Dockerfile")
postgres_tag=$(sed -n 's/^ *image: \(postgres:.*\)$/\1/p' "$repo/docker-compose.yml")
prometheus_tag=$(sed -n 's/^ *image: \(prom\/prometheus:.*\)$/\1/p' "$repo/docker-compose.yml")
pushgateway_tag=$(sed -n 's/^ *image: \(prom\/pushgateway:.*\)$/\1/p' "$repo/docker-compose.yml")
services_tag=probserve-standin-services:bookworm

have() { [ -z "${STANDINS_REBUILD:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }
if have "$python_tag" && have "$postgres_tag" && have "$prometheus_tag" && have "$pushgateway_tag"; then
  echo "stand-in base images already present: $python_tag $postgres_tag $prometheus_tag $pushgateway_tag"
  exit 0
fi

work="$(mktemp -d /var/tmp/probserve-standins.XXXXXX)"
cleanup() {
  for dir in "$work"/*/; do umount -l "$dir/proc" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "debootstrap bookworm (minbase + python3) into $work/python"
debootstrap --variant=minbase \
  --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$work/python" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log"; exit 1; }
rootfs="$work/python"
# The host's CA bundle: pip inside a build reaches the package index as the host does (a proxy
# that re-signs TLS is trusted there too). Only the cert setting of pip's configuration travels:
# the host's find-links and local indexes are paths that do not exist in a container.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
# python:*-slim has `python`; Debian has python3 only.
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs/var/lib/apt/lists/"* "$rootfs/usr/share/doc/"* "$rootfs/usr/share/man/"* \
  "$rootfs/usr/share/locale/"* "$rootfs/var/cache/debconf/"*-old "$rootfs/var/log/"*

echo "adding PostgreSQL 15, Prometheus and the Pushgateway in a copy ($work/services)"
cp -a "$rootfs" "$work/services"
services="$work/services"
# No daemon may start inside the chroot, and the image's PostgreSQL cluster is made at first
# container start (like the official image), not by the package.
printf '#!/bin/sh\nexit 101\n' >"$services/usr/sbin/policy-rc.d"
chmod +x "$services/usr/sbin/policy-rc.d"
mkdir -p "$services/etc/postgresql-common"
echo "create_main_cluster = false" >"$services/etc/postgresql-common/createcluster.conf"
mount -t proc proc "$services/proc"
chroot "$services" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
chroot "$services" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends postgresql-15 prometheus prometheus-pushgateway >"$work/apt.log" 2>&1 \
  || { tail -20 "$work/apt.log"; exit 1; }
umount "$services/proc"
chroot "$services" apt-get clean
rm -rf "$services/var/lib/apt/lists/"* "$services/usr/sbin/policy-rc.d"
install -m 0755 "$here/postgres-entrypoint.sh" "$services/usr/local/bin/docker-entrypoint.sh"

echo "importing $python_tag and $services_tag"
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$python_tag" >/dev/null
tar -C "$services" -c . | docker import - "$services_tag" >/dev/null

# The three service stand-ins are metadata over one imported filesystem.
build() {
  local tag="$1"
  shift
  { printf 'FROM %s\n' "$services_tag"; printf '%s\n' "$@"; } | docker build -q -t "$tag" - >/dev/null 2>&1
}
build "$postgres_tag" \
  'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data' \
  'STOPSIGNAL SIGINT' 'EXPOSE 5432' 'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD ["postgres"]'
build "$prometheus_tag" 'EXPOSE 9090' 'WORKDIR /prometheus' 'ENTRYPOINT ["/usr/bin/prometheus"]' \
  'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
build "$pushgateway_tag" 'EXPOSE 9091' 'ENTRYPOINT ["/usr/bin/prometheus-pushgateway"]'
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
  | grep -E "^(${python_tag}|${postgres_tag}|${prometheus_tag}|${pushgateway_tag}) " || true
