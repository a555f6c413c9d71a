# Shared by bench/backup/run.sh and incremental.sh (sourced, not run): a scratch folder that is always
# removed, a watchdog, timing helpers, and one pgbench primary whose WAL both Bulwark and pgBackRest
# archive. The caller sets `set -Eeuo pipefail`, SCALE, JOBS, MAX_SECONDS, STEP_TIMEOUT, KEEP first.

BENCH_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_LIB_DIR/../.." && pwd)
BULWARK=${BULWARK:-"$ROOT/dist/cli/main.js"}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGBACKREST=${PGBACKREST:-$(command -v pgbackrest || true)}
NODE=$(command -v node)
[ -x "$PG_BIN/postgres" ] || { echo "no postgres in PG_BIN=$PG_BIN" >&2; exit 1; }
[ -f "$BULWARK" ] || { echo "build first: npm run build ($BULWARK missing)" >&2; exit 1; }

# bench_scratch NAME: $SCR (postgres may write into it), as_pg, STARTED servers stopped and pushers
# ended on exit, a watchdog that ends the run after MAX_SECONDS.
bench_scratch() {
  SCR=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-bench-$1.XXXXXX")
  chmod 755 "$SCR"
  if [ "$(id -u)" = 0 ]; then chown postgres "$SCR"; AS_PG=(runuser -u postgres --); else AS_PG=(); fi
  DATA=$SCR/data; SOCK=$SCR; RES=$SCR/results.tsv; : > "$RES"
  STARTED=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  # its sleep must not hold our stdout open (a `| tee` would wait for it)
  ( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep "$MAX_SECONDS" & sp=$!; wait $sp; kill -TERM $$ ) </dev/null >/dev/null 2>&1 & WATCHDOG=$!
}
bench_cleanup() {
  local rc=$?; set +e
  for d in "${STARTED[@]}"; do [ -f "$d/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1; done
  [ -n "${WATCHDOG:-}" ] && kill "$WATCHDOG" 2>/dev/null
  pkill_pushers
  if [ "$KEEP" = 1 ]; then echo "kept $SCR" >&2; else rm -rf "$SCR"; fi
  exit $rc
}
pkill_pushers() { for f in "$SCR"/spool*/pusher.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; return 0; }
as_pg() { timeout "$STEP_TIMEOUT" "${AS_PG[@]}" "$@"; }

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
# bytes under the paths (0 for a path that does not exist yet)
bytes() { { du -sb "$@" 2>/dev/null || true; } | awk '{s+=$1} END{print s+0}'; }
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
BR() { as_pg "$PGBACKREST" --config="$CONF" --stanza=bench "$@"; }

# bench_primary [pgbackrest.conf lines...]: the primary on $PORT, database `bench` = pgbench -i -s
# $SCALE, archive_command = Bulwark's async line, then pgBackRest's archive-push when installed
# (so both tools can replay the same WAL); BREPO, PREPO, CONF, DBSIZE.
bench_primary() {
  PORT=$(free_port)
  BREPO=$SCR/bulwark-repo; PREPO=$SCR/pgbr-repo
  as_pg mkdir -p "$BREPO" "$PREPO" "$SCR/pgbr-log" "$SCR/pgbr-lock" "$SCR/spool"
  CONF=$SCR/pgbackrest.conf
  {
    printf '[global]\nrepo1-path=%s\nlog-path=%s\nlock-path=%s\nprocess-max=%s\nstart-fast=y\nlog-level-console=warn\n' \
      "$PREPO" "$SCR/pgbr-log" "$SCR/pgbr-lock" "$JOBS"
    for line in "$@"; do printf '%s\n' "$line"; done
    printf '[bench]\npg1-path=%s\npg1-port=%s\npg1-socket-path=%s\n' "$DATA" "$PORT" "$SOCK"
  } > "$CONF"
  chmod 644 "$CONF"
  log "initdb + pgbench -i -s $SCALE"
  as_pg "$PG_BIN/initdb" -D "$DATA" -A trust -U postgres --data-checksums >/dev/null
  local arch
  arch=$(BW wal archive-command --async --spool "$SCR/spool" --repo "file://$BREPO" | sed "s/^archive_command = '//; s/'\$//; s/''/'/g")
  [ -n "$PGBACKREST" ] && arch="$arch && $PGBACKREST --config=$CONF --stanza=bench archive-push \"%p\""
  cat >> "$DATA/postgresql.conf" <<EOC
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
shared_buffers = 1GB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_level = replica
archive_mode = on
archive_command = '$(printf '%s' "$arch" | sed "s/'/''/g")'
EOC
  STARTED+=("$DATA")
  as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$SCR/primary.log" -w start >/dev/null
  as_pg "$PG_BIN/createdb" -h "$SOCK" -p "$PORT" -U postgres bench
  as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -i -s "$SCALE" -q bench 2>/dev/null
  DBSIZE=$(Q "select pg_database_size('bench')")
  if [ -n "$PGBACKREST" ]; then BR stanza-create >/dev/null; BR check >/dev/null; fi
  Q "checkpoint"; sync
}
