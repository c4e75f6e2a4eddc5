#!/usr/bin/env bash
# Builds Wharf (release) and runs it on its embedded defaults: 127.0.0.1:5000, data in
# ./wharf-data (SQLite metadata, filesystem blobs). Arguments go to `wharf serve`
# (for example `--listen 127.0.0.1:6000 --data /srv/wharf`, or `--config wharf.yml`).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib --product wharf
exec .build/release/wharf serve "$@"
