#!/usr/bin/env bash
# Bulwark backup benchmark: Bulwark beside pg_dump, pg_basebackup and pgBackRest on the SAME pgbench
# database (scale 50, ~755 MiB) in the same run, printing times, sizes and ratios. See README.md.
# Stops by itself (watchdog + per-step timeouts) and removes everything it created.
set -Eeuo pipefail
export LC_ALL=C

SCALE=${SCALE:-50}
JOBS=${JOBS:-2}
PGBENCH_SECS=${PGBENCH_SECS:-20}        # load between the backups and the PITR target (WAL to replay)
PUSH_SEGS=${PUSH_SEGS:-8}               # WAL segments for the archive_command microbenchmark
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
MAX_SECONDS=${MAX_SECONDS:-1800}
KEEP=${KEEP:-0}
ROUNDS=${ROUNDS:-4}                     # restore rounds (order alternates; medians in the table)
DROP_CACHES=${DROP_CACHES:-0}           # 1: also drop the page cache before each timed restore (root)
WARMUP=${WARMUP:-1}                     # 1: one untimed restore of each tool before the timed rounds
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BULWARK=${BULWARK:-"$ROOT/dist/cli/main.js"}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGBACKREST=${PGBACKREST:-$(command -v pgbackrest || true)}
[ -x "$PG_BIN/postgres" ] || { echo "no postgres in PG_BIN=$PG_BIN" >&2; exit 1; }
[ -f "$BULWARK" ] || { echo "build first: npm run build ($BULWARK missing)" >&2; exit 1; }
[ -n "$PGBACKREST" ] || echo "pgbackrest not installed (apt-get install pgbackrest): its rows are skipped" >&2
NODE=$(command -v node)

