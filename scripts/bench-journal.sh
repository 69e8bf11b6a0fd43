#!/bin/sh
# The journal's cost to the plug-in, side by side (issue 13): the plug-in of
# two builds on a normal recipient (no episode edge: the journal is never
# touched), and one build on a recipient that starts an episode (one journal
# line) against one refused inside an episode (no line). Medians and their
# ratios, from hyperfine -N in one run per pair so both see the same load.
#
#   sh scripts/bench-journal.sh OLD_PLUGIN NEW_PLUGIN
set -eu
OLD=$1 NEW=$2
RUNS=${BENCH_RUNS:-1000}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/overlimit-bench-journal.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
mkdir "$TMP/dir"
printf 'a@example.com:1000000/1h\nb@example.com:5\n' >"$TMP/relaylimits"
export RELAYLIMITS="$TMP/relaylimits" OVERLIMITDIR="$TMP/dir" RELAYCLIENT= \
  TCPREMOTEIP=192.0.2.1 RECIPIENT=x@remote.example

median() { jq -r ".results[$1].median" "$TMP/out.json"; }

# b@example.com at its limit of 5, not yet reported: the next recipient is
# refused and starts an episode (one journal line); reported: refused, no line.
SMTPAUTHUSER=b@example.com "$NEW" || true
for i in 1 2 3 4; do SMTPAUTHUSER=b@example.com "$NEW" || true; done
cp "$TMP/dir/b@example.com" "$TMP/at-limit"
SMTPAUTHUSER=b@example.com "$NEW" || true
cp "$TMP/dir/b@example.com" "$TMP/notified"

SMTPAUTHUSER=a@example.com hyperfine -N -w 100 -r "$RUNS" -i --export-json "$TMP/out.json" \
  -n old "$OLD" -n new "$NEW" >/dev/null
o=$(median 0) n=$(median 1)
echo "normal recipient: old $o s, new $n s, new/old $(echo "$n / $o" | bc -l | cut -c1-5)"

SMTPAUTHUSER=b@example.com hyperfine -N -w 100 -r "$RUNS" -i --export-json "$TMP/out.json" \
  --prepare "cp $TMP/notified $TMP/dir/b@example.com" -n refused "$NEW" \
  --prepare "cp $TMP/at-limit $TMP/dir/b@example.com" -n episode "$NEW" >/dev/null
r=$(median 0) e=$(median 1)
echo "refusal in an episode: $r s, refusal starting one (journal line): $e s, ratio $(echo "$e / $r" | bc -l | cut -c1-5)"
echo "journal lines written: $(wc -l <"$TMP/dir/.journal")"
