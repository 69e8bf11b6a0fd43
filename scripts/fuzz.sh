#!/bin/sh
# The long run of the parser and reader checks, by hand (`make fuzz`); the
# short run is part of `cargo test` (tests/properties.rs and
# tests/window_model.rs, default case count).
#
#   sh scripts/fuzz.sh            60 s per fuzz target, 20,000 cases per property
#   sh scripts/fuzz.sh 600        10 minutes per target
#   FUZZ_CASES=200000 sh scripts/fuzz.sh
#
# 1. libFuzzer through cargo-fuzz on fuzz/ (targets control_line,
#    counter_file, cdb_file), with AddressSanitizer and debug assertions.
#    cargo-fuzz wants a nightly toolchain for its -Z flags; the stable one
#    accepts them with RUSTC_BOOTSTRAP=1, which is set here for these builds
#    only. cargo-fuzz is installed from crates.io when missing; without it,
#    this step is skipped with a note.
# 2. The property tests of tests/properties.rs, and the window against its
#    exact model (tests/window_model.rs), with FUZZ_CASES cases each, in a
#    release build.
#
# A crash stops the script; libFuzzer leaves the input in
# fuzz/artifacts/TARGET/. Turn it into a regression test in
# tests/properties.rs (a plain #[test] with the bytes) before fixing it.
set -eu
cd "$(dirname "$0")/.."

SECONDS_PER=${1:-${FUZZ_SECONDS:-60}}
CASES=${FUZZ_CASES:-20000}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked || true
fi

if cargo fuzz --version >/dev/null 2>&1; then
  # A few real inputs to start from (the corpus itself is not kept in git).
  mkdir -p fuzz/corpus/control_line fuzz/corpus/counter_file fuzz/corpus/cdb_file
  n=0
  for line in ':1000' '1.2.3.4:3000' 'test@example.com:0' '2001:db8::25:500' \
    'web1@example.com: 50/5m, 100/30m, 200/1h # seed 001' '*@example.com:200,1000/1d' \
    '@example.com:5000/1d' '192.0.2.0/24:30/1h' '2001:db8::/48:800' \
    '::ffff:10.0.0.0/104:5'; do
    n=$((n + 1))
    printf '%s\r\n' "$line" >"fuzz/corpus/control_line/seed$n"
  done
  printf 'overlimit 1\nclient a@example.com\ntotal 7\nrefused 2 1700000000\nnotified 0\nwindow 3600 28333333 0 1 0 2\nend 00000000\n' \
    >fuzz/corpus/counter_file/seed1
  printf 'XXXXXXX' >fuzz/corpus/counter_file/seed2
  for t in control_line counter_file cdb_file; do
    echo "== cargo fuzz run $t for $SECONDS_PER s"
    mkdir -p fuzz/target
    log=fuzz/target/last-run-$t.log
    if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O -a "$t" -- \
      -max_total_time="$SECONDS_PER" -print_final_stats=1) >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/" >&2
      exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$log"
  done
else
  echo "cargo-fuzz unavailable: the property tests below are the long run"
fi

echo "== property tests and the window model, $CASES cases each"
PROPTEST_CASES=$CASES cargo test --release --locked --test properties --test window_model
