#!/usr/bin/env bash
# Installs what building and testing Wharf needs beyond the Swift toolchain: Debian packages for
# the real clients and servers the end-to-end tests drive, and Python packages for the test
# runner. Idempotent: installs only what is missing.
set -euo pipefail

apt_packages=(
  skopeo podman buildah umoci   # registry clients
  docker.io                     # a real Docker engine (run privately by the tests)
  debootstrap                   # a realistic Debian 12 root filesystem for test images
  postgresql                    # the metadata store's second engine
  uidmap fuse-overlayfs         # podman/buildah helpers
  ca-certificates curl
  libzstd-dev zlib1g-dev        # zstd and gzip layers (the scanner links both)
  zstd                          # writes zstd layers in the scanner's tests
  python3-apt rpm               # native version-ordering oracles (apt_pkg, rpm.vercmp)
  golang-go                     # builds a real Go binary for the build-info cataloger test
  db5.3-util                    # writes a BerkeleyDB rpm database (RHEL 7/8 style) for the rpm cataloger test
  apache2-utils                 # htpasswd: the files CNCF Distribution users migrate from
  prometheus                    # scrapes /metrics in the monitoring tests; brings promtool
  fuse3 libfuse2                # fusermount and the library of the power-cut tests' filesystem (e2e/powercut_fs.py)
  nginx                         # the load balancer in front of three nodes (e2e/test_cluster.py)
)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo -n)
  echo "installing Debian packages: ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python_packages=(pytest requests "oras==0.2.43" awscli boto3 packaging "cyclonedx-python-lib[json-validation]" spdx-tools fusepy openapi-spec-validator pytest-timeout cryptography jsonschema "moto[server]==5.2.6")
python3 - "${python_packages[@]}" <<'PY' || python3 -m pip install -q --root-user-action=ignore "${python_packages[@]}"
import importlib.metadata, sys
for requirement in sys.argv[1:]:
    name, _, version = requirement.partition("==")
    name = name.split("[")[0]
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(1)
    if version and installed != version:
        sys.exit(1)
PY
