#!/usr/bin/env bash
# Builds Wharf (release) and runs it on its embedded defaults: 127.0.0.1:5000, data in
# ./wharf-data (SQLite metadata, filesystem blobs). Arguments go to `wharf serve`
# (for example `--listen 127.0.0.1:6000 --data /srv/wharf`, or `--config wharf.yml`).
set -euo pipefail
cd "$(dirname "$0")/.."
# The scanner links libzstd and zlib: install their headers if this machine lacks them.
for package in libzstd-dev zlib1g-dev; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libzstd-dev zlib1g-dev >/dev/null
    break
  fi
done
scripts/build-release.sh
exec .build/release/wharf serve "$@"
