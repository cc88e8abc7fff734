#!/usr/bin/env bash
# Serve the documentation locally with live reload (mkdocs serve, http://127.0.0.1:8000), after setting up .venv.
#   bash scripts/docs.sh                 serve
#   bash scripts/docs.sh build           build into build/site/ with --strict (warnings are errors), as the tests do
#   bash scripts/docs.sh serve -a 0.0.0.0:8000    extra arguments go to mkdocs
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export NO_MKDOCS_2_WARNING=1  # mkdocs-material's notice about its successor, printed on every build
if [ "$#" -eq 0 ]; then set -- serve; fi
if [ "$1" = "build" ]; then
    shift
    exec python -m mkdocs build --strict "$@"
fi
exec python -m mkdocs "$@"
