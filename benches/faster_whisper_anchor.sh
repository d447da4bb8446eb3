#!/usr/bin/env bash
# Installs faster-whisper 1.2.1 with CTranslate2 4.8.5 (the speech bench's
# anchor, pinned so reruns compare like with like; the output reports both) into a throwaway venv at
# benches/.anchor/faster-whisper, once, and runs
# benches/faster_whisper_anchor.py with it:
#
#   faster_whisper_anchor.sh SPEC.json > anchor.json
#
# The models are local CTranslate2 directories (models/cache/...), so the
# model hub is kept offline.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.anchor/faster-whisper"
if [ ! -x "$venv/bin/python" ] ||
  ! "$venv/bin/python" -c 'import sys, faster_whisper, ctranslate2; sys.exit(faster_whisper.__version__ != "1.2.1" or ctranslate2.__version__ != "4.8.5")' 2>/dev/null; then
  echo "anchor: installing faster-whisper 1.2.1 and ctranslate2 4.8.5 into $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check faster-whisper==1.2.1 ctranslate2==4.8.5 >&2
fi
export HF_HUB_OFFLINE=1
exec "$venv/bin/python" "$here/faster_whisper_anchor.py" "$@"
