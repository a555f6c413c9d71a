#!/usr/bin/env bash
# Does WAL archiving keep up with a busy pgbench on this machine? For each archive_command variant,
# on a fresh instance, right after a checkpoint: pgbench -T $SECS -c 8 while sampling, every 0.5 s, how many completed segments
# wait for the archiver (current segment - last archived - 1); then the time from the end of the load
# to the last segment archived, and pg_stat_archiver's failed_count. Variants, same run:
#   bulwark-async   the line `bulwark wal archive-command --async` prints (background pusher)
#   bulwark-sync    bulwark wal push %p (one Node process per segment)
#   pgbackrest      pgbackrest archive-push %p (sync, zst)
# Needs: npm run build; root (PostgreSQL runs as postgres); pgbackrest for its row.
set -Eeuo pipefail
export LC_ALL=C
SECS=${SECS:-20}
SCALE=${SCALE:-50}
VARIANTS=${VARIANTS:-"bulwark-async bulwark-sync pgbackrest"}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BULWARK=${BULWARK:-"$ROOT/dist/cli/main.js"}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGBACKREST=${PGBACKREST:-$(command -v pgbackrest || true)}
NODE=$(command -v node)
[ -f "$BULWARK" ] || { echo "build first: npm run build" >&2; exit 1; }
SCR=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-bench-archive.XXXXXX"); chmod 755 "$SCR"
if [ "$(id -u)" = 0 ]; then chown postgres "$SCR"; AS_PG=(runuser -u postgres --); else AS_PG=(); fi
as_pg() { timeout 600 "${AS_PG[@]}" "$@"; }
DATA=""
cleanup() {
  local rc=$?; set +e
  [ -n "$DATA" ] && [ -f "$DATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1
  for f in "$SCR"/*/spool/pusher.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  rm -rf "$SCR"; exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
segno() { echo $(( 16#${1:8:8} * 256 + 16#${1:16:8} )); }
free_port() { local p; for p in $(shuf -i 20000-32000 -n 50); do ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && { echo "$p"; return; }; done; }
OUT=$SCR/results.txt; : > "$OUT"

run_variant() {
  local v=$1 dir=$SCR/$v port; port=$(free_port)
  as_pg mkdir -p "$dir/repo" "$dir/spool" "$dir/pgbr-log" "$dir/pgbr-lock"
  DATA=$dir/data
  as_pg "$PG_BIN/initdb" -D "$DATA" -A trust -U postgres --data-checksums >/dev/null
  local arch
  case $v in
    bulwark-async) arch=$("$NODE" "$BULWARK" wal archive-command --async --spool "$dir/spool" --repo "file://$dir/repo" | sed "s/^archive_command = '//; s/'\$//; s/''/'/g") ;;
    bulwark-sync) arch="\"$NODE\" \"$BULWARK\" wal push \"%p\" --repo file://$dir/repo" ;;
    pgbackrest)
      [ -n "$PGBACKREST" ] || { log "pgbackrest not installed: skipped"; return 0; }
      printf '[global]\nrepo1-path=%s\nlog-path=%s\nlock-path=%s\ncompress-type=zst\nlog-level-console=warn\n[b]\npg1-path=%s\npg1-port=%s\npg1-socket-path=%s\n' \
        "$dir/repo" "$dir/pgbr-log" "$dir/pgbr-lock" "$DATA" "$port" "$dir" > "$dir/pgbr.conf"; chmod 644 "$dir/pgbr.conf"
      arch="$PGBACKREST --config=$dir/pgbr.conf --stanza=b archive-push \"%p\"" ;;
  esac
  cat >> "$DATA/postgresql.conf" <<EOC
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
shared_buffers = 256MB
max_wal_size = 2GB
wal_level = replica
archive_mode = on
archive_command = '$(printf '%s' "$arch" | sed "s/'/''/g")'
EOC
  as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$dir/pg.log" -w start >/dev/null
  Q() { as_pg "$PG_BIN/psql" -h "$dir" -p "$port" -U postgres -d postgres -XAtq -c "$1"; }
  [ "$v" = pgbackrest ] && as_pg "$PGBACKREST" --config="$dir/pgbr.conf" --stanza=b stanza-create >/dev/null
  as_pg "$PG_BIN/pgbench" -h "$dir" -p "$port" -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>&1
  # a checkpoint just before the load: every page's first change after it is logged whole (full-page
  # writes), the WAL-heaviest moment of a busy server
  Q "checkpoint" >/dev/null; Q "select pg_switch_wal()" >/dev/null; sleep 2
  local l0; l0=$(Q "select pg_current_wal_lsn()")
  log "$v: pgbench -T $SECS -c 8"
  as_pg "$PG_BIN/pgbench" -h "$dir" -p "$port" -U postgres -c 8 -j 2 -T "$SECS" postgres > "$dir/pgbench.log" 2>&1 &
  local bench=$! maxlag=0 cur last lag
  while kill -0 "$bench" 2>/dev/null; do
    read -r cur last < <(Q "select pg_walfile_name(pg_current_wal_lsn()), coalesce(last_archived_wal, '000000010000000000000000') from pg_stat_archiver" | tr '|' ' ')
    lag=$(( $(segno "$cur") - $(segno "$last") - 1 )); [ "$lag" -gt "$maxlag" ] && maxlag=$lag
    sleep 0.5
  done
  wait "$bench" || true
  local t0 sw mib drain failed tps
  t0=$(date +%s.%N)
  mib=$(Q "select round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$l0') / 1048576)")
  sw=$(Q "select pg_walfile_name(pg_current_wal_lsn())")
  Q "select pg_switch_wal()" >/dev/null
  for _ in $(seq 1 2400); do last=$(Q "select coalesce(last_archived_wal,'') from pg_stat_archiver"); [[ "$last" > "$sw" || "$last" == "$sw" ]] && break; sleep 0.05; done
  drain=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
  failed=$(Q "select failed_count from pg_stat_archiver")
  tps=$(grep -oE 'tps = [0-9.]+' "$dir/pgbench.log" | head -1 | awk '{printf "%.0f", $3}')
  printf '%-15s %8s %9s %8s %14s %12s %8s\n' "$v" "$tps" "$mib" "$(awk -v m="$mib" -v s="$SECS" 'BEGIN{printf "%.1f", m/s}')" "$maxlag" "$drain" "$failed" >> "$OUT"
  as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null; DATA=""
  for f in "$dir"/spool/pusher.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  rm -rf "$dir"
}

for v in $VARIANTS; do run_variant "$v"; done
{
  echo "WAL archiving under pgbench -T $SECS -c 8 (scale $SCALE) — $(date -u +%FT%TZ), $(nproc) cores, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  printf '%-15s %8s %9s %8s %14s %12s %8s\n' variant tps WAL_MiB MiB/s max_lag_segs drain_s failed
  cat "$OUT"
  echo "max_lag_segs: completed segments waiting for archive_command at the worst sample (0-1 = keeping up);"
  echo "drain_s: from the end of the load to the last segment archived."
} | tee "${RESULT:-${TMPDIR:-/tmp}/bulwark-bench-archive-lag-last.txt}"
