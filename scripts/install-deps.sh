#!/bin/bash
# Install the Debian packages qingtian needs to build, test and benchmark.
# Package lists live in scripts/deps/<part>.txt (one package per line, '#'
# comments). Idempotent and silent when everything is already installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lists=("$here"/deps/*.txt)
[ "${1:-}" = "--list" ] && { cat "${lists[@]}" | sed 's/#.*//' | xargs -n1 | sort -u; exit 0; }

want=$(cat "${lists[@]}" | sed 's/#.*//' | xargs -n1 | sort -u)
missing=()
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
