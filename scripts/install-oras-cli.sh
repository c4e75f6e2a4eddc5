#!/usr/bin/env bash
# Installs the oras CLI (ORAS Go, what users mean by "oras") for the end-to-end tests. Debian 12
# has no oras package; Debian 13 (trixie) does. Its .deb is fetched with a private apt
# configuration and unpacked into a folder of ours: nothing is installed into the system, and
# bookworm's package lists are untouched. Prints the binary's path. Idempotent.
set -euo pipefail

tools=${WHARF_TOOLS:-$HOME/.cache/wharf-tools}
binary="$tools/oras/usr/bin/oras"
if [ -x "$binary" ] && "$binary" version >/dev/null 2>&1; then
  echo "$binary"
  exit 0
fi

apt_root="$tools/trixie-apt"
mkdir -p "$apt_root/lists/partial" "$apt_root/cache/archives/partial" "$apt_root/etc"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" > "$apt_root/etc/sources.list"
apt_options=(
  -o "Dir::Etc::SourceList=$apt_root/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_root/lists" -o "Dir::Cache=$apt_root/cache" -o APT::Get::List-Cleanup=0
  -o APT::Sandbox::User=root -qq
)
apt-get "${apt_options[@]}" update >&2
(cd "$apt_root" && rm -f oras_*.deb && apt-get "${apt_options[@]}" download oras >&2)
rm -rf "$tools/oras"
dpkg-deb -x "$apt_root"/oras_*.deb "$tools/oras"
"$binary" version >&2
echo "$binary"
