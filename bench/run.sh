#!/usr/bin/env bash
# Benchmarks Wharf against CNCF Distribution (Debian's docker-registry 2.8) on this machine, side
# by side, and prints one table of both results and their ratio (plus bench/results/*.json).
# Installs what it needs, builds a release Wharf, then runs bench/bench.py; arguments go to it
# (`--quick` for a short run, `--only manifests,mixed` to pick workloads, `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker-registry wrk hey apache2-utils skopeo umoci debootstrap curl openssl)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo -n)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -c "import requests" 2>/dev/null || python3 -m pip install -q requests

echo "== building Wharf (release)"
scripts/build-release.sh
exec python3 bench/bench.py --wharf .build/release/wharf "$@"
