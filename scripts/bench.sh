#!/bin/sh
# The plug-in's cost per recipient against the floor: a static C program that
# does nothing. qmail-smtpd forks and execs the plug-in once per RCPT TO, so
# what matters is the whole run of a process, start-up included.
#
#   sh scripts/bench.sh              3 rounds, 2000 runs per command
#   BENCH_ROUNDS=1 BENCH_RUNS=300 sh scripts/bench.sh   a quick look
#
# Control files of 10, 10,000 and 1,000,000 lines (users, windows, addresses,
# ranges, IPv6, domain lines, comments) are generated in a temporary
# directory; the client measured has its own line at the end, limits far out
# of reach, so every call counts the recipient and exits 112, as in a normal
# session. Each case is timed with hyperfine -N (no shell) in the same run as
# the floor, so the two see the same load; the ratio is median over median.
# The environment qmail-smtpd would give the plug-in is the environment of
# hyperfine itself (`env -i ... hyperfine`), which its commands inherit: a
# wrapper to set it would add its own cost to every run. Peak memory is the
# maximum resident set size GNU time reports for the plug-in alone.
#
# With redis-server installed, the 10-line case runs again with the counters
# in Redis (OVERLIMIT_REDIS), on a unix socket and on TCP loopback, against a
# private server the script starts in its temporary directory; and beside
# them the floor of any Redis client, a static C program that connects to
# the socket, sends one PING and reads the answer (case `redis-ping`): the
# plug-in needs two round trips (read under WATCH, then MULTI/EXEC).
#
# Targets: ratio <= 1.15 at 10 lines, <= 1.3 at 1,000,000 lines (cdb) and
# with Redis on a unix socket; peak
# memory under 4 MiB at every size; every case works under
# `softlimit -m 2000000`; the script exits 1 when one is missed
# (by the average of the rounds). A benchmark, never part of `make test`;
# the raw hyperfine JSON is kept in target/bench/.
set -eu
cd "$(dirname "$0")/.."

ROUNDS=${BENCH_ROUNDS:-3}
BATCHES=${BENCH_BATCHES:-10}
RUNS=${BENCH_RUNS:-2000}
WARMUP=${BENCH_WARMUP:-200}
OUT=${BENCH_OUT:-target/bench}

if ! command -v hyperfine >/dev/null || ! command -v jq >/dev/null || [ ! -x /usr/bin/time ]; then
  apt-get install -y hyperfine jq time >/dev/null
fi

cargo build --release --locked --quiet
BIN=$PWD/target/release
PLUGIN=$BIN/rcptcheck-overlimit

TMP=$(mktemp -d "${TMPDIR:-/tmp}/overlimit-bench.XXXXXX")
REDIS_PID=
trap '[ -z "$REDIS_PID" ] || { kill "$REDIS_PID"; wait "$REDIS_PID"; }; rm -rf "$TMP"' EXIT INT TERM
mkdir -p "$OUT"

# The floor: exec, start, exit, and nothing else.
printf 'int main(void) { return 0; }\n' >"$TMP/floor.c"
gcc -O2 -static -o "$TMP/floor" "$TMP/floor.c"
FLOOR=$TMP/floor

# A control file of $1 lines, the measured client's line last.
generate() {
  awk -v n="$1" 'BEGIN {
    print "# relaylimits for the benchmark, " n " lines"
    print ":1000"
    for (i = 3; i < n; i++) {
      r = i % 100; d = i % 5000
      if (r < 60)      printf "user%d@domain%d.example:%d\n", i, d, 100 + i % 900
      else if (r < 72) printf "web%d@domain%d.example: 50/5m, 100/30m, 200/1h\n", i, d
      else if (r < 84) printf "%d.%d.%d.%d:3000\n", 10 + int(i / 16777216) % 200, int(i / 65536) % 256, int(i / 256) % 256, i % 256
      else if (r < 88) printf "172.%d.%d.0/24:500/1h\n", 16 + int(i / 256) % 16, i % 256
      else if (r < 90) printf "10.%d.0.0/16:2000\n", i % 256
      else if (r < 93) printf "2001:db8:%x::%x:500\n", int(i / 65536) % 65536, i % 65536
      else if (r < 94) printf "2001:db8:%x::/48:800\n", i % 65536
      else if (r < 96) printf "*@domain%d.example:200,1000/1d\n", i
      else if (r < 98) printf "@domain%d.example:5000/1d\n", i
      else             printf "# customer %d moved to the new plan\n", i
    }
    print "bench@bench.example:1000000000,1000000000/1h"
  }'
}

