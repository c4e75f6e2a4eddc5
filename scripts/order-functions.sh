#!/usr/bin/env bash
# Regenerates generated/hot-functions.order (see scripts/order-functions.py) from a release
# binary: the one given, or a fresh scripts/build-release.sh build. Installs valgrind if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(valgrind apache2-utils binutils)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo -n)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -c "import requests" 2>/dev/null || python3 -m pip install -q requests
binary=${1:-}
if [ -z "$binary" ]; then
  scripts/build-release.sh
  binary=.build/release/wharf
fi
exec python3 scripts/order-functions.py "$binary"
