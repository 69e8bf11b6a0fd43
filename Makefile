# overlimit — build, test, install into qmail, demo, benchmark.
#
#   make                   release binaries in target/release/, for QMAILDIR
#   make test              the whole test suite (what .ci/run runs)
#   make demo              the plug-in at work on an embedded demo, no qmail needed
#   make bench             the plug-in against an empty static C program, and
#                          overlimit-policy against postfwd2 and a do-nothing server
#   make install           as root: programs, accounts, directories and modes
#   make queue-front-on    swap qmail-queue-overlimit in for bin/qmail-queue
#   make queue-front-off   and back (both atomic, both repeatable)
#
# The home is fixed when the programs are built, as qmail's conf-qmail is:
# `make QMAILDIR=DIR && make install QMAILDIR=DIR` builds programs whose
# every default path (control/relaylimits, overlimit/, bin/) is under DIR and
# installs them there. The privileged programs use only those paths.
#
# What `make install` sets up (idempotently; as root, without DESTDIR):
#   account and group  overlimit (system, no login shell, no home: a home
#                      of its own would make it a qmail local user)
#   QMAILDIR/overlimit overlimit:overlimit 2770 (the counters)
#   bin/overlimit-count          overlimit:overlimit 6755 (counts local mail)
#   bin/qmail-queue-overlimit    root:overlimit 2711 (the queue front)
#   bin/sendmail-overlimit, rcptcheck-overlimit, overlimit, overlimit-sweep,
#     overlimit-policy           root 0755
#   control/overlimit-uncounted  the qmail daemon accounts that exist (kept if present)
# Not root, or DESTDIR set: the files are installed and what remains is printed.

QMAILDIR ?= /var/qmail
PREFIX   ?= /usr/local
MANDIR   ?= $(PREFIX)/share/man
DESTDIR  ?=
CARGO    ?= cargo
# Where install-files takes the programs from (the tests use a debug build).
BUILD    ?= target/release

