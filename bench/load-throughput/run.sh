#!/usr/bin/env bash
# bench/load-throughput: requests/s per core of `bulwark load` beside autocannon and wrk, in the same
# run, against the same target; then memory of 10,000 thinking VUs.
#
# Target: nginx, one worker pinned to TARGET_CPU, answering a 200-byte JSON body from memory.
# Generators: pinned to GEN_CPU, keep-alive, no pipelining, CONNS connections (50 VUs for bulwark:
# one connection each, no think time, one GET per iteration), DURATION seconds, RUNS rounds with the
# tools interleaved so drift hits all of them alike. Peak RSS from /usr/bin/time.
#
#   bash bench/load-throughput/run.sh                 # defaults: 10 s, 50 conns, 3 rounds, 1000-conn round, 10k VUs
#   RUNS=1 DURATION=5 bash bench/load-throughput/run.sh
# Needs: nginx (nginx-light), wrk, /usr/bin/time (Debian `time`), taskset; autocannon comes from npm
# into a temp folder. Every process it starts is bounded and stopped by PID.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
RUNS=${RUNS:-3}
BIG_CONNS=${BIG_CONNS:-1000}
IDLE_VUS=${IDLE_VUS:-10000}
TARGET_CPU=${TARGET_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
INSTALL=${INSTALL:-1}

if [[ $INSTALL == 1 ]]; then
  missing=()
  for p in nginx-light wrk time; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
  if ((${#missing[@]})); then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; fi
fi
(cd "$ROOT" && bash scripts/bootstrap.sh)
BULWARK="$ROOT/dist/cli/main.js"
chmod +x "$BULWARK"

WORK=$(mktemp -d /tmp/bulwark-bench-load.XXXXXX)
NGINX_PID=""
cleanup() {
  [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ ! -f $WORK/npm/node_modules/autocannon/autocannon.js ]]; then
  mkdir -p "$WORK/npm" && (cd "$WORK/npm" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error autocannon@8 >/dev/null)
fi
AUTOCANNON="$WORK/npm/node_modules/autocannon/autocannon.js"

PORT=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
mkdir -p "$WORK/nginx/tmp_body"
sed "s#@PREFIX@#$WORK/nginx#g; s#@PORT@#$PORT#g" "$HERE/nginx.conf.tmpl" >"$WORK/nginx/nginx.conf"
taskset -c "$TARGET_CPU" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/api/products" >/dev/null && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT/api/products"
BASE="http://127.0.0.1:$PORT"

RESULTS="$WORK/results.txt"
: >"$RESULTS"
# measure NAME CONNS -- command...: runs it pinned, bounded, records "name conns rps rss_mb".
measure() {
  local name=$1 conns=$2
  shift 3
  local out="$WORK/out.txt"
  rm -f "$WORK/summary.json"
  timeout $((DURATION + 60)) taskset -c "$GEN_CPU" /usr/bin/time -f 'MAXRSS_KB %M CPU_S %U %S' "$@" >"$out" 2>&1 || true
  local rps total rss cpu
  case $name in
    wrk)
      rps=$(awk '/Requests\/sec/ {print $2}' "$out")
      total=$(awk '/requests in/ {print $1}' "$out") ;;
    autocannon)
      read -r rps total < <(node -e "const o=require('fs').readFileSync('$out','utf8');const j=JSON.parse(o.slice(o.indexOf('{'),o.lastIndexOf('}')+1));console.log(j.requests.total/j.duration, j.requests.total)") ;;
    bulwark)
      read -r rps total < <(node -e "const s=require('$WORK/summary.json');console.log(s.totals.rps, s.totals.requests)") ;;
  esac
  rss=$(awk '/MAXRSS_KB/ {printf "%.0f", $2/1024}' "$out")
  cpu=$(awk '/CPU_S/ {print $4 + $5}' "$out")
  # req/cpu-s: requests per second of generator CPU, the figure least bent by other work on the machine.
  local per_cpu
  per_cpu=$(node -e "console.log(Math.round(${total:-0} / Math.max(${cpu:-0}, 0.01)))")
  echo "$name $conns ${rps:-0} ${rss:-0} ${per_cpu}" | tee -a "$RESULTS"
}

run_round() {
  local conns=$1
  measure wrk "$conns" -- wrk -t1 -c"$conns" -d"${DURATION}s" "$URL"
  measure autocannon "$conns" -- node "$AUTOCANNON" -c "$conns" -d "$DURATION" -p 1 -j "$URL"
  measure bulwark "$conns" -- "$BULWARK" load "$HERE/get.ts" --host "$BASE" -u "$conns" -d "${DURATION}s" --quiet --no-typecheck --summary-json "$WORK/summary.json"
}

echo "# tool conns rps rss_mb req/cpu-s   (nginx on CPU $TARGET_CPU, generators on CPU $GEN_CPU, ${DURATION}s runs)"
for _ in $(seq "$RUNS"); do run_round "$CONNS"; done
[[ $BIG_CONNS -gt 0 ]] && run_round "$BIG_CONNS"

if [[ $IDLE_VUS -gt 0 ]]; then
  # Thinking VUs: ramp at 2000/s (a real crowd arrives over time), hold, and read the peak RSS.
  measure bulwark "idle$IDLE_VUS" -- "$BULWARK" load "$HERE/idle.ts" --host "$BASE" -u "$IDLE_VUS" -r 2000 -d 25s --quiet --no-typecheck --summary-json "$WORK/summary.json"
fi

node - "$RESULTS" "$CONNS" "$BIG_CONNS" "$IDLE_VUS" <<'JS'
const [file, conns, big, idle] = process.argv.slice(2);
const rows = require('fs').readFileSync(file, 'utf8').trim().split('\n').map((l) => l.split(' '));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : 0; };
const pick = (tool, c, col) => median(rows.filter((r) => r[0] === tool && r[1] === String(c)).map((r) => Number(r[col])));
console.log(`\nSummary (medians)`);
for (const c of [conns, big].filter((c) => Number(c) > 0)) {
  const w = pick('wrk', c, 2), a = pick('autocannon', c, 2), b = pick('bulwark', c, 2);
  const wc = pick('wrk', c, 4), ac = pick('autocannon', c, 4), bc = pick('bulwark', c, 4);
  console.log(`${c} connections: req/s wrk ${w.toFixed(0)}, autocannon ${a.toFixed(0)}, bulwark ${b.toFixed(0)} | bulwark/autocannon ${(b / a).toFixed(2)}, bulwark/wrk ${(b / w).toFixed(2)}`);
  console.log(`${' '.repeat(String(c).length)}  req/cpu-s wrk ${wc}, autocannon ${ac}, bulwark ${bc} | bulwark/autocannon ${(bc / ac).toFixed(2)} | peak RSS MB wrk ${pick('wrk', c, 3)}, autocannon ${pick('autocannon', c, 3)}, bulwark ${pick('bulwark', c, 3)}`);
}
if (Number(idle) > 0) console.log(`${idle} VUs thinking between(1, 3): bulwark peak RSS ${pick('bulwark', 'idle' + idle, 3)} MB`);
JS