SCR=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-bench-backup.XXXXXX")
chmod 755 "$SCR"
if [ "$(id -u)" = 0 ]; then chown postgres "$SCR"; AS_PG=(runuser -u postgres --); else AS_PG=(); fi
as_pg() { timeout "$STEP_TIMEOUT" "${AS_PG[@]}" "$@"; }
DATA=$SCR/data; SOCK=$SCR; RES=$SCR/results.tsv; : > "$RES"
STARTED=()
cleanup() {
  local rc=$?; set +e
  for d in "${STARTED[@]}"; do [ -f "$d/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1; done
  [ -n "${WATCHDOG:-}" ] && kill "$WATCHDOG" 2>/dev/null
  pkill_pushers
  if [ "$KEEP" = 1 ]; then echo "kept $SCR" >&2; else rm -rf "$SCR"; fi
  exit $rc
}
pkill_pushers() { for f in "$SCR"/spool*/pusher.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; return 0; }
trap cleanup EXIT
trap 'exit 130' INT TERM
# watchdog: its sleep must not hold our stdout open (a `| tee` would wait for it)
( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep "$MAX_SECONDS" & sp=$!; wait $sp; kill -TERM $$ ) </dev/null >/dev/null 2>&1 & WATCHDOG=$!

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
bytes() { du -sb "$@" 2>/dev/null | awk '{s+=$1} END{print s+0}'; }
rec() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-0}" >> "$RES"; log "$1 | $2 | ${3}s | out=${4:-0}"; }
psqlp() { local port=$1; shift; as_pg "$PG_BIN/psql" -h "$SOCK" -p "$port" -U postgres -d bench -XAtq -v ON_ERROR_STOP=1 "$@"; }
Q() { psqlp "$PORT" -c "$1"; }
free_port() { local p; for p in $(shuf -i 20000-32000 -n 50); do ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && { echo "$p"; return; }; done; }
wait_ready() {  # port: until it accepts connections and is out of recovery
  local port=$1 i
  for i in $(seq 1 6000); do
    [ "$(as_pg "$PG_BIN/psql" -h "$SOCK" -p "$port" -U postgres -d postgres -XAtq -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ] && return 0
    sleep 0.05; done; return 1; }
wait_archived() {  # segment: until pg_stat_archiver reports it (or a later one) archived
  local i last
  for i in $(seq 1 1200); do last=$(Q "select coalesce(last_archived_wal,'') from pg_stat_archiver"); [[ "$last" > "$1" || "$last" == "$1" ]] && return 0; sleep 0.05; done; return 1; }
BW() { "$NODE" "$BULWARK" "$@"; }

PORT=$(free_port)
BREPO=$SCR/bulwark-repo; PREPO=$SCR/pgbr-repo
as_pg mkdir -p "$BREPO" "$PREPO" "$SCR/pgbr-log" "$SCR/pgbr-lock" "$SCR/spool"
CONF=$SCR/pgbackrest.conf
cat > "$CONF" <<EOC
[global]
repo1-path=$PREPO
log-path=$SCR/pgbr-log
lock-path=$SCR/pgbr-lock
process-max=$JOBS
start-fast=y
log-level-console=warn
[bench]
pg1-path=$DATA
pg1-port=$PORT
pg1-socket-path=$SOCK
EOC
chmod 644 "$CONF"
BR() { as_pg "$PGBACKREST" --config="$CONF" --stanza=bench "$@"; }

# ------------------------------------------------------------ instance
log "initdb + pgbench -i -s $SCALE"
as_pg "$PG_BIN/initdb" -D "$DATA" -A trust -U postgres --data-checksums >/dev/null
# the line `bulwark wal archive-command --async` prints (shell fast path + background pusher)
ARCH=$(BW wal archive-command --async --spool "$SCR/spool" --repo "file://$BREPO" | sed "s/^archive_command = '//; s/'\$//; s/''/'/g")
[ -n "$PGBACKREST" ] && ARCH="$ARCH && $PGBACKREST --config=$CONF --stanza=bench archive-push \"%p\""
cat >> "$DATA/postgresql.conf" <<EOC
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
shared_buffers = 1GB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_level = replica
archive_mode = on
archive_command = '$(printf '%s' "$ARCH" | sed "s/'/''/g")'
EOC
STARTED+=("$DATA")
as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$SCR/primary.log" -w start >/dev/null
as_pg "$PG_BIN/createdb" -h "$SOCK" -p "$PORT" -U postgres bench
as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -i -s "$SCALE" -q bench 2>/dev/null
DBSIZE=$(Q "select pg_database_size('bench')")
[ -n "$PGBACKREST" ] && { BR stanza-create >/dev/null; BR check >/dev/null; }
Q "checkpoint"; sync

# ------------------------------------------------------------ logical
log "logical"
sync; t=$(now); as_pg "$PG_BIN/pg_dump" -h "$SOCK" -p "$PORT" -U postgres -Fc -f "$SCR/dump.fc" bench; rec logical "pg_dump -Fc (to a local file)" "$(dt "$t")" "$(bytes "$SCR/dump.fc")"
rm -f "$SCR/dump.fc"
t=$(now); BW backup create --kind logical --repo "file://$BREPO" --pg "postgresql://postgres@127.0.0.1:$PORT/bench" >/dev/null 2>"$SCR/bw.err"
rec logical "bulwark backup create --kind logical (zstd, to repo)" "$(dt "$t")" "$(bytes "$BREPO/backups")"

# ------------------------------------------------------------ full physical backups
log "full backups"
t=$(now); as_pg "$PG_BIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres -D - -Ft -X fetch -c fast > "$SCR/bb.tar"; rec full "pg_basebackup -Ft -X fetch (uncompressed)" "$(dt "$t")" "$(bytes "$SCR/bb.tar")"
rm -f "$SCR/bb.tar"
t=$(now); as_pg "$PG_BIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres -D - -Ft -X fetch -c fast --compress=server-zstd:level=1,workers=2 --no-manifest > "$SCR/bb.tar.zst"; rec full "pg_basebackup --compress=server-zstd:level=1,workers=2" "$(dt "$t")" "$(bytes "$SCR/bb.tar.zst")"
rm -f "$SCR/bb.tar.zst"
for c in zstd gzip; do
  before=$(bytes "$BREPO/backups")
  t=$(now); BW backup create --compress "$c" --repo "file://$BREPO" --pg "postgresql://postgres@127.0.0.1:$PORT/postgres" >/dev/null 2>>"$SCR/bw.err"
  rec full "bulwark full physical, $c" "$(dt "$t")" $(( $(bytes "$BREPO/backups") - before ))
  if [ -n "$PGBACKREST" ]; then
    pc=$([ "$c" = zstd ] && echo zst || echo gz)
    before=$(bytes "$PREPO/backup")
    t=$(now); BR backup --type=full --compress-type="$pc" >/dev/null; rec full "pgbackrest full, $pc, process-max=$JOBS" "$(dt "$t")" $(( $(bytes "$PREPO/backup") - before ))
  fi
done

# ------------------------------------------------------------ WAL to replay, PITR target
log "pgbench -T $PGBENCH_SECS (WAL archived by both tools)"
L0=$(Q "select pg_current_wal_lsn()")
as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -c 4 -j "$JOBS" -T "$PGBENCH_SECS" bench > "$SCR/pgbench.log" 2>&1
Q "create table pitr_marker(id int primary key, note text)"
Q "insert into pitr_marker values (1, 'before')"
SUM=$(Q "select sum(abalance) from pgbench_accounts")
TARGET=$(Q "select clock_timestamp()::text")
Q "insert into pitr_marker values (2, 'after')"
SW=$(Q "select pg_walfile_name(pg_switch_wal())")
wait_archived "$SW" || log "WARNING: $SW not archived"
WALB=$(Q "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$L0')::bigint")
LATEST_COUNT=$(Q "select count(*) from pgbench_history")
rec wal "WAL generated by pgbench -T $PGBENCH_SECS -c 4 (to replay)" "$PGBENCH_SECS" "$WALB"

check() {  # port want_after -> PASS/FAIL line
  local port=$1 b a s
  b=$(psqlp "$port" -c "select count(*) from pitr_marker where note='before'")
  a=$(psqlp "$port" -c "select count(*) from pitr_marker where note='after'")
  s=$(psqlp "$port" -c "select sum(abalance) from pgbench_accounts")
  echo "before=$b after=$a sum_ok=$([ "$s" = "$SUM" ] && echo y || echo n)"
}

# ------------------------------------------------------------ restores (zstd backups of both tools)
# ROUNDS rounds; the order alternates (odd rounds: Bulwark first to latest, pgBackRest first for PITR;
# even rounds the other way), so neither tool always pays for the other's writeback or a cold cache;
# the table reports each tool's median, and the per-round ratios are printed below it.
# Before every timed step: sync (and with DROP_CACHES=1 also drop the page cache).
settle() { sync; if [ "$DROP_CACHES" = 1 ] && [ -w /proc/sys/vm/drop_caches ]; then echo 1 > /proc/sys/vm/drop_caches; fi; }
phases() {  # pg-log -> "pg start->ready Xs (fsync+probe a, first segment b, redo c, end d, checkpoint e)"
  awk 'function ts(l){ split(substr(l,12,12),a,":"); return a[1]*3600+a[2]*60+a[3] }
    /starting PostgreSQL/ && !s {s=ts($0)} /(starting (archive|point-in-time) recovery|entering standby mode)/ && !ar {ar=ts($0)} /redo starts/ {rs=ts($0)}
    /redo done/ {rd=ts($0)} /recovery stopping/ {rd=ts($0)} /archive recovery complete/ {ac=ts($0)} /database system is ready to accept connections/ {r=ts($0)}
    END{ if (s && r) printf "pg start->ready %.2fs (fsync+probe %.2f, first segment %.2f, redo %.2f, end %.2f, checkpoint %.2f)", r-s, ar-s, rs-ar, rd-rs, ac-rd, r-ac }' "$1"; }
restore_bulwark() {  # name target-args...
  local name=$1; shift
  local dir=$SCR/r-$name port; port=$(free_port)
  STARTED+=("$dir")
  settle
  t=$(now)
  BW restore --repo "file://$BREPO" --pgdata "$dir" --backup "$BW_ZSTD" "$@" --start --port "$port" --archive-mode off > "$SCR/bw-$name.out" 2>>"$SCR/bw.err"
  wait_ready "$port"; T=$(dt "$t"); PORT_R=$port; DIR_R=$dir; PH=$(phases "$dir/bulwark-recovery.log")
}
restore_pgbr() {  # name target-args...
  local name=$1; shift
  local dir=$SCR/p-$name port; port=$(free_port)
  as_pg mkdir -m 700 "$dir"; STARTED+=("$dir")
  settle
  t=$(now)
  BR restore --pg1-path="$dir" --set="$PGBR_ZST" --archive-mode=off "$@" >/dev/null
  printf "port = %s\n" "$port" | as_pg tee -a "$dir/postgresql.auto.conf" >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/log" -W start >/dev/null
  # watch the log (cheap) rather than polling psql through runuser during recovery, then confirm
  for _ in $(seq 1 30000); do grep -q 'database system is ready to accept connections$' "$dir/log" 2>/dev/null && break; sleep 0.01; done
  wait_ready "$port"; T=$(dt "$t"); PORT_R=$port; DIR_R=$dir; PH=$(phases "$dir/log")
}
stop_rm() { as_pg "$PG_BIN/pg_ctl" -D "$1" -m immediate -w stop >/dev/null 2>&1; rm -rf "$1"; }
ROUNDS_TSV=$SCR/rounds.tsv; : > "$ROUNDS_TSV"
round_rec() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$T" >> "$ROUNDS_TSV"; echo "  round $3 $2 $1: ${T}s; $PH" >> "$SCR/phases.txt"; log "round $3 | $1 | $2 | ${T}s"; }

BW_ZSTD=$(BW backup list --json --repo "file://$BREPO" | "$NODE" -e 'const l=JSON.parse(require("fs").readFileSync(0));console.log(l.filter(b=>b.kind==="physical"&&b.compression==="zstd").at(-1).id)')
[ -n "$PGBACKREST" ] && PGBR_ZST=$(BR info --output=json | "$NODE" -e 'const i=JSON.parse(require("fs").readFileSync(0));console.log(i[0].backup.filter(b=>b.type==="full")[0].label)')

latest_bulwark() {
  restore_bulwark latest --to-latest; C=$(psqlp "$PORT_R" -c "select count(*) from pgbench_history")
  round_rec latest bulwark "$r"; echo "round $r bulwark latest: history rows $C (want $LATEST_COUNT); $(grep -o 'recovery finished.*' "$SCR/bw-latest.out")" >> "$SCR/checks.txt"; stop_rm "$DIR_R"
}
latest_pgbr() {
  restore_pgbr latest --type=default; C=$(psqlp "$PORT_R" -c "select count(*) from pgbench_history")
  round_rec latest pgbackrest "$r"; echo "round $r pgbackrest latest: history rows $C (want $LATEST_COUNT)" >> "$SCR/checks.txt"; stop_rm "$DIR_R"
}
pitr_bulwark() {
  restore_bulwark pitr --to-time "$TARGET"; echo "round $r bulwark PITR: $(check "$PORT_R"); $(grep -o 'recovery finished.*' "$SCR/bw-pitr.out")" >> "$SCR/checks.txt"
  round_rec pitr bulwark "$r"; stop_rm "$DIR_R"
}
pitr_pgbr() {
  restore_pgbr pitr --type=time --target="$TARGET" --target-action=promote; echo "round $r pgbackrest PITR: $(check "$PORT_R")" >> "$SCR/checks.txt"
  round_rec pitr pgbackrest "$r"; stop_rm "$DIR_R"
}
# the primary keeps running (the archive_command microbenchmark below copies segments from its pg_wal,
# so no checkpoint here) but must not work during the timed restores: no autovacuum of the tables
# pgbench just churned
Q "alter system set autovacuum = off" >/dev/null; Q "select pg_reload_conf()" >/dev/null; sync
if [ "$WARMUP" = 1 ]; then
  # one untimed restore of each tool first: on this VM the first restore after the load step is slower
  # whoever runs it (fresh page-cache memory), which would otherwise land on round 1's first tool
  log "warm-up restores (untimed)"
  r=0; restore_bulwark warmup --to-latest; stop_rm "$DIR_R"
  [ -n "$PGBACKREST" ] && { restore_pgbr warmup --type=default; stop_rm "$DIR_R"; }
fi
log "restores: $ROUNDS round(s), to latest and PITR to $TARGET, order alternating"
for r in $(seq 1 "$ROUNDS"); do
  if [ -z "$PGBACKREST" ]; then latest_bulwark; pitr_bulwark; continue; fi
  if [ $((r % 2)) = 1 ]; then latest_bulwark; latest_pgbr; pitr_pgbr; pitr_bulwark
  else latest_pgbr; latest_bulwark; pitr_bulwark; pitr_pgbr; fi
done
median() { sort -n | awk '{v[NR]=$1} END{ if (NR%2) printf "%.2f", v[(NR+1)/2]; else printf "%.2f", (v[NR/2]+v[NR/2+1])/2 }'; }
med() { awk -F'\t' -v k="$1" -v t="$2" '$1==k && $2==t {print $4}' "$ROUNDS_TSV" | median; }
rec restore "bulwark restore --to-latest --start -> ready" "$(med latest bulwark)" "0"
[ -n "$PGBACKREST" ] && rec restore "pgbackrest restore (default=latest) + start -> ready" "$(med latest pgbackrest)" "0"
rec pitr "bulwark restore --to-time --start -> promoted" "$(med pitr bulwark)" "0"
[ -n "$PGBACKREST" ] && rec pitr "pgbackrest restore --type=time + start -> promoted" "$(med pitr pgbackrest)" "0"

# ------------------------------------------------------------ archive_command cost per segment
log "archive_command microbenchmark ($PUSH_SEGS segments)"
FAKE=$SCR/fake; as_pg mkdir -p "$FAKE/pg_wal/archive_status" "$FAKE/global"
as_pg cp "$DATA/global/pg_control" "$FAKE/global/"   # pgbackrest archive-push reads the system id from it
SEGS=$(Q "select string_agg(name, ' ' order by name) from (select name from pg_ls_waldir() where name ~ '^[0-9A-F]{24}\$' and name < '$SW' order by name desc limit $PUSH_SEGS) s")
i=0; for s in $SEGS; do i=$((i+1)); as_pg cp "$DATA/pg_wal/$s" "$FAKE/pg_wal/$(printf '0000000900000000000000%02X' $i)"; done
NS=$i
archiver() {  # label command-with-%p: run it like PostgreSQL's archiver does, in order, from PGDATA
  local label=$1 cmd=$2 f n t c
  for f in "$FAKE"/pg_wal/0000*; do touch "$FAKE/pg_wal/archive_status/$(basename "$f").ready"; chown postgres "$FAKE/pg_wal/archive_status/$(basename "$f").ready" 2>/dev/null || true; done
  t=$(now)
  for f in $(cd "$FAKE/pg_wal" && ls 0000* | sort); do
    c=${cmd//%p/pg_wal/$f}; c=${c//%f/$f}
    (cd "$FAKE" && as_pg sh -c "$c") >/dev/null 2>>"$SCR/push.err" || { log "$label: push of $f failed: $(tail -2 "$SCR/push.err")"; return 1; }
    mv "$FAKE/pg_wal/archive_status/$f.ready" "$FAKE/pg_wal/archive_status/$f.done"
  done
  T=$(dt "$t"); rm -f "$FAKE"/pg_wal/archive_status/*
  rec wal "$label: $NS segments" "$T" "0"
}
as_pg mkdir -p "$SCR/push-sync" "$SCR/push-async" "$SCR/push-pgbr"
archiver "bulwark wal push (sync, zstd)" "\"$NODE\" \"$BULWARK\" wal push %p --repo file://$SCR/push-sync"
ASYNC=$(BW wal archive-command --async --spool "$SCR/spool-push" --repo "file://$SCR/push-async" | sed "s/^archive_command = '//; s/'\$//; s/''/'/g")
archiver "bulwark wal push --async --parallel 2 (zstd)" "$ASYNC"
if [ -n "$PGBACKREST" ]; then
  as_pg "$PGBACKREST" --config="$CONF" --stanza=bench --repo1-path="$SCR/push-pgbr" --log-level-console=error stanza-create >/dev/null
  archiver "pgbackrest archive-push (sync, zst)" "$PGBACKREST --config=$CONF --stanza=bench --repo1-path=$SCR/push-pgbr --pg1-path=$FAKE --compress-type=zst archive-push %p"
fi

# ------------------------------------------------------------ report
{
  echo "Bulwark backup benchmark — $(date -u +%FT%TZ), $(nproc) cores, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), pgbench scale $SCALE, db $((DBSIZE>>20)) MiB; ${PGBACKREST:+$("$PGBACKREST" version)}"
  echo
  awk -F'\t' -v db="$DBSIZE" 'BEGIN{printf "%-8s %-58s %8s %9s %8s\n","section","step","time_s","out_MiB","MiB/s"}
    {printf "%-8s %-58s %8.2f %9s %8s\n",$1,$2,$3,($4>0?sprintf("%.1f",$4/1048576):"-"),(($1=="full"||$1=="logical")&&$3>0?sprintf("%.0f",db/1048576/$3):"-")}' "$RES"
  echo
  echo "ratios (Bulwark time / peer time; < 1 means Bulwark is faster):"
  awk -F'\t' '{t[$2]=$3} END{
    r("full zstd: bulwark / pgbackrest zst", "bulwark full physical, zstd", "pgbackrest full, zst, process-max='"$JOBS"'")
    r("full gzip: bulwark / pgbackrest gz", "bulwark full physical, gzip", "pgbackrest full, gz, process-max='"$JOBS"'")
    r("full zstd: bulwark / pg_basebackup server-zstd", "bulwark full physical, zstd", "pg_basebackup --compress=server-zstd:level=1,workers=2")
    r("logical: bulwark / pg_dump -Fc", "bulwark backup create --kind logical (zstd, to repo)", "pg_dump -Fc (to a local file)")
    r("restore to latest: bulwark / pgbackrest", "bulwark restore --to-latest --start -> ready", "pgbackrest restore (default=latest) + start -> ready")
    r("PITR: bulwark / pgbackrest", "bulwark restore --to-time --start -> promoted", "pgbackrest restore --type=time + start -> promoted")
    r("archive_command sync: bulwark / pgbackrest", "bulwark wal push (sync, zstd): '"$NS"' segments", "pgbackrest archive-push (sync, zst): '"$NS"' segments")
    r("archive_command async: bulwark / pgbackrest sync", "bulwark wal push --async --parallel 2 (zstd): '"$NS"' segments", "pgbackrest archive-push (sync, zst): '"$NS"' segments")
  }
  function r(label, a, b) { if ((a in t) && (b in t) && t[b] > 0) printf "  %-52s %6.2f  (%.2fs vs %.2fs)\n", label, t[a]/t[b], t[a], t[b] }' "$RES"
  awk -F'\t' -v n="$NS" '$1=="wal" && $2 ~ /segments/ {printf "  per segment: %-52s %4.0f ms\n", $2, 1000*$3/n}' "$RES"
  if [ -n "$PGBACKREST" ]; then
    echo
    echo "restore rounds (restore rows above are medians; first = which tool ran first in that pair):"
    awk -F'\t' '{t[$1" "$3" "$2]=$4; if (!(($1" "$3) in first)) first[$1" "$3]=$2; n=($3>n?$3:n)}
      END{ for (k=1; k<=2; k++) { kind=(k==1?"latest":"pitr"); line=sprintf("  %-7s bulwark/pgbackrest:", kind)
        for (r=1; r<=n; r++) { a=t[kind" "r" bulwark"]; b=t[kind" "r" pgbackrest"]; if (b>0) line=line sprintf(" %.2f (%.2fs/%.2fs, %s first)", a/b, a, b, first[kind" "r]) }
        print line } }' "$ROUNDS_TSV"
    echo "  where the time went, from each server's log:"
    sed 's/^/  /' "$SCR/phases.txt"
  fi
  echo
  echo "correctness checks (want before=1 after=0 sum_ok=y; history rows equal):"
  sed 's/^/  /' "$SCR/checks.txt"
} | tee "${OUT:-${TMPDIR:-/tmp}/bulwark-bench-backup-last.txt}"
