#!/usr/bin/env bash
# Incremental physical backups: Bulwark (changed pages) beside pgBackRest (changed files, --type=incr)
# on the SAME pgbench database (scale 50, ~755 MiB) in the same run. After a full backup of each tool:
#   round 1 "few rows": 1 row in 1,000 of pgbench_accounts updated (scattered over the 640 MiB table)
#   round 2 "pgbench":  pgbench -T $PGBENCH_SECS -c 4 (TPC-B-like, random accounts)
# each followed by an incremental backup of each tool (time and bytes stored), then a restore of the
# newest incremental (full + 2 layers + WAL to the end of the archive) -> server ready, for both, with
# a check that both restored copies hold every pgbench_history row. Prints a table and ratios.
# Needs: npm run build; apt-get install pgbackrest. Stops by itself and removes what it created.
set -Eeuo pipefail
export LC_ALL=C

SCALE=${SCALE:-50}
JOBS=${JOBS:-2}
PGBENCH_SECS=${PGBENCH_SECS:-10}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
MAX_SECONDS=${MAX_SECONDS:-1200}
KEEP=${KEEP:-0}
# shellcheck source=bench/backup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v pgbackrest >/dev/null || [ -n "${PGBACKREST:-}" ] || { echo "pgbackrest is not installed (apt-get install -y pgbackrest)" >&2; exit 1; }
bench_scratch incr
: > "$SCR/checks.txt"
bench_primary compress-type=zst
URL="postgresql://postgres@127.0.0.1:$PORT/postgres"

bw_backup() {  # label type
  local before; before=$(bytes "$BREPO/backups"); sync
  t=$(now); BW backup create --type "$2" --repo "file://$BREPO" --pg "$URL" > "$SCR/bw-$2.out" 2>&1 || { cat "$SCR/bw-$2.out" >&2; exit 1; }
  rec "$1" "bulwark $2" "$(dt "$t")" $(( $(bytes "$BREPO/backups") - before ))
  grep -h "incremental on" "$SCR/bw-$2.out" | sed "s/^/  $1 bulwark: /" >> "$SCR/checks.txt" || true
}
br_backup() {  # label type
  local before; before=$(bytes "$PREPO/backup"); sync
  t=$(now); BR backup --type="$2" > "$SCR/br-$2.out" 2>&1 || { cat "$SCR/br-$2.out" >&2; exit 1; }
  rec "$1" "pgbackrest $2" "$(dt "$t")" $(( $(bytes "$PREPO/backup") - before ))
}

log "full backups"
bw_backup full full
br_backup full full

log "round 1: 1 row in 1,000 of pgbench_accounts"
Q "update pgbench_accounts set abalance = abalance + 1 where aid % 1000 = 0" >/dev/null
br_backup "incr1 (few rows)" incr
bw_backup "incr1 (few rows)" incr

log "round 2: pgbench -T $PGBENCH_SECS -c 4"
as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -c 4 -j "$JOBS" -T "$PGBENCH_SECS" bench > "$SCR/pgbench.log" 2>&1
bw_backup "incr2 (pgbench)" incr
br_backup "incr2 (pgbench)" incr

Q "insert into pgbench_history(tid, bid, aid, delta, mtime) values (1, 1, 1, 42, now())" >/dev/null
SW=$(Q "select pg_walfile_name(pg_switch_wal())")
wait_archived "$SW" || log "WARNING: $SW not archived"
WANT=$(Q "select count(*) from pgbench_history")

log "restore the newest incremental (full + 2 layers), to the end of the archive"
sync
dir=$SCR/p-latest; port=$(free_port); as_pg mkdir -m 700 "$dir"; STARTED+=("$dir")
t=$(now)
BR restore --pg1-path="$dir" --archive-mode=off --type=default >/dev/null
printf "port = %s\n" "$port" | as_pg tee -a "$dir/postgresql.auto.conf" >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/log" -W start >/dev/null
wait_ready "$port"; rec restore "pgbackrest restore (full + 2 incr) + start -> ready" "$(dt "$t")"
echo "pgbackrest restored: history rows $(psqlp "$port" -c 'select count(*) from pgbench_history') (want $WANT)" >> "$SCR/checks.txt"
as_pg "$PG_BIN/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null; rm -rf "$dir"
sync
dir=$SCR/b-latest; port=$(free_port); STARTED+=("$dir")
t=$(now)
BW restore --repo "file://$BREPO" --pgdata "$dir" --to-latest --start --port "$port" --archive-mode off > "$SCR/bw-restore.out" 2>&1 || { cat "$SCR/bw-restore.out" >&2; exit 1; }
wait_ready "$port"; rec restore "bulwark restore (full + 2 incr) --to-latest --start -> ready" "$(dt "$t")"
sed 's/^/  bulwark: /' "$SCR/bw-restore.out" >> "$SCR/checks.txt"
echo "bulwark restored: history rows $(psqlp "$port" -c 'select count(*) from pgbench_history') (want $WANT)" >> "$SCR/checks.txt"

{
  echo "Bulwark incremental backup benchmark — $(date -u +%FT%TZ), $(nproc) cores, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), pgbench scale $SCALE, db $((DBSIZE>>20)) MiB, zstd for both; $("$PGBACKREST" version)"
  echo
  awk -F'\t' 'BEGIN{printf "%-18s %-62s %8s %11s\n","round","step","time_s","stored_MiB"}
    {printf "%-18s %-62s %8.2f %11s\n",$1,$2,$3,($4>0?sprintf("%.2f",$4/1048576):"-")}' "$RES"
  echo
  echo "ratios (Bulwark / pgBackRest; < 1 means Bulwark is faster or smaller):"
  awk -F'\t' '{t[$1 "|" $2]=$3; s[$1 "|" $2]=$4} END{
    for (r in t) if (r ~ /\|bulwark /) { split(r, p, "|"); ty=p[2]; sub(/^bulwark /, "", ty); o=p[1] "|pgbackrest " ty
      if (o in t) printf "  %-18s %-5s time %5.2f (%.2fs vs %.2fs)   stored %6.3f (%.2f vs %.2f MiB)\n", p[1], ty, t[r]/t[o], t[r], t[o], (s[o]>0?s[r]/s[o]:0), s[r]/1048576, s[o]/1048576 }
    a="restore|bulwark restore (full + 2 incr) --to-latest --start -> ready"; b="restore|pgbackrest restore (full + 2 incr) + start -> ready"
    if ((a in t) && (b in t)) printf "  %-18s       time %5.2f (%.2fs vs %.2fs)\n", "restore", t[a]/t[b], t[a], t[b] }' "$RES" | sort
  echo
  echo "checks:"
  sed 's/^/  /' "$SCR/checks.txt"
} | tee "${OUT:-${TMPDIR:-/tmp}/bulwark-bench-incremental-last.txt}"
