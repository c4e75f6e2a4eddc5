#!/usr/bin/env bash
# The release build of the `wharf` binary, as scripts/run.sh and bench/run.sh make it; arguments go
# to `swift build`. Every module, dependencies included, is compiled with one section per function,
# so that the linker can put the functions listed in generated/hot-functions.order together at
# the start of the code (see the `wharf` target in Package.swift): an idle Wharf then keeps about
# 6-10 MiB less code resident. The first build of all dependencies takes about 18 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-c release --static-swift-stdlib --product wharf
       -Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections -Xcc -fdata-sections "$@")
# SwiftPM does not know the linker reads the order file: relink when it is newer than the binary.
binary="$(swift build "${flags[@]}" --show-bin-path)/wharf"
if [ -e "$binary" ] && [ generated/hot-functions.order -nt "$binary" ]; then rm -f "$binary"; fi
exec swift build "${flags[@]}"
