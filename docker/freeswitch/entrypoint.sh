#!/bin/sh
# Refuse to start a node with no event socket password, or with FreeSWITCH's shipped one: anyone who
# reaches the event socket could run `api` commands (system, originate, fsctl shutdown) on it.
set -eu
if [ -z "${FS_ESL_PASSWORD:-}" ] || [ "$FS_ESL_PASSWORD" = "ClueCon" ]; then
    echo "freeswitch-entrypoint: set FS_ESL_PASSWORD to a secret (not empty, not ClueCon)" >&2
    exit 64
fi
# core-db-name and -db point at tmpfs: create the directory (it is empty after every start)
mkdir -p "${FS_SHM_DIR:-/dev/shm/freeswitch}"
exec "$@"
