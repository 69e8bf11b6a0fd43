#!/bin/sh
# What `make install` and the Debian package's postinst both set up,
# idempotently (run it again and nothing changes): the account and group
# overlimit, the counter directory, the set-id modes of the two privileged
# programs, and the list of qmail's daemon accounts whose queued mail is
# passed uncounted (written once, then the administrator's).
#
#   sh packaging/setup.sh QMAILDIR            as root: all of it
#   sh packaging/setup.sh --files DIR         not root, or a DESTDIR: the
#                                             directories and the list only
#
# Owners before modes: chown clears the set-id bits.
set -eu
files_only=
if [ "${1:-}" = --files ]; then files_only=1; shift; fi
home=${1:?usage: setup.sh [--files] QMAILDIR}
# qmail's daemons (qmail-smtpd's mail is counted by the plug-in, bounces
# and forwards of aliases are the administrator's).
daemons="alias qmaild qmaill qmailp qmailq qmailr qmails"

if [ -z "$files_only" ]; then
  getent group overlimit >/dev/null || groupadd --system overlimit
  # No home of its own: one would make it a qmail local user.
  getent passwd overlimit >/dev/null || useradd --system --gid overlimit \
    --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin overlimit
  if [ "$(getent passwd overlimit | cut -d: -f6)" = "$home/overlimit" ]; then
    usermod --home /nonexistent overlimit
  fi
fi
install -d -m 755 "$home/bin" "$home/control"
install -d -m 2770 "$home/overlimit"
if [ ! -e "$home/control/overlimit-uncounted" ]; then
  for a in $daemons; do
    if getent passwd "$a" >/dev/null; then echo "$a"; fi
  done >"$home/control/overlimit-uncounted"
  chmod 644 "$home/control/overlimit-uncounted"
fi
[ -n "$files_only" ] && exit 0
chown overlimit:overlimit "$home/overlimit"
chmod 2770 "$home/overlimit"
chown root:root "$home/control/overlimit-uncounted"
chown overlimit:overlimit "$home/bin/overlimit-count"
chmod 6755 "$home/bin/overlimit-count"
chown root:overlimit "$home/bin/qmail-queue-overlimit"
chmod 2711 "$home/bin/qmail-queue-overlimit"
