#!/bin/sh
# The package's test, for a fresh CI machine as root (.ci/run runs it; it
# installs and removes a package, so it is not part of `make test`):
# build it, check its contents and lintian, install it with dpkg -i, check
# what postinst set up, run the demo and the plug-in against the installed
# programs, parse `overlimit metrics` with a Prometheus parser, remove it
# (counters and account stay), purge it (the host as it was).
set -eu
cd "$(dirname "$0")/.."
fail() { echo "package test: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"
dpkg -s overlimit >/dev/null 2>&1 && fail "overlimit is installed already; not touching it"
had_account=$(getent passwd overlimit >/dev/null && echo yes || echo no)

deb=$(make -s deb | tail -1)
[ -f "$deb" ] || fail "make deb made no package"
contents=$(dpkg-deb -c "$deb")
for p in $(sed -n 's/^PROGRAMS *= *//p' Makefile); do
  echo "$contents" | grep -q " ./var/qmail/bin/$p\$" || fail "$p is not in the package"
done
for m in man/*.[78]; do
  echo "$contents" | grep -q " ./usr/share/man/man${m##*.}/$(basename "$m").gz\$" || fail "$m is not in the package"
done
for f in control-examples/*; do
  echo "$contents" | grep -q " ./usr/share/doc/overlimit/examples/$(basename "$f")\$" || fail "$f is not in the package"
done
for u in overlimit-policy.service overlimit-sweep.service overlimit-sweep.timer; do
  echo "$contents" | grep -q " ./lib/systemd/system/$u\$" || fail "$u is not in the package"
done
if command -v lintian >/dev/null; then
  # The maintainer address is a placeholder until the project has one.
  lintian --fail-on error,warning --suppress-tags bogus-mail-host,bogus-mail-host-in-debian-changelog "$deb" ||
    fail "lintian findings"
elif [ "${CI:-}" = true ]; then
  fail "no lintian (apt-get install lintian)"
else
  echo "skipped: lintian (not installed)" >&2
fi

dpkg -i "$deb" >/dev/null
mode() { stat -c '%U:%G %a' "$1"; }
[ "$(mode /var/qmail/overlimit)" = "overlimit:overlimit 2770" ] || fail "counter directory: $(mode /var/qmail/overlimit)"
[ "$(mode /var/qmail/bin/overlimit-count)" = "overlimit:overlimit 6755" ] || fail "overlimit-count: $(mode /var/qmail/bin/overlimit-count)"
[ "$(mode /var/qmail/bin/qmail-queue-overlimit)" = "root:overlimit 2711" ] || fail "qmail-queue-overlimit: $(mode /var/qmail/bin/qmail-queue-overlimit)"
[ "$(mode /var/qmail/control/overlimit-uncounted)" = "root:root 644" ] || fail "overlimit-uncounted: $(mode /var/qmail/control/overlimit-uncounted)"
[ "$(getent passwd overlimit | cut -d: -f6,7)" = /nonexistent:/usr/sbin/nologin ] || fail "account overlimit: $(getent passwd overlimit)"
# Configuring again changes nothing (postinst is idempotent).
dpkg-reconfigure overlimit >/dev/null 2>&1 || dpkg --configure -a >/dev/null
[ "$(mode /var/qmail/bin/overlimit-count)" = "overlimit:overlimit 6755" ] || fail "overlimit-count after reconfigure"

sh scripts/demo.sh /var/qmail/bin >/dev/null || fail "the demo against /var/qmail/bin"
# The installed plug-in on its built-in paths, as qmail-smtpd runs it.
printf ':1\n' >/var/qmail/control/relaylimits
plugin() { set +e; env -i RELAYCLIENT= TCPREMOTEIP=192.0.2.1 /var/qmail/bin/rcptcheck-overlimit 2>/dev/null; echo $?; set -e; }
[ "$(plugin)" = 112 ] && [ "$(plugin)" = 113 ] || fail "installed plug-in: not 112 then 113"
/var/qmail/bin/overlimit metrics >/tmp/overlimit-package-metrics.$$
/usr/bin/python3 - /tmp/overlimit-package-metrics.$$ <<'PY' || fail "overlimit metrics: not what a Prometheus parser reads"
import sys
from prometheus_client.parser import text_string_to_metric_families
samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_string_to_metric_families(open(sys.argv[1]).read()) for s in f.samples}
assert samples[("overlimit_over_limit", (("kind", "address"),))] == 1, samples
assert samples[("overlimit_client_refused", (("client", "192.0.2.1"), ("kind", "address")))] == 1, samples
PY
rm -f /tmp/overlimit-package-metrics.$$
man -w overlimit >/dev/null 2>&1 || [ -f /usr/share/man/man8/overlimit.8.gz ] || fail "no man page"

dpkg -r overlimit >/dev/null
[ ! -e /var/qmail/bin/overlimit ] || fail "dpkg -r left the programs"
[ -f /var/qmail/overlimit/192.0.2.1 ] || fail "dpkg -r removed the counters"
getent passwd overlimit >/dev/null || fail "dpkg -r removed the account"
rm /var/qmail/control/relaylimits
dpkg -P overlimit >/dev/null
[ ! -e /var/qmail/overlimit ] || fail "dpkg -P left the counters"
if [ "$had_account" = no ] && getent passwd overlimit >/dev/null; then
  fail "dpkg -P left the account it made"
fi
echo "package: built, installed, demo and metrics run, removed and purged: $deb"
