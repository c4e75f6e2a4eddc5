#!/usr/bin/env bash
# A private PostgreSQL for tests, on a free 127.0.0.1 port.
#   scripts/postgres.sh start DIR   prints `export WHARF_TEST_POSTGRES_URL=…` lines for eval
#   scripts/postgres.sh stop DIR
set -euo pipefail
command=${1:?start or stop}
dir=${2:?folder for the cluster}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pgbin" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
# initdb refuses to run as root; run the server as the postgres user then.
run=()
if [ "$(id -u)" = 0 ]; then run=(runuser -u postgres --); fi

case "$command" in
start)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if ! "${run[@]}" "$pgbin/initdb" -D "$dir/data" -U postgres -A trust >"$dir/initdb.log" 2>&1; then
    echo "initdb failed:" >&2; cat "$dir/initdb.log" >&2; exit 1
  fi
  # fsync=off: test data is disposable and this keeps the suite fast.
  if ! "${run[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" start >/dev/null; then
    echo "PostgreSQL did not start:" >&2; cat "$dir/server.log" >&2; exit 1
  fi
  echo "export WHARF_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/postgres"
  ;;
stop)
  [ -d "$dir/data" ] && "${run[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