# measure CASE: times floor and plug-in for CASE, in $BATCHES hyperfine runs
# that alternate between the two, so a change in the machine's load (it is
# shared) falls on both; prints "floor_median plugin_median peak_kib", the
# medians over all runs of all batches, in seconds.
measure() {
  dir=$TMP/$1
  program=$PLUGIN
  [ ! -f "$dir/program" ] || program=$(cat "$dir/program")
  set -- env -i RELAYCLIENT= SMTPAUTHUSER=bench@bench.example \
    TCPREMOTEIP=192.0.2.10 RECIPIENT=someone@remote.example \
    RELAYLIMITS="$dir/relaylimits" OVERLIMITDIR="$dir/overlimit"
  if [ -f "$dir/redis-url" ]; then
    set -- "$@" OVERLIMIT_REDIS="$(cat "$dir/redis-url")"
  fi
  b=1
  while [ "$b" -le "$BATCHES" ]; do
    "$@" hyperfine -N -i --style none --warmup "$((WARMUP / BATCHES + 1))" \
      --runs "$((RUNS / BATCHES))" --export-json "$dir/batch$b.json" \
      "$FLOOR" "$program" >/dev/null 2>&1
    b=$((b + 1))
  done
  medians=$(jq -rs '. as $all | [0, 1] | map(. as $i
    | [$all[].results[$i].times[]] | sort | .[length / 2 | floor]) | @tsv' \
    "$dir"/batch*.json)
  jq -s '.' "$dir"/batch*.json >"$OUT/${dir##*/}-round$round.json"
  rm -f "$dir"/batch*.json
  peak=0
  for _ in 1 2 3 4 5; do
    kib=$("$@" /usr/bin/time -f %M "$program" 2>&1 >/dev/null | tail -n 1)
    [ "$kib" -gt "$peak" ] && peak=$kib
  done
  echo "$medians $peak"
}

# The cases: name, lines, format. 1,000,000 lines as text is shown for
# comparison only (fewer runs: one call reads the whole file).
CASES="10-text:10:text 10000-text:10000:text 10000-cdb:10000:cdb 1000000-cdb:1000000:cdb"

# The Redis cases: the 10-line control file, a server of the script's own.
if command -v redis-server >/dev/null; then
  port=$((20000 + $$ % 20000))
  printf 'port %s\nbind 127.0.0.1\nunixsocket %s\nunixsocketperm 700\ndir %s\nsave ""\nappendonly no\nlogfile %s\n' \
    "$port" "$TMP/redis.sock" "$TMP" "$TMP/redis.log" >"$TMP/redis.conf"
  redis-server "$TMP/redis.conf" &
  REDIS_PID=$!
  for _ in $(seq 50); do [ -S "$TMP/redis.sock" ] && break; sleep 0.1; done
  for c in redisunix:unix://$TMP/redis.sock redistcp:redis://127.0.0.1:$port/0; do
    mkdir -p "$TMP/10-${c%%:*}/overlimit"
    echo "${c#*:}" >"$TMP/10-${c%%:*}/redis-url"
  done
  cat >"$TMP/ping.c" <<EOF
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(void) {
  struct sockaddr_un a = { .sun_family = AF_UNIX, .sun_path = "$TMP/redis.sock" };
  char reply[64];
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) return 1;
  if (write(s, "PING\\r\\n", 6) != 6) return 1;
  return read(s, reply, sizeof reply) == 7 && memcmp(reply, "+PONG", 5) == 0 ? 0 : 1;
}
EOF
  gcc -O2 -static -o "$TMP/ping" "$TMP/ping.c"
  mkdir -p "$TMP/redis-ping/overlimit"
  echo "$TMP/ping" >"$TMP/redis-ping/program"
  "$TMP/ping" || { echo "the PING client failed against the private server"; exit 1; }
  CASES="$CASES 10-redisunix:10:text 10-redistcp:10:text redis-ping:10:text"
else
  echo "redis-server not installed: the Redis cases are left out"
fi

echo "generating control files and compiling the large ones"
for n in 10 10000 1000000; do
  generate "$n" >"$TMP/$n.txt"
