#!/usr/bin/env bash
# Chroma, the vector database of the semantic cache's e2e tests. Its server is the Rust one the
# wheel bundles (chromadb_rust_bindings): the Python client's dependencies are not needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -c "import chromadb_rust_bindings" 2>/dev/null && exit 0
echo "installing chromadb (server only)"
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps chromadb
