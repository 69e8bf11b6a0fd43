# overlimit — build, test, install into qmail, demo, benchmark.
#
#   make                   release binaries in target/release/, for QMAILDIR
#   make test              the whole test suite (what .ci/run runs)
#   make demo              the plug-in at work on an embedded demo, no qmail needed
#   make bench             the plug-in against an empty static C program, and
#                          overlimit-policy against postfwd2 and a do-nothing server
#   make install           as root: programs, accounts, directories and modes
#   make uninstall         programs and man pages (counters, control files and
#                          the account stay)
#   make deb               target/deb/overlimit_VERSION_ARCH.deb (dpkg-deb)
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
#     overlimit-policy, overlimit-notify   root 0755
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
PROGRAMS  = rcptcheck-overlimit overlimit-sweep overlimit sendmail-overlimit overlimit-policy overlimit-notify overlimit-count qmail-queue-overlimit
# A page's section is its extension: the programs' in 8, the overview of
# shared counters in 7.
MANPAGES  = $(wildcard man/*.8 man/*.7)
HOME_DIR  = $(DESTDIR)$(QMAILDIR)
SAVED     = $(HOME_DIR)/control/overlimit-queue-orig

.PHONY: all test demo bench fuzz install install-files install-man \
        uninstall deb queue-front-on queue-front-off clean

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
	for m in $(MANPAGES); do \
	  install -d $(DESTDIR)$(MANDIR)/man$${m##*.} && \
	  install -m 644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/ || exit 1; \
	done

# As root without DESTDIR, packaging/setup.sh makes the account, the
# directories and the modes (the Debian package's postinst runs the same).
install-files:
	@set -e; \
	install -d -m 755 $(HOME_DIR)/bin; \
	for p in $(PROGRAMS); do install -m 755 $(BUILD)/$$p $(HOME_DIR)/bin/$$p; done; \
	if [ "$$(id -u)" = 0 ] && [ -z "$(DESTDIR)" ]; then \
	  sh packaging/setup.sh $(QMAILDIR); \
	  echo "overlimit: installed in $(QMAILDIR) with account overlimit and every mode"; \
	else \
	  sh packaging/setup.sh --files $(HOME_DIR); \
	  echo "note: not root or DESTDIR set; as root, still to do:"; \
	  echo "  sh packaging/setup.sh $(QMAILDIR)"; \
	  echo "(account and group overlimit, owners and set-id modes of the counter"; \
	  echo " directory, bin/overlimit-count and bin/qmail-queue-overlimit)"; \
	fi

# Source installs only (the package has its own removal): the programs and
# man pages go; counters, control files and the account stay, and are named.
# With the queue front in place it refuses: qmail-queue would be gone.
uninstall:
	@set -e; b=$(HOME_DIR)/bin; \
	if [ -e $$b/qmail-queue.orig ]; then \
	  echo "uninstall: the queue front is in place; run make queue-front-off first" >&2; \
	  exit 1; \
	fi; \
	for p in $(PROGRAMS); do rm -f $$b/$$p; done; \
	for m in $(MANPAGES); do rm -f $(DESTDIR)$(MANDIR)/man$${m##*.}/$$(basename $$m); done; \
	echo "overlimit: programs and man pages removed; left in place:"; \
	echo "  $(QMAILDIR)/overlimit (the counters), $(QMAILDIR)/control/relaylimits,"; \
	echo "  $(QMAILDIR)/control/overlimit-uncounted and overlimit-senders, the account overlimit"; \
	echo "  (to remove: rm -r $(QMAILDIR)/overlimit; userdel overlimit; groupdel overlimit)"

# The Debian package, built with dpkg-deb (no packaging crate needed): its
# programs built for /var/qmail, as the systemd units expect.
deb:
	$(MAKE) all QMAILDIR=/var/qmail
	sh packaging/build-deb.sh target/release target/deb

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
