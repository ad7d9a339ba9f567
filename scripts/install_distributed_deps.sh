#!/usr/bin/env bash
# The system packages `make e2e-distributed` needs: PostgreSQL (initdb, pg_ctl) and Redis.
# Idempotent: installs only what is missing, through apt-get (Debian's packages; as root, or
# through sudo where there is one).
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -q
# The packages' own services are not wanted: the test runs a private cluster on a free port.
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
