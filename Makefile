# overlimit — build, test, install into qmail, demo, benchmark.
#
#   make                 release binaries in target/release/
#   make test            the whole test suite (what .ci/run runs)
#   make demo            the plug-in at work on an embedded demo, no qmail needed
#   make bench           per-call cost against an empty static C program
#   make install         QMAILDIR=/var/qmail PREFIX=/usr/local (man pages)

QMAILDIR ?= /var/qmail
PREFIX   ?= /usr/local
MANDIR   ?= $(PREFIX)/share/man
DESTDIR  ?=
CARGO    ?= cargo

PROGRAMS = rcptcheck-overlimit overlimit-sweep overlimit sendmail-overlimit overlimit-count
MANPAGES = $(wildcard man/*.8)

.PHONY: all test demo bench fuzz install clean

all:
	$(CARGO) build --release --locked

test:
	$(CARGO) test --locked

demo: all
	sh scripts/demo.sh target/release

bench:
	sh scripts/bench.sh

fuzz:
	sh scripts/fuzz.sh

# The programs go to QMAILDIR/bin beside qmail's own, owned by root and not
# writable by anyone else (qmail-smtpd execs the plug-in as its own user).
install: all
	install -d $(DESTDIR)$(QMAILDIR)/bin $(DESTDIR)$(MANDIR)/man8
	for p in $(PROGRAMS); do \
	  if [ -f target/release/$$p ]; then \
	    install -m 755 target/release/$$p $(DESTDIR)$(QMAILDIR)/bin/$$p; fi; \
	done
	for m in $(MANPAGES); do install -m 644 $$m $(DESTDIR)$(MANDIR)/man8/; done
	@# overlimit-count is the one privileged part of the sendmail wrapper:
	@# setgid overlimit, so that sites can count but not touch the counters.
	@# A packager without the group (or not root) gets the note, not a failure.
	@if getent group overlimit >/dev/null && \
	  chgrp overlimit $(DESTDIR)$(QMAILDIR)/bin/overlimit-count 2>/dev/null && \
	  chmod 2755 $(DESTDIR)$(QMAILDIR)/bin/overlimit-count; then \
	  echo "overlimit-count: setgid overlimit"; \
	else \
	  echo "note: overlimit-count is not setgid overlimit; for sendmail-overlimit"; \
	  echo "      run as root: groupadd --system overlimit && make install"; \
	fi

clean:
	$(CARGO) clean
