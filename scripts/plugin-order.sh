#!/bin/sh
# Remakes build/plugin-order.ld, the order of the plug-in's start-up code
# and constants, and prints it on stdout:
#
#   sh scripts/plugin-order.sh >build/plugin-order.ld.new &&
#     mv build/plugin-order.ld.new build/plugin-order.ld
#
# It builds the plug-in unstripped with a link map in a private target
# directory and single-steps its second call (the first creates the
# client's counter file) in the benchmark's environment: an authenticated
# client near the end of a 10-line control file, counters in files. Each
# instruction address is noted once, in the order first run, and mapped to
# the input section holding it; each section becomes one line of the linker
# script, in that order; likewise each constant read, under valgrind,
# for .rodata. Needs gcc, python3 and valgrind. Rust symbol hashes, crate
# disambiguators and LLVM's numbers for local copies become wildcards, so
# the lines survive a rebuild; a line that no longer matches is skipped by
# the linker.
set -eu
cd "$(dirname "$0")/.."

TMP=$(mktemp -d "${TMPDIR:-/tmp}/plugin-order.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

CARGO_PROFILE_RELEASE_STRIP=false CARGO_TARGET_DIR=$TMP/target \
  cargo rustc --release --locked --quiet --bin rcptcheck-overlimit -- \
  -C "link-arg=-Wl,-Map=$TMP/map"

# The tracer: runs the program under ptrace, one instruction at a time,
# prints each 16-byte block of the program's own addresses the first time
# it is run, and exits as the program did.
cat >"$TMP/trace.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>
#define LIMIT (1ul << 28) /* a static non-PIE program's text is below */
static unsigned char seen[LIMIT >> 4];
extern char **environ;
int main(int argc, char **argv) {
  int status;
  pid_t child = fork();
  if (argc < 2 || child < 0) return 1;
  if (child == 0) {
    ptrace(PTRACE_TRACEME, 0, 0, 0);
    execve(argv[1], argv + 1, environ);
    _exit(127);
  }
  waitpid(child, &status, 0);
  while (!WIFEXITED(status) && !WIFSIGNALED(status)) {
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, child, 0, &regs) != 0) {
      perror("trace: PTRACE_GETREGS");
      return 1;
    }
    if (regs.rip < LIMIT && !seen[regs.rip >> 4]) {
      seen[regs.rip >> 4] = 1;
      printf("%llx\n", regs.rip);
    }
    if (ptrace(PTRACE_SINGLESTEP, child, 0, 0) != 0) {
      perror("trace: PTRACE_SINGLESTEP");
      return 1;
    }
    waitpid(child, &status, 0);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
EOF
gcc -O2 -o "$TMP/trace" "$TMP/trace.c"

mkdir "$TMP/overlimit"
cat >"$TMP/relaylimits" <<'EOF'
# relaylimits for tracing the plug-in's start-up
:1000
user1@domain1.example:500
web2@domain2.example: 50/5m, 100/30m, 200/1h
10.1.2.3:3000
172.16.4.0/24:500/1h
2001:db8:1::5:500
*@domain7.example:200,1000/1d
@domain8.example:5000/1d
bench@bench.example:1000000000,1000000000/1h
EOF
# A call as qmail-smtpd makes it, run by "$@" (the plug-in, or a tracer
# running it); one that does not count the recipient and exit 112 stops
# the script, as its trace would be of the wrong path.
call() {
  what=$1
  shift
  code=0
  env -i RELAYCLIENT= SMTPAUTHUSER=bench@bench.example TCPREMOTEIP=192.0.2.10 \
    RECIPIENT=someone@remote.example RELAYLIMITS="$TMP/relaylimits" \
    OVERLIMITDIR="$TMP/overlimit" "$@" || code=$?
  [ "$code" = 112 ] || { echo "plugin-order.sh: $what exited $code, not 112" >&2; exit 1; }
}
plugin=$TMP/target/release/rcptcheck-overlimit
# The first call creates the client's counter file, which a session's later
# calls find: the second is traced.
call "the first call" "$plugin"
call "the traced call" "$TMP/trace" "$plugin" >"$TMP/addresses"

# The constant data a call reads, in the order first read: valgrind's
# lackey prints every load. (It emulates a CPU of its own, so the code it
# runs is not quite the real one's: the code comes from the tracer above.)
call "the call under valgrind" valgrind -q --tool=lackey --trace-mem=yes \
  --log-file="$TMP/lackey" "$plugin"
sed -n 's/^ [LM] \([0-9a-f]*\),.*/\1/p' "$TMP/lackey" >"$TMP/loads"

# The header stays the one build/plugin-order.ld has: what and why.
sed '/^SECTIONS {$/,$d' build/plugin-order.ld
python3 - "$TMP/map" "$TMP/addresses" "$TMP/loads" <<'EOF'
import bisect, re, sys

# lld's map: "VMA LMA SIZE ALIGN" then the output section (indent 1), an
# input section (indent 9, "FILE:(SECTION)") or a symbol (indent 17). Only
# the input sections of the text and of .rodata are wanted.
GROUPS = {".text": "text", ".text.hot": "text", ".iplt": "text",
          ".rodata": "rodata", ".rodata.hot": "rodata"}
sections, group = [], None
for line in open(sys.argv[1]):
    m = re.match(r"\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+( +)(\S.*)$", line.rstrip())
    if not m:
        continue
    start, size, indent, what = int(m[1], 16), int(m[2], 16), len(m[3]), m[4]
    if indent == 1:
        group = GROUPS.get(what)
    elif indent < 17 and group:
        f = re.match(r"(.*):\((\S+)\)$", what)
        if f:
            sections.append((start, size, f[1], f[2], group))
sections.sort()
starts = [s[0] for s in sections]


def pattern(path, name):
    """The input section as a linker script names it, or None where its
    name is not stable from one build to the next."""
    if path == "<internal>":  # made by the linker: .iplt, merged strings
        return "*(%s)" % name if name == ".iplt" else None
    if path.endswith(".rcgu.o"):
        if name.startswith(".rodata..L"):  # an anonymous constant
            return None
        name = re.sub(r"17h[0-9a-f]{16}E$", "*", name)  # a legacy hash
        name = re.sub(r"\.\d+$", "*", name)  # LLVM's number for a local copy
        if re.match(r"\.(text|rodata)\._R", name):  # v0: disambiguators, back-references
            name = re.sub(r"Cs[0-9A-Za-z]*_", "Cs*_", name)
            name = re.sub(r"B[0-9A-Za-z]*_", "B*_", name)
        return "*(%s)" % re.sub(r"\*+", "*", name)
    member = re.match(r".*/([^/]+\.a)\(([^)]+)\)$", path)
    if member:
        return "*/%s:%s(%s)" % (member[1], member[2], name)
    return "*/%s(%s)" % (path.rsplit("/", 1)[-1], name)


def first_used(addresses, wanted):
    """The `wanted` group's sections holding `addresses`, in their order."""
    lines = []
    for address in open(addresses):
        a = int(address, 16)
        i = bisect.bisect_right(starts, a) - 1
        if i >= 0 and a < sections[i][0] + sections[i][1] and sections[i][4] == wanted:
            p = pattern(sections[i][2], sections[i][3])
            if p and p not in lines:
                lines.append(p)
    return lines


for wanted, addresses in (("text", sys.argv[2]), ("rodata", sys.argv[3])):
    print("SECTIONS {\n  .%s.hot : {" % wanted)
    for p in first_used(addresses, wanted):
        print("    " + p)
    print("  }\n} INSERT BEFORE .%s;" % wanted)
EOF