# Every program installed; .ci/run checks each is static and answers --version.
PROGRAMS  = rcptcheck-overlimit overlimit-sweep overlimit sendmail-overlimit overlimit-policy overlimit-count qmail-queue-overlimit
# Those installed root 0755 (the other two get their set-id modes below).
PLAIN     = rcptcheck-overlimit overlimit-sweep overlimit sendmail-overlimit overlimit-policy
MANPAGES  = $(wildcard man/*.8)
# qmail's daemons, whose queued mail the queue front passes uncounted
# (qmail-smtpd's mail is counted by the plug-in, bounces and forwards of
# aliases are the administrator's).
DAEMONS   = alias qmaild qmaill qmailp qmailq qmailr qmails
HOME_DIR  = $(DESTDIR)$(QMAILDIR)
SAVED     = $(HOME_DIR)/control/overlimit-queue-orig

.PHONY: all test demo bench fuzz install install-files install-man \
        queue-front-on queue-front-off clean

all:
	OVERLIMIT_QMAILDIR=$(QMAILDIR) $(CARGO) build --release --locked

test:
	$(CARGO) test --locked

demo: all
	sh scripts/demo.sh target/release

bench:
	sh scripts/bench.sh
	sh scripts/bench-policy.sh

fuzz:
	sh scripts/fuzz.sh

install: all install-files install-man

install-man:
	install -d $(DESTDIR)$(MANDIR)/man8
	for m in $(MANPAGES); do install -m 644 $$m $(DESTDIR)$(MANDIR)/man8/; done

# Owners before modes: chown clears the set-id bits.
install-files:
	@set -e; \
	root=; if [ "$$(id -u)" = 0 ] && [ -z "$(DESTDIR)" ]; then root=1; fi; \
	if [ -n "$$root" ]; then \
	  getent group overlimit >/dev/null || groupadd --system overlimit; \
	  getent passwd overlimit >/dev/null || useradd --system --gid overlimit \
	    --home-dir /nonexistent --no-create-home \
	    --shell /usr/sbin/nologin overlimit; \
	  if [ "$$(getent passwd overlimit | cut -d: -f6)" = "$(QMAILDIR)/overlimit" ]; then \
	    usermod --home /nonexistent overlimit; \
	  fi; \
	fi; \
	install -d -m 755 $(HOME_DIR)/bin $(HOME_DIR)/control; \
	install -d -m 2770 $(HOME_DIR)/overlimit; \
	for p in $(PLAIN); do install -m 755 $(BUILD)/$$p $(HOME_DIR)/bin/$$p; done; \
	install -m 755 $(BUILD)/overlimit-count $(HOME_DIR)/bin/overlimit-count; \
	install -m 755 $(BUILD)/qmail-queue-overlimit $(HOME_DIR)/bin/qmail-queue-overlimit; \
	if [ ! -e $(HOME_DIR)/control/overlimit-uncounted ]; then \
	  for a in $(DAEMONS); do \
	    if getent passwd $$a >/dev/null; then echo $$a; fi; \
	  done > $(HOME_DIR)/control/overlimit-uncounted; \
	  chmod 644 $(HOME_DIR)/control/overlimit-uncounted; \
	fi; \
	if [ -n "$$root" ]; then \
	  chown overlimit:overlimit $(HOME_DIR)/overlimit $(HOME_DIR)/bin/overlimit-count; \
	  chmod 2770 $(HOME_DIR)/overlimit; \
	  chmod 6755 $(HOME_DIR)/bin/overlimit-count; \
	  chown root:overlimit $(HOME_DIR)/bin/qmail-queue-overlimit; \
	  chmod 2711 $(HOME_DIR)/bin/qmail-queue-overlimit; \
	  chown root:root $(HOME_DIR)/control/overlimit-uncounted; \
	  echo "overlimit: installed in $(QMAILDIR) with account overlimit and every mode"; \
	else \
	  echo "note: not root or DESTDIR set; as root, still to do:"; \
	  echo "  groupadd --system overlimit; useradd --system -g overlimit -d /nonexistent -M -s /usr/sbin/nologin overlimit"; \
	  echo "  chown overlimit:overlimit $(QMAILDIR)/overlimit $(QMAILDIR)/bin/overlimit-count"; \
	  echo "  chmod 2770 $(QMAILDIR)/overlimit; chmod 6755 $(QMAILDIR)/bin/overlimit-count"; \
	  echo "  chown root:overlimit $(QMAILDIR)/bin/qmail-queue-overlimit; chmod 2711 $(QMAILDIR)/bin/qmail-queue-overlimit"; \
	  echo "  chown root:root $(QMAILDIR)/control/overlimit-uncounted (and list qmail's daemon accounts in it)"; \
	fi

# The original qmail-queue is kept by a hard link (its owner and mode saved)
# and limited to group overlimit (chgrp before chmod: chgrp clears the
# set-id bit) before the front takes its name by a rename: between the two,
# mail is refused for a moment, never queued uncounted. Limiting the inode
# itself also limits any other link to it. Run again, it installs the front
# anew.
queue-front-on:
	@set -e; b=$(HOME_DIR)/bin; \
	if [ ! -e $$b/qmail-queue.orig ]; then \
	  stat -c '%u:%g %a' $$b/qmail-queue > $(SAVED); \
	  ln $$b/qmail-queue $$b/qmail-queue.orig; \
	fi; \
	cp $$b/qmail-queue-overlimit $$b/qmail-queue.new; \
	chown root:overlimit $$b/qmail-queue.new; chmod 2711 $$b/qmail-queue.new; \
	chgrp overlimit $$b/qmail-queue.orig; \
	chmod 4110 $$b/qmail-queue.orig; \
	mv -f $$b/qmail-queue.new $$b/qmail-queue; \
	echo "qmail-queue: the overlimit front; the original is qmail-queue.orig"

queue-front-off:
	@set -e; b=$(HOME_DIR)/bin; \
	if [ -e $$b/qmail-queue.orig ]; then \
	  read owner mode < $(SAVED); \
	  chown $$owner $$b/qmail-queue.orig; chmod $$mode $$b/qmail-queue.orig; \
	  mv -f $$b/qmail-queue.orig $$b/qmail-queue; rm -f $(SAVED); \
	fi; \
	echo "qmail-queue: qmail's own again"

clean:
	$(CARGO) clean
