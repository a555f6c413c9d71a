#!/usr/bin/env bash
# PostgreSQL refuses to run as root, so when root runs the tests or the drill, this checkout's dist/ is
# run as the postgres user (archive_command, the node agent). Let that user reach it: o+x (traverse
# only, no listing) on each parent folder that lacks it (a clone in `mktemp -d` or /root is 0700), and
# read access to what it runs. Prints each folder it opens; does nothing when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || exit 0
d=$(pwd)
while [ "$d" != / ]; do
  if [ -z "$(find "$d" -maxdepth 0 -perm -o+x)" ]; then
    chmod o+x "$d" && echo "postgres-access: chmod o+x $d (the postgres user runs this checkout's dist/)" >&2
  fi
  d=$(dirname "$d")
done
chmod -R o+rX dist node_modules package.json
