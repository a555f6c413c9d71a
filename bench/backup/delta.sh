#!/usr/bin/env bash
# Delta restore: `bulwark restore --delta` beside `pgbackrest restore --delta`, each over a stale copy
# of the SAME pgbench database (scale $SCALE) restored earlier by the same tool, in the same run:
#   1. a full backup of each tool (zstd), each restored to latest into its own folder and started;
#   2. the copies diverge (pgbench -T $COPY_SECS on each copy), the primary moves on (pgbench -T
#      $PGBENCH_SECS, WAL archived by both tools); the copies are stopped;
#   3. timed, in $ROUNDS rounds with alternating order: delta restore over the stale copy to latest +
#      start -> ready, then the copy is made stale again (pgbench on it, stop).
# Prints the medians, the per-round ratio and a row-count check of both restored copies.
# Needs: npm run build; apt-get install pgbackrest. Stops by itself and removes what it created.
set -Eeuo pipefail
export LC_ALL=C

SCALE=${SCALE:-50}
JOBS=${JOBS:-2}
ROUNDS=${ROUNDS:-2}
PGBENCH_SECS=${PGBENCH_SECS:-5}
COPY_SECS=${COPY_SECS:-3}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
MAX_SECONDS=${MAX_SECONDS:-1200}
KEEP=${KEEP:-0}
# shellcheck source=bench/backup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v pgbackrest >/dev/null || [ -n "${PGBACKREST:-}" ] || { echo "pgbackrest is not installed (apt-get install -y pgbackrest)" >&2; exit 1; }
bench_scratch delta
: > "$SCR/checks.txt"
bench_primary compress-type=zst
URL="postgresql://postgres@127.0.0.1:$PORT/postgres"

log "full backups"
BW backup create --repo "file://$BREPO" --pg "$URL" > "$SCR/bw-full.out" 2>&1 || { cat "$SCR/bw-full.out" >&2; exit 1; }
BR backup --type=full > "$SCR/br-full.out" 2>&1 || { cat "$SCR/br-full.out" >&2; exit 1; }

BDIR=$SCR/b-copy; PDIR=$SCR/p-copy; BPORT=$(free_port); PPORT=$(free_port)
STARTED+=("$BDIR" "$PDIR")
archive_now() { local sw; sw=$(Q "select pg_walfile_name(pg_switch_wal())"); wait_archived "$sw" || log "WARNING: $sw not archived"; }
bw_restore() {  # extra flags...
  BW restore --repo "file://$BREPO" --pgdata "$BDIR" --to-latest --start --port "$BPORT" "$@" > "$SCR/bw-restore.out" 2>&1 || { cat "$SCR/bw-restore.out" >&2; exit 1; }
  wait_ready "$BPORT"
}
br_restore() {  # extra flags...
  BR restore --pg1-path="$PDIR" --archive-mode=off --type=default "$@" >/dev/null
  printf "port = %s\n" "$PPORT" | as_pg tee -a "$PDIR/postgresql.auto.conf" >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$PDIR" -l "$PDIR/log" -W start >/dev/null
  wait_ready "$PPORT"
}
stale() {  # port dir: the copy diverges, then stops
  as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$1" -U postgres -c 2 -j "$JOBS" -T "$COPY_SECS" bench > /dev/null 2>&1
  as_pg "$PG_BIN/pg_ctl" -D "$2" -m fast -w stop >/dev/null
}
log "first restores (untimed), the copies diverge"
as_pg mkdir -m 700 "$PDIR"
bw_restore; br_restore
stale "$BPORT" "$BDIR"; stale "$PPORT" "$PDIR"

for r in $(seq 1 "$ROUNDS"); do
  log "round $r: the primary moves on (pgbench -T $PGBENCH_SECS)"
  as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -c 4 -j "$JOBS" -T "$PGBENCH_SECS" bench > /dev/null 2>&1
  archive_now
  WANT=$(Q "select count(*) from pgbench_history")
  order=(bw br); [ $((r % 2)) = 0 ] && order=(br bw)
  for tool in "${order[@]}"; do
    sync
    if [ "$tool" = bw ]; then
      t=$(now); bw_restore --delta; rec "round $r" "bulwark restore --delta --to-latest --start -> ready" "$(dt "$t")"
      echo "round $r bulwark: $(grep -o 'delta: .*' "$SCR/bw-restore.out" | head -1); history rows $(psqlp "$BPORT" -c 'select count(*) from pgbench_history') (want $WANT)" >> "$SCR/checks.txt"
      stale "$BPORT" "$BDIR"
    else
      t=$(now); br_restore --delta; rec "round $r" "pgbackrest restore --delta + start -> ready" "$(dt "$t")"
      echo "round $r pgbackrest: history rows $(psqlp "$PPORT" -c 'select count(*) from pgbench_history') (want $WANT)" >> "$SCR/checks.txt"
      stale "$PPORT" "$PDIR"
    fi
  done
done

{
  echo "Bulwark delta restore benchmark — $(date -u +%FT%TZ), $(nproc) cores, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), pgbench scale $SCALE, db $((DBSIZE>>20)) MiB, zstd for both; $("$PGBACKREST" version)"
  echo
  awk -F'\t' 'BEGIN{printf "%-9s %-58s %8s\n","round","step","time_s"} {printf "%-9s %-58s %8.2f\n",$1,$2,$3}' "$RES"
  echo
  echo "per-round ratio (Bulwark / pgBackRest; < 1 means Bulwark is faster) and medians:"
  awk -F'\t' '{ if ($2 ~ /^bulwark/) b[$1]=$3; else p[$1]=$3 } END{
    for (r in b) if (r in p) printf "  %-9s %5.2f (%.2fs vs %.2fs)\n", r, b[r]/p[r], b[r], p[r] }' "$RES" | sort
  med() { grep -F "$1" "$RES" | cut -f3 | sort -n | awk '{v[NR]=$1} END{ if (NR) print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2); else print 0 }'; }
  mb=$(med 'bulwark restore --delta'); mp=$(med 'pgbackrest restore --delta')
  awk -v b="$mb" -v p="$mp" 'BEGIN{ if (p > 0) printf "  median    %5.2f (%.2fs vs %.2fs)\n", b/p, b, p }'
  echo
  echo "checks:"
  sed 's/^/  /' "$SCR/checks.txt"
} | tee "${OUT:-${TMPDIR:-/tmp}/bulwark-bench-delta-last.txt}"
