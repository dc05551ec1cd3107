#!/bin/sh
# Healthy = the event socket answers and the core says "ready" (a paused or starting node does not).
exec fs_cli -H 127.0.0.1 -P "${FS_ESL_PORT:-8021}" -p "$FS_ESL_PASSWORD" -t 2000 -x status | grep -q " is ready"
