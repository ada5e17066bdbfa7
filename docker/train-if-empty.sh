#!/bin/sh
# Trains the demo model into $PROBSERVE_MODEL_REPOSITORY only when it holds no model yet, so the
# compose stack's one-shot trainer is idempotent (a second `docker compose up` skips training).
# Arguments go to `probserve train`.
set -eu
repository="${PROBSERVE_MODEL_REPOSITORY:-/models}"
if [ -n "$(ls -A "$repository" 2>/dev/null)" ]; then
  echo "model repository $repository already holds a model: not training"
  exit 0
fi
exec probserve train --model-repository "$repository" "$@"
