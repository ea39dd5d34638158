#!/bin/sh
# The app of the apt workload: the bench edits this file.
set -eu
echo "processes: $(ps -e --no-headers | wc -l)"
curl -fsS "${STATUS_URL:-http://127.0.0.1:8000/}" | jq .
