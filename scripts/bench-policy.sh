#!/bin/sh
# overlimit-policy against its peers on one workload, in one run: Debian's
# postfwd2 (rate(sasl_username/100/3600/...), control-examples/postfwd.cf)
# and a do-nothing server written for the benchmark (examples/policy-null.rs:
# the protocol, threads, and the same limit kept in memory only), each
# driven by the same load client (examples/policy-load.rs) over TCP on
# loopback; overlimit-policy also on a unix socket, as smtpd reaches the
# daemon in the recommended set-up.
#
#   sh scripts/bench-policy.sh                  5 rounds at 1, 16 and 64 connections
#   BENCH_ROUNDS=1 BENCH_CONNECTIONS=16 sh scripts/bench-policy.sh   a quick look
#
# Workload: CONNECTIONS connections x 1,000 RCPT requests, over 40 SASL
# users, limit 100 per user per hour (`:100/1h` for overlimit, counters in
# files under target/, on disk). Each run uses fresh user names, so every
# server starts from zero counts; every run's counts are checked: exactly
# min(requests for the user, 100) accepted per user, the rest refused, and
# for overlimit-policy one log line per refusal. The table quotes medians over
# the rounds, and ratios median over median.
#
# Targets: at 16 connections, overlimit-policy (TCP) >= 10x postfwd2's
# requests/s and p99 < 1 ms. The script exits 1 when a count is wrong or a
# target is missed. A benchmark, never part of `make test`; the raw lines
# are kept in target/bench/policy-runs.txt.
set -eu
cd "$(dirname "$0")/.."

ROUNDS=${BENCH_ROUNDS:-5}
CONNECTIONS=${BENCH_CONNECTIONS:-"1 16 64"}
REQUESTS=${BENCH_REQUESTS:-1000}
USERS=40
LIMIT=100
PORT=${BENCH_PORT:-18040}
OUT=${BENCH_OUT:-target/bench}

if ! command -v postfwd2 >/dev/null; then
  apt-get install -y postfwd >/dev/null
fi
cargo build --release --locked --quiet --bins --examples
BIN=$PWD/target/release
LOAD=$BIN/examples/policy-load

mkdir -p "$OUT"
# Counters on the disk the checkout is on, never a tmpfs.
WORK=$(mktemp -d "$PWD/$OUT/policy.XXXXXX")
chmod 755 "$WORK"
PIDS=""
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null || true; done
  if [ -f "$WORK/postfwd.pid" ]; then
    master=$(cat "$WORK/postfwd.pid")
    kill "$master" 2>/dev/null || true
    # Its 70 children leave after the master; wait for them, boundedly.
    tries=0
    while [ "$tries" -lt 100 ] && ps -eo pid,ppid | awk -v m="$master" '$1 == m || $2 == m { found = 1 } END { exit !found }'; do
      sleep 0.1
      tries=$((tries + 1))
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

mkdir "$WORK/counters"
echo ":$LIMIT/1h" >"$WORK/relaylimits"

NULL_AT=inet:127.0.0.1:$PORT
TCP_AT=inet:127.0.0.1:$((PORT + 1))
UNIX_AT=unix:$WORK/policy.sock
POSTFWD_AT=inet:127.0.0.1:$((PORT + 2))

"$BIN/examples/policy-null" "$NULL_AT" "$LIMIT" &
PIDS="$PIDS $!"
for at in "$TCP_AT" "$UNIX_AT"; do
  env -i RELAYLIMITS="$WORK/relaylimits" OVERLIMITDIR="$WORK/counters" \
    "$BIN/overlimit-policy" --listen "$at" 2>>"$WORK/overlimit-policy.log" &
  PIDS="$PIDS $!"
done
# Its cache daemon's socket must be named, or every rate stays at 1 and
# postfwd2 never limits; -c 0: no request cache; enough children for 64
# connections at once.
postfwd2 --file "$PWD/control-examples/postfwd.cf" \
  --server_socket "tcp:127.0.0.1:$((PORT + 2))" --cache_socket "tcp:127.0.0.1:$((PORT + 3))" \
  --user nobody --group nogroup --pidfile "$WORK/postfwd.pid" --perfmon --nodns -c 0 \
  --min_servers 70 --max_servers 80 --min_spare_servers 1 --max_spare_servers 79

