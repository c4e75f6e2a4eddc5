#!/usr/bin/env bash
# Runs every Wharf test, on a fresh machine too:
#   1. installs what the tests need (Debian and Python packages),
#   2. builds Wharf and its tests once (debug),
#   3. starts a private PostgreSQL and a private S3 API (moto, signatures checked) on 127.0.0.1,
#   4. `swift test`: unit and HTTP integration tests, the metadata suite on SQLite and PostgreSQL,
#   5. end-to-end tests driving the built binary with real clients (skopeo, podman, buildah,
#      umoci, the oras CLI, a private Docker engine).
# Extra arguments go to pytest (for example `-k skopeo`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/check-test-imports.py  # every module the tests import comes from install-deps.sh
scripts/check-architecture.py  # modules import only what docs/architecture.md's map allows
# The tree stays formatted (.swift-format): `swift format --in-place --recursive Sources Tests bench/micro Fuzz/Sources`.
swift format lint --strict --recursive --parallel Sources Tests bench/micro Fuzz/Sources
# The oras CLI from Debian 13, unpacked into a private folder (see the script).
ORAS_BIN=$(scripts/install-oras-cli.sh)
export ORAS_BIN

work=$(mktemp -d /tmp/wharf-test.XXXXXX)
chmod 755 "$work"  # the PostgreSQL server runs as the postgres user and needs to reach its folder
cleanup() {
  scripts/postgres.sh stop "$work/postgres" || true
  scripts/s3.sh stop "$work/s3" || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building (debug)"
swift build --build-tests

echo "== starting PostgreSQL"
postgres_env=$(scripts/postgres.sh start "$work/postgres")  # an assignment, so a failure stops the script
eval "$postgres_env"
export WHARF_TEST_POSTGRES_URL

echo "== starting the S3 server"
s3_env=$(scripts/s3.sh start "$work/s3")
eval "$s3_env"
export WHARF_TEST_S3_ENDPOINT WHARF_TEST_S3_ACCESS_KEY WHARF_TEST_S3_SECRET_KEY WHARF_TEST_S3_BUCKET

echo "== swift test"
swift test 2>&1 | tee "$work/swift-test.log"
status=${PIPESTATUS[0]}
[ "$status" = 0 ] || { echo "swift test failed" >&2; exit "$status"; }
# A run that executed no test has failed, whatever its exit status.
grep -Eq "Test run with [1-9][0-9]* tests? .*passed" "$work/swift-test.log" || { echo "swift test ran no tests" >&2; exit 1; }

echo "== end-to-end tests"
export WHARF_BIN="$PWD/.build/debug/wharf"
python3 -m pytest e2e -v -rs --durations=15 "$@"
