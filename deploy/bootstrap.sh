#!/usr/bin/env bash
# Install the Debian packages vo-service needs; safe to run again (installs only what is
# missing, never upgrades: a minor PostgreSQL upgrade under a running server breaks it).
set -euo pipefail

packages=(postgresql-15 postgresql-15-pgsphere stilts)
python3 -c "import ensurepip, venv" 2>/dev/null || packages+=(python3-venv)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi

# vo-service runs its own private cluster; don't let the package create and start a
# system-wide one on port 5432 that nothing uses.
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  $sudo mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
fi

# The PostgreSQL server from the release itself, not from bookworm-security: its 15.20
# refuses to load the release's pgsphere 1.1.1 (two operators share a commutator, which the
# stricter check of that update rejects; pgsphere 1.4 dropped them), so a fresh machine
# would otherwise get a server the service cannot use.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ "$codename" = bookworm ]; then
  for i in "${!missing[@]}"; do
    [ "${missing[$i]}" = postgresql-15 ] && missing[$i]="postgresql-15/bookworm"
  done
fi

echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-upgrade \
  -o Dpkg::Options::=--force-confold "${missing[@]}"
