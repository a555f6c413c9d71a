#!/usr/bin/env bash
# Logical backups: Bulwark's custom and directory formats beside plain pg_dump/pg_restore on the SAME
# database in the same run (times, sizes, ratios, and the local temp peak of the directory format).
# The database: pgbench -i -s SCALE plus COPIES copies of pgbench_accounts, so there are several big
# tables for `-j` to spread. Run as root or as a user that can run PostgreSQL; needs `npm run build`.
# Stops by itself (watchdog + per-step timeouts) and removes everything it created.
set -Eeuo pipefail
export LC_ALL=C

SCALE=${SCALE:-10}
COPIES=${COPIES:-3}
JOBS=${JOBS:-2}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
MAX_SECONDS=${MAX_SECONDS:-1200}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BULWARK=${BULWARK:-"$ROOT/dist/cli/main.js"}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$PG_BIN/postgres" ] || { echo "no postgres in PG_BIN=$PG_BIN" >&2; exit 1; }
[ -f "$BULWARK" ] || { echo "build first: npm run build ($BULWARK missing)" >&2; exit 1; }
NODE=$(command -v node)

SCR=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-bench-logical.XXXXXX")
chmod 755 "$SCR"
if [ "$(id -u)" = 0 ]; then chown postgres "$SCR"; AS_PG=(runuser -u postgres --); else AS_PG=(); fi
as_pg() { timeout "$STEP_TIMEOUT" "${AS_PG[@]}" "$@"; }
DATA=$SCR/data
cleanup() {
  local rc=$?; set +e
  [ -f "$DATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1
  [ -n "${WATCHDOG:-}" ] && kill "$WATCHDOG" 2>/dev/null
  rm -rf "$SCR"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep "$MAX_SECONDS" & sp=$!; wait $sp; kill -TERM $$ ) </dev/null >/dev/null 2>&1 & WATCHDOG=$!

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
bytes() { du -sb "$@" 2>/dev/null | awk '{s+=$1} END{print s+0}'; }
free_port() { local p; for p in $(shuf -i 20000-32000 -n 50); do ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && { echo "$p"; return; }; done; }
declare -A T S
rec() { T[$1]=$2; S[$1]=${3:-0}; log "$1: ${2}s, $(( ${3:-0} / 1048576 )) MiB"; }

PORT=$(free_port)
as_pg "$PG_BIN/initdb" -D "$DATA" -A trust -U postgres --no-sync >/dev/null
cat >> "$DATA/postgresql.conf" <<EOC
listen_addresses = ''
unix_socket_directories = '$SCR'
port = $PORT
fsync = off
shared_buffers = '128MB'
max_wal_size = '2GB'
EOC
as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$SCR/server.log" -w start >/dev/null
PSQL=(as_pg "$PG_BIN/psql" -h "$SCR" -p "$PORT" -U postgres -XAtq -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c 'create database bench'
log "pgbench -i -s $SCALE + $COPIES copies of pgbench_accounts"
as_pg "$PG_BIN/pgbench" -h "$SCR" -p "$PORT" -U postgres -i -s "$SCALE" -q bench >/dev/null 2>&1
for k in $(seq 1 "$COPIES"); do "${PSQL[@]}" -d bench -c "create table accounts_$k as select * from pgbench_accounts"; done
"${PSQL[@]}" -d bench -c 'vacuum analyze' >/dev/null
DBSIZE=$("${PSQL[@]}" -d bench -c "select pg_database_size('bench')")
URL="postgresql://postgres@$(printf '%s' "$SCR" | sed 's|/|%2F|g'):$PORT/bench"
ADMIN="postgresql://postgres@$(printf '%s' "$SCR" | sed 's|/|%2F|g'):$PORT/postgres"
export PGHOST=$SCR PGPORT=$PORT PGUSER=postgres
OUT=$SCR/out; as_pg mkdir -p "$OUT"
BW() { timeout "$STEP_TIMEOUT" "$NODE" "$BULWARK" "$@"; }
sync

# --- backups (peers write to a local folder; Bulwark into a file:// repository, zstd level 1)
t=$(now); as_pg "$PG_BIN/pg_dump" -Fc -Z0 -d bench -f "$OUT/fc.dump"; rec 'pg_dump -Fc -Z0 (local file)' "$(dt "$t")" "$(bytes "$OUT/fc.dump")"
t=$(now); as_pg "$PG_BIN/pg_dump" -Fd -j "$JOBS" -Z0 -d bench -f "$OUT/fd0"; rec "pg_dump -Fd -j $JOBS -Z0 (local folder)" "$(dt "$t")" "$(bytes "$OUT/fd0")"
t=$(now); as_pg "$PG_BIN/pg_dump" -Fd -j "$JOBS" -d bench -f "$OUT/fdz"; rec "pg_dump -Fd -j $JOBS (gzip, local folder)" "$(dt "$t")" "$(bytes "$OUT/fdz")"
REPO=$SCR/repo
t=$(now); BW backup create --kind logical --repo "file://$REPO" --pg "$URL" >"$SCR/c.out" 2>"$SCR/c.err"
rec 'bulwark logical --format custom (zstd)' "$(dt "$t")" "$(bytes "$REPO")"
before=$(bytes "$REPO")
t=$(now); BW backup create --kind logical --format directory --jobs "$JOBS" --repo "file://$REPO" --pg "$URL" >"$SCR/d.out" 2>"$SCR/d.err"
rec "bulwark logical --format directory --jobs $JOBS (zstd)" "$(dt "$t")" "$(( $(bytes "$REPO") - before ))"
PEAK=$(grep -o 'pg_dump -Fd.*dumped' "$SCR/d.err" || echo 'no temp line')
CID=$(grep -o 'backup [^ ]* complete' "$SCR/c.out" | cut -d' ' -f2)
DID=$(grep -o 'backup [^ ]* complete' "$SCR/d.out" | cut -d' ' -f2)
sync

# --- restores into new databases
t=$(now); "${PSQL[@]}" -d postgres -c 'create database r_fd'; as_pg "$PG_BIN/pg_restore" -j "$JOBS" -d r_fd "$OUT/fd0"; rec "pg_restore -j $JOBS (local -Fd folder)" "$(dt "$t")"
t=$(now); BW restore --backup "$CID" --database r_bc --jobs "$JOBS" --repo "file://$REPO" --pg "$ADMIN" >/dev/null 2>&1; rec "bulwark restore custom --jobs $JOBS" "$(dt "$t")"
t=$(now); BW restore --backup "$DID" --database r_bd --jobs "$JOBS" --repo "file://$REPO" --pg "$ADMIN" >/dev/null 2>&1; rec "bulwark restore directory --jobs $JOBS" "$(dt "$t")"
# the restored copies must hold what the source holds
for db in r_fd r_bc r_bd; do
  c=$("${PSQL[@]}" -d "$db" -c "select sum(abalance)::text || '/' || count(*) from (select abalance from pgbench_accounts union all select abalance from accounts_1) x")
  s=$("${PSQL[@]}" -d bench -c "select sum(abalance)::text || '/' || count(*) from (select abalance from pgbench_accounts union all select abalance from accounts_1) x")
  [ "$c" = "$s" ] || { echo "restore check FAILED for $db: $c vs $s" >&2; exit 1; }
done

ratio() { awk -v a="${T[$1]}" -v b="${T[$2]}" 'BEGIN{printf "%.2f", a/b}'; }
echo
echo "database bench: $(( DBSIZE / 1048576 )) MiB (pgbench scale $SCALE + $COPIES copies of pgbench_accounts); jobs $JOBS; $(nproc) cores"
printf '%-50s %8s %9s\n' step time_s out_MiB
for k in 'pg_dump -Fc -Z0 (local file)' "pg_dump -Fd -j $JOBS -Z0 (local folder)" "pg_dump -Fd -j $JOBS (gzip, local folder)" \
         'bulwark logical --format custom (zstd)' "bulwark logical --format directory --jobs $JOBS (zstd)" \
         "pg_restore -j $JOBS (local -Fd folder)" "bulwark restore custom --jobs $JOBS" "bulwark restore directory --jobs $JOBS"; do
  printf '%-50s %8s %9s\n' "$k" "${T[$k]}" "$(( ${S[$k]} / 1048576 ))"
done
echo "bulwark directory: $PEAK"
echo "ratios (< 1 = Bulwark faster):"
echo "  bulwark directory / pg_dump -Fd -j $JOBS -Z0 (uncompressed, local): $(ratio "bulwark logical --format directory --jobs $JOBS (zstd)" "pg_dump -Fd -j $JOBS -Z0 (local folder)")"
echo "  bulwark directory / pg_dump -Fd -j $JOBS (gzip, local):             $(ratio "bulwark logical --format directory --jobs $JOBS (zstd)" "pg_dump -Fd -j $JOBS (gzip, local folder)")"
echo "  bulwark directory / bulwark custom:                            $(ratio "bulwark logical --format directory --jobs $JOBS (zstd)" 'bulwark logical --format custom (zstd)')"
echo "  bulwark restore directory / pg_restore -j $JOBS (local folder):  $(ratio "bulwark restore directory --jobs $JOBS" "pg_restore -j $JOBS (local -Fd folder)")"
echo "  bulwark restore directory / bulwark restore custom:            $(ratio "bulwark restore directory --jobs $JOBS" "bulwark restore custom --jobs $JOBS")"
echo "restore check: row counts and sums of the restored copies equal the source"
