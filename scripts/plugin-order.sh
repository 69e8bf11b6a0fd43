#!/bin/sh
# Remakes build/plugin-order.ld, the order of the plug-in's start-up code in
# the text, and prints it on stdout:
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
# script, in that order. Needs gcc and python3. Rust symbol hashes, crate
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

# The tracer: runs the program under ptrace, one instruction at a time, and
# prints each 16-byte block of the program's own addresses the first time
# it is run.
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
    if (ptrace(PTRACE_GETREGS, child, 0, &regs) != 0) return 1;
    if (regs.rip < LIMIT && !seen[regs.rip >> 4]) {
      seen[regs.rip >> 4] = 1;
      printf("%llx\n", regs.rip);
    }
    if (ptrace(PTRACE_SINGLESTEP, child, 0, 0) != 0) return 1;
    waitpid(child, &status, 0);
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 112 ? 0 : 1;
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
# The second call is traced: the first creates the client's counter file,
# which a session's later calls find.
call() {
  env -i RELAYCLIENT= SMTPAUTHUSER=bench@bench.example TCPREMOTEIP=192.0.2.10 \
    RECIPIENT=someone@remote.example RELAYLIMITS="$TMP/relaylimits" \
    OVERLIMITDIR="$TMP/overlimit" "$@"
}
plugin=$TMP/target/release/rcptcheck-overlimit
code=0
call "$plugin" || code=$?
[ "$code" = 112 ] || { echo "plugin-order.sh: the first call exited $code, not 112" >&2; exit 1; }
call "$TMP/trace" "$plugin" >"$TMP/addresses" ||
  { echo "plugin-order.sh: the traced call did not exit 112" >&2; exit 1; }

# The header stays the one build/plugin-order.ld has: what and why.
sed '/^SECTIONS {$/,$d' build/plugin-order.ld
python3 - "$TMP/map" "$TMP/addresses" <<'EOF'
import bisect, re, sys

# lld's map: "VMA LMA SIZE ALIGN" then the output section (indent 1), an
# input section (indent 9, "FILE:(SECTION)") or a symbol (indent 17).
sections, in_text = [], False
for line in open(sys.argv[1]):
    m = re.match(r"\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+( +)(\S.*)$", line.rstrip())
    if not m:
        continue
    start, size, indent, what = int(m[1], 16), int(m[2], 16), len(m[3]), m[4]
    if indent == 1:
        in_text = what in (".text", ".text.hot", ".iplt")
    elif indent < 17 and in_text:
        f = re.match(r"(.*):\((\S+)\)$", what)
        if f:
            sections.append((start, size, f[1], f[2]))
sections.sort()
starts = [s[0] for s in sections]


def pattern(path, name):
    if path == "<internal>":  # made by the linker: .iplt
        return "*(%s)" % name
    if path.endswith(".rcgu.o"):
        name = re.sub(r"17h[0-9a-f]{16}E$", "*", name)  # a legacy hash
        name = re.sub(r"\.\d+$", "*", name)  # LLVM's number for a local copy
        if name.startswith(".text._R"):  # v0: disambiguators, back-references
            name = re.sub(r"Cs[0-9A-Za-z]*_", "Cs*_", name)
            name = re.sub(r"B[0-9A-Za-z]*_", "B*_", name)
        return "*(%s)" % re.sub(r"\*+", "*", name)
    member = re.match(r".*/([^/]+\.a)\(([^)]+)\)$", path)
    if member:
        return "*/%s:%s(%s)" % (member[1], member[2], name)
    return "*/%s(%s)" % (path.rsplit("/", 1)[-1], name)


lines = []
for address in open(sys.argv[2]):
    ip = int(address, 16)
    i = bisect.bisect_right(starts, ip) - 1
    if i >= 0 and ip < sections[i][0] + sections[i][1]:
        p = pattern(sections[i][2], sections[i][3])
        if p not in lines:
            lines.append(p)
print("SECTIONS {\n  .text.hot : {")
for p in lines:
    print("    " + p)
print("  }\n} INSERT BEFORE .text;")
EOF
