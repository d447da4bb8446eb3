#!/usr/bin/env bash
# Installs LiteLLM proxy (the gateway bench's anchor) into a throwaway venv
# at benches/.anchor/litellm, once, and prints the path of its `litellm`
# command.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.anchor/litellm"
if [ ! -x "$venv/bin/litellm" ]; then
  echo "anchor: installing litellm[proxy] into $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'litellm[proxy]' >&2
fi
echo "$venv/bin/litellm"
