#!/bin/sh
# The plug-in at work, no qmail needed: `make demo`, or
#   sh scripts/demo.sh target/release
# Runs rcptcheck-overlimit the way qmail-smtpd runs it, once per RCPT TO, in a
# throw-away directory, then shows the administrator's tools.
set -eu

bin=$(cd "${1:-target/release}" && pwd)
for p in rcptcheck-overlimit overlimit overlimit-sweep; do
    [ -x "$bin/$p" ] || { echo "demo: $bin/$p not built; run make" >&2; exit 1; }
done

demo=$(mktemp -d "${TMPDIR:-/tmp}/overlimit-demo.XXXXXX")
trap 'rm -rf "$demo"' EXIT
trap 'exit 1' INT TERM
mkdir "$demo/overlimit"
# Every program reads these two, as from the run scripts and crontab.
RELAYLIMITS=$demo/relaylimits OVERLIMITDIR=$demo/overlimit
export RELAYLIMITS OVERLIMITDIR

cat >"$RELAYLIMITS" <<'EOF'
# the default: 1000 recipients until the nightly sweep
:1000
# a customer whose password may have leaked: 3 recipients
alice@example.com:3
# each user of shop.example: 50 in any 5 minutes, 100 in 30, 200 an hour...
*@shop.example:50/5m,100/30m,200/1h
# ...and all of them together at most 4 (small, for the demo)
@shop.example:4
# the office network, by address: each address 2 in any minute
192.0.2.0/24:2/1m
EOF
echo "== control file $RELAYLIMITS"
cat "$RELAYLIMITS"

# session 'NAME=VALUE ...' RECIPIENT...: one SMTP session. For each RCPT TO
# the plug-in gets what qmail-smtpd gives it: a clean environment, stdin
# that is not its to read, stdout on stderr (the log), fd 4 for a reply line.
# A 421 ends the session, as qmail-smtpd then drops the connection.
session() {
    client=$1
    shift
    echo
    echo "== session: $client"
    for to in "$@"; do
        : >"$demo/fd4"
        code=0
        # $client is split into NAME=VALUE words on purpose.
        # shellcheck disable=SC2086
        env -i RELAYLIMITS="$RELAYLIMITS" OVERLIMITDIR="$OVERLIMITDIR" \
            USE_FD4=1 SENDER=sender@example.com RECIPIENT="$to" $client \
            "$bin/rcptcheck-overlimit" </dev/null 4>"$demo/fd4" \
            2>"$demo/log" >&2 || code=$?
        case $code in
        112) echo "RCPT TO:<$to>  -> exit 112 (accepted)" ;;
        113)
            # No text on fd 4: qmail-smtpd sends its own 421.
            reply=$(cat "$demo/fd4")
            echo "RCPT TO:<$to>  -> exit 113: ${reply:-421 you have exceeded your messaging limits (#4.3.0)}"
            ;;
        *) echo "RCPT TO:<$to>  -> exit $code" ;;
        esac
        sed 's/^/    log: /' "$demo/log"
        case $code:$(cat "$demo/fd4") in
        113:451*) ;;
        113:*) return 0 ;;
        esac
    done
}

# A user logged in with SMTP AUTH (RELAYCLIENT is set after AUTH): exactly 3.
session "RELAYCLIENT= SMTPAUTHUSER=alice@example.com TCPREMOTEIP=203.0.113.5" \
    bob@remote.example carol@remote.example dave@remote.example erin@remote.example

# Inbound mail (no RELAYCLIENT) is not counted, whatever the limits say.
session "TCPREMOTEIP=203.0.113.77" alice@example.com

# An office address, relaying by tcprules; OVERLIMIT_REPLY=451 refuses the
# recipient with a reply line and keeps the session.
session "RELAYCLIENT= TCPREMOTEIP=192.0.2.7 OVERLIMIT_REPLY=451" \
    a@remote.example b@remote.example c@remote.example

# Two users of shop.example fill the domain's shared counter.
session "RELAYCLIENT= SMTPAUTHUSER=web@shop.example" x@remote.example y@remote.example
session "RELAYCLIENT= SMTPAUTHUSER=news@shop.example" \
    x@remote.example y@remote.example z@remote.example

echo
echo "== ls $OVERLIMITDIR"
echo "(a file per client, @shop.example the domain's; none for inbound mail)"
ls "$OVERLIMITDIR"

echo
echo "== overlimit status"
"$bin/overlimit" status

echo
echo "== overlimit check, after a typo (a unit that does not exist)"
echo 'bob@example.com:100/1y' >>"$RELAYLIMITS"
"$bin/overlimit" check 2>&1 || echo "(exit $?)"
sed '$d' "$RELAYLIMITS" >"$demo/fixed" && mv "$demo/fixed" "$RELAYLIMITS"

echo
echo "== overlimit reset alice@example.com"
"$bin/overlimit" reset alice@example.com
session "RELAYCLIENT= SMTPAUTHUSER=alice@example.com" frank@remote.example

echo
echo "== overlimit-sweep --keep-overlimit (a ban until reset; cron mails this)"
"$bin/overlimit-sweep" --keep-overlimit
echo
echo "== overlimit-sweep (the nightly reset: classic counts to 0, idle counters go)"
"$bin/overlimit-sweep"
"$bin/overlimit" status