# Waits until every server takes connections (a run of 0 requests).
for at in "$NULL_AT" "$TCP_AT" "$UNIX_AT" "$POSTFWD_AT"; do
  tries=0
  until "$LOAD" "$at" 1 0 1 probe >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || { echo "bench-policy: $at never listened" >&2; exit 1; }
    sleep 0.1
  done
done

# Accepted requests the workload must give: each user min(its share, LIMIT).
expected() {
  awk -v c="$1" -v k="$REQUESTS" -v u="$USERS" -v limit="$LIMIT" 'BEGIN {
    for (i = 0; i < c; i++) for (j = 0; j < k; j++) n[(i + j) % u]++
    for (x in n) a += (n[x] < limit ? n[x] : limit)
    print a + 0
  }'
}

RUNS=$OUT/policy-runs.txt
: >"$RUNS"
FAILED=0
round=1
while [ "$round" -le "$ROUNDS" ]; do
  for c in $CONNECTIONS; do
    want=$(expected "$c")
    for server in null overlimit-tcp overlimit-unix postfwd2; do
      case $server in
        null) at=$NULL_AT ;;
        overlimit-tcp) at=$TCP_AT ;;
        overlimit-unix) at=$UNIX_AT ;;
        postfwd2) at=$POSTFWD_AT ;;
      esac
      logged_before=$(wc -l <"$WORK/overlimit-policy.log")
      line=$("$LOAD" "$at" "$c" "$REQUESTS" "$USERS" "r$round-$server-$c")
      got=$(echo "$line" | sed 's/.*accepted=\([0-9]*\).*/\1/')
      refused=$(echo "$line" | sed 's/.*refused=\([0-9]*\).*/\1/')
      check=ok
      [ "$got" = "$want" ] || check="WRONG: $got accepted, $want expected"
      case $server in overlimit-*)
        logged=$(($(wc -l <"$WORK/overlimit-policy.log") - logged_before))
        [ "$logged" = "$refused" ] || check="WRONG: $logged log lines for $refused refusals" ;;
      esac
      [ "$check" = ok ] || FAILED=1
      echo "server=$server connections=$c round=$round $line check=$check" | tee -a "$RUNS"
    done
  done
  round=$((round + 1))
done

# The table: medians over the rounds, ratios median over median.
awk -v target_connections=16 '
  function field(name,   i, kv) {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
  }
  function median(list,   n, v, i, j, t) {
    n = split(list, v, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  {
    key = field("server") SUBSEP field("connections")
    rps[key] = rps[key] " " field("rps"); p50[key] = p50[key] " " field("p50_ms"); p99[key] = p99[key] " " field("p99_ms")
    if (!(field("connections") in seen)) { seen[field("connections")] = 1; order[++nc] = field("connections") }
  }
  END {
    split("overlimit-tcp overlimit-unix postfwd2 null", servers, " ")
    printf "\n| server | connections | requests/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|\n"
    for (i = 1; i <= nc; i++) for (s = 1; s <= 4; s++) {
      key = servers[s] SUBSEP order[i]
      printf "| %s | %s | %.0f | %.3f | %.3f |\n", servers[s], order[i], median(rps[key]), median(p50[key]), median(p99[key])
    }
    printf "\n| connections | overlimit / postfwd2 | overlimit / do-nothing |\n|---:|---:|---:|\n"
    for (i = 1; i <= nc; i++) {
      ol = median(rps["overlimit-tcp" SUBSEP order[i]])
      printf "| %s | %.1fx | %.0f%% |\n", order[i], ol / median(rps["postfwd2" SUBSEP order[i]]), 100 * ol / median(rps["null" SUBSEP order[i]])
      if (order[i] == target_connections) {
        ratio = ol / median(rps["postfwd2" SUBSEP order[i]]); tail = median(p99["overlimit-tcp" SUBSEP order[i]])
        verdict = (ratio >= 10 && tail < 1) ? "met" : "MISSED"
        target = sprintf("targets at %s connections (>= 10x postfwd2, p99 < 1 ms): %.1fx, p99 %.3f ms: %s", order[i], ratio, tail, verdict)
        if (verdict != "met") missed = 1
      }
    }
    if (target != "") printf "\n%s\n", target
    exit missed
  }' "$RUNS" || FAILED=1

[ "$FAILED" = 0 ] || { echo "bench-policy: a count was wrong or a target missed (see above)" >&2; exit 1; }
