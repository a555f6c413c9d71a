#!/usr/bin/env bash
# Debian packages the tests start for real (ARCHITECTURE.md, "Real parts"). Installs only what is
# missing, so a second run does nothing. Needs root (or sudo) on a fresh machine.
# Arguments name a subset (`npm run drill` needs only postgresql-15 and zstd).
set -euo pipefail
packages=(postgresql-15 etcd-server haproxy chromium zstd prometheus curl iproute2)
[ $# -gt 0 ] && packages=("$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "system-deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# Debian may start packaged servers on install; tests start their own on free ports, so stop the
# system-wide ones this script just installed, leaving nothing running that nobody asked for.
for p in ${missing[@]+"${missing[@]}"}; do
  case "$p" in
    etcd-server) service etcd stop >/dev/null 2>&1 || true ;;
    haproxy) service haproxy stop >/dev/null 2>&1 || true ;;
    prometheus) service prometheus stop >/dev/null 2>&1 || true ;;
  esac
done
