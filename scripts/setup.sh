#!/usr/bin/env bash
# One-shot, idempotent setup for a fresh machine (Debian 12 / Node >= 20, or any OS with a working GPU):
#   1. pnpm 10 (npm i -g; corepack's download fails signature checks on some machines)
#   2. the workspace (pnpm install + build)
#   3. only on Linux, and only when Dawn finds no usable adapter: Mesa lavapipe (Vulkan on the CPU)
#      from bookworm-backports. The backports source is used for this one install and not left in
#      /etc/apt; a machine whose GPU already works is never touched.
#   4. only on Debian/Ubuntu, and only when missing: the `chromium` package, which the report.html browser test
#      uses (headless screenshot). NR_SKIP_CHROMIUM=1 skips it; without it that one test skips itself.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node >= 20 is required (found $(node -v)). Install Node 20 or newer and run again." >&2
  exit 1
fi

if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm -v | cut -d. -f1)" -lt 10 ]; then
  log "installing pnpm 10 with npm"
  npm i -g pnpm@10 >/dev/null
fi

log "installing workspace dependencies"
pnpm install --frozen-lockfile=false --reporter=append-only | grep -v '^Progress' || true
test -d node_modules/.pnpm || { echo "setup: pnpm install failed" >&2; exit 1; }

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d /tmp/nr-xdg-XXXXXX)}"

if node scripts/probe-adapter.mjs; then
  log "WebGPU adapter works; no system packages needed"
elif [ "$(uname -s)" = "Linux" ]; then
  if [ ! -r /etc/debian_version ] || ! grep -q '^12' /etc/debian_version; then
    echo "setup: no WebGPU adapter, and this is not Debian 12. Install a Vulkan driver for your GPU," >&2
    echo "       or Mesa >= 24 lavapipe (package mesa-vulkan-drivers) for a CPU fallback, and run again." >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  log "no usable WebGPU adapter: installing Mesa lavapipe (mesa-vulkan-drivers) from bookworm-backports"
  apt_dir=$(mktemp -d /tmp/nr-apt-XXXXXX)
  mkdir -p "$apt_dir/sources.list.d"
  cp /etc/apt/sources.list.d/*.sources "$apt_dir/sources.list.d/" 2>/dev/null || true
  cp /etc/apt/sources.list.d/*.list "$apt_dir/sources.list.d/" 2>/dev/null || true
  cat > "$apt_dir/sources.list.d/nr-bookworm-backports.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_opts=(-o "Dir::Etc::SourceParts=$apt_dir/sources.list.d" -o "Dir::Etc::SourceList=/etc/apt/sources.list")
  [ -f /etc/apt/sources.list ] || apt_opts=(-o "Dir::Etc::SourceParts=$apt_dir/sources.list.d" -o "Dir::Etc::SourceList=/dev/null")
  $SUDO apt-get "${apt_opts[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${apt_opts[@]}" install -y -qq -t bookworm-backports mesa-vulkan-drivers >/dev/null
  rm -rf "$apt_dir"
  if ! node scripts/probe-adapter.mjs; then
    echo "setup: lavapipe was installed but Dawn still finds no adapter. Check 'vulkaninfo --summary'" >&2
    echo "       (package vulkan-tools) and that XDG_RUNTIME_DIR points at a writable folder." >&2
    exit 1
  fi
else
  echo "setup: Dawn finds no WebGPU adapter on $(uname -s). Update your GPU driver (Metal on macOS, D3D12/Vulkan on Windows)." >&2
  exit 1
fi

# The Python sandbox (@nr/sandbox, tool-integrated reasoning) imports sympy and mpmath: pure-Python Debian packages,
# whose .py files it copies into the interpreter's memory (no host folder is mounted). Elsewhere: point
# NR_SANDBOX_PYLIB at a sympy and an mpmath folder; without them the sandbox runs, only `import sympy` fails.
if [ -f /usr/lib/python3/dist-packages/sympy/__init__.py ] && [ -f /usr/lib/python3/dist-packages/mpmath/__init__.py ]; then
  log "sympy and mpmath are installed (Python sandbox)"
elif [ "$(uname -s)" = "Linux" ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  log "installing python3-sympy and python3-mpmath (Debian packages) for the Python sandbox"
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-sympy python3-mpmath >/dev/null 2>&1; then
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-sympy python3-mpmath >/dev/null; } ||
      log "could not install python3-sympy with apt-get (the sandbox's sympy tests will skip)"
  fi
else
  log "no apt-get here: set NR_SANDBOX_PYLIB to sympy and mpmath package folders to use sympy in the Python sandbox"
fi

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  log "chromium is installed (report.html browser test)"
elif [ "${NR_SKIP_CHROMIUM:-0}" = "1" ]; then
  log "NR_SKIP_CHROMIUM=1: not installing chromium (the report.html browser test will skip)"
elif [ "$(uname -s)" = "Linux" ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  log "installing chromium (Debian package) for the headless report.html test"
  # A stale package list is the usual reason the first try fails; chromium is only for one test, so a second
  # failure is reported and setup goes on.
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; } ||
      log "could not install chromium with apt-get (the report.html browser test will skip)"
  fi
else
  log "no apt-get here: install Chromium yourself (or set NR_CHROMIUM=/path/to/chrome) to run the report.html browser test"
fi

log "building the workspace"
pnpm build --output-logs=errors-only
log "done. Try: pnpm nr doctor   (tests: pnpm test)"
