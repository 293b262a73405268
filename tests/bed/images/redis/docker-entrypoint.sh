#!/bin/bash
# Run redis-server as uid 999 with the official image's defaults.
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ] || [ "${1%.conf}" != "$1" ]; then set -- redis-server "$@"; fi

if [ "$1" = redis-server ]; then
  shift
  if [ -n "${1:-}" ] && [ "${1%.conf}" != "$1" ]; then
    # A config file must come first and then decides everything itself.
    set -- redis-server "$@"
  else
    # Defaults first: later arguments win.
    set -- redis-server --protected-mode no --bind '* -::*' --dir /data --daemonize no "$@"
  fi
  if [ "$(id -u)" = 0 ]; then
    chown redis:redis /data 2>/dev/null || true
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