done
for c in $CASES; do
  name=${c%%:*}; rest=${c#*:}; n=${rest%%:*}; format=${rest#*:}
  mkdir -p "$TMP/$name/overlimit"
  cp "$TMP/$n.txt" "$TMP/$name/relaylimits"
  if [ "$format" = cdb ]; then
    start=$(date +%s.%N)
    RELAYLIMITS=$TMP/$name/relaylimits "$BIN/overlimit" compile >/dev/null
    end=$(date +%s.%N)
    peak=$(RELAYLIMITS=$TMP/$name/relaylimits /usr/bin/time -f %M "$BIN/overlimit" compile 2>&1 >/dev/null | tail -n 1)
    printf '  overlimit compile, %s lines: %.2f s, %s KiB peak\n' "$n" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$peak"
  fi
done

: >"$TMP/results"
round=1
while [ "$round" -le "$ROUNDS" ]; do
  echo "round $round of $ROUNDS"
  for c in $CASES; do
    name=${c%%:*}
    echo "$name $(measure "$name")" >>"$TMP/results"
  done
  round=$((round + 1))
done

# The 1,000,000-line text, once, for comparison: what the cdb saves.
mkdir -p "$TMP/1000000-text/overlimit"
cp "$TMP/1000000.txt" "$TMP/1000000-text/relaylimits"
round=text
text_row=$(RUNS=20 WARMUP=2 BATCHES=2 measure 1000000-text)

# Under the memory cap run scripts set (`softlimit -m 2000000`: address
# space, data and stack), each case must still count and exit 112.
capped="softlimit -m 2000000:"
for c in $CASES 1000000-text; do
  dir=$TMP/${c%%:*}
  [ ! -f "$dir/program" ] || continue
  code=0
  redis=
  [ ! -f "$dir/redis-url" ] || redis=$(cat "$dir/redis-url")
  env -i RELAYCLIENT= SMTPAUTHUSER=bench@bench.example RECIPIENT=someone@remote.example \
    RELAYLIMITS="$dir/relaylimits" OVERLIMITDIR="$dir/overlimit" ${redis:+OVERLIMIT_REDIS=$redis} \
    prlimit --as=2000000 --data=2000000 --stack=2000000 "$PLUGIN" 2>/dev/null || code=$?
  if [ "$code" -eq 112 ]; then
    capped="$capped ${c%%:*} ok"
  else
    capped="$capped ${c%%:*} FAILED (exit $code)"
    cap_failed=1
  fi
done

echo
echo "$capped"
awk -v rounds="$ROUNDS" -v text_row="$text_row" '
  function target(name) {
    if (name == "10-text") return 1.15
    if (name == "1000000-cdb") return 1.3
    if (name == "10-redisunix") return 1.3
    return 0
  }
  {
    name = $1; f = $2 * 1000; p = $3 * 1000; r = $3 / $2
    if (!(name in seen)) { order[++n] = name; seen[name] = 1; min[name] = r; max[name] = r; peak[name] = 0 }
    fs[name] += f; ps[name] += p
    if (r < min[name]) min[name] = r
    if (r > max[name]) max[name] = r
    if ($4 > peak[name]) peak[name] = $4
    ratios[name] = ratios[name] " " sprintf("%.3f", r)
  }
  END {
    printf "%-9s %-6s %11s %12s %7s %13s %10s  %s\n", "lines", "format", "floor ms", "plug-in ms", "ratio", "min..max", "peak KiB", "target"
    ok = 1
    for (i = 1; i <= n; i++) {
      name = order[i]; split(name, part, "-")
      f = fs[name] / rounds; p = ps[name] / rounds; r = p / f
      t = target(name)
      verdict = ""
      if (t > 0) { verdict = sprintf("ratio <= %.2f: %s", t, (max[name] <= t ? "met" : (r <= t ? "met on average" : "MISSED"))); if (r > t) ok = 0 }
      mem = (peak[name] < 4096 ? "" : " MEMORY OVER 4 MiB"); if (peak[name] >= 4096) ok = 0
      printf "%-9s %-6s %11.3f %12.3f %7.3f %6.3f..%-6.3f %10d  %s%s\n", part[1], part[2], f, p, r, min[name], max[name], peak[name], verdict, mem
    }
    if (("10-redisunix" in seen) && ("redis-ping" in seen))
      printf "\nRedis on a unix socket: the plug-in costs %.3fx a client that only connects and sends one PING\n", ps["10-redisunix"] / ps["redis-ping"]
    split(text_row, t3, " ")
    printf "%-9s %-6s %11.3f %12.3f %7.3f %13s %10d  (for comparison, 20 runs)\n", "1000000", "text", t3[1] * 1000, t3[2] * 1000, t3[2] / t3[1], "", t3[3]
    printf "\nmedians averaged over %d round(s); min..max: the ratio in each round\n", rounds
    exit(ok ? 0 : 1)
  }' "$TMP/results" && [ -z "${cap_failed:-}" ]
