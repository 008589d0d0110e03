#!/usr/bin/env bash
# youki's contest integration suite against a runc-compatible runtime.
#
#   scripts/conformance/contest.sh RUNTIME [GROUP[::TEST,TEST]...]
#
# Checks out github.com/youki-dev/youki under $PEER_DIR (never committed), builds `contest`
# (release profile, LTO off: a test driver) and `runtimetest` (static, it runs inside the
# containers) with cargo into $PEER_DIR/youki-target, keeps the two binaries in
# $PEER_DIR/bin and deletes the target dir, then runs, as youki's scripts/contest.sh does:
#   contest run --runtime RUNTIME --runtimetest runtimetest [-t GROUP...]
# from a directory holding youki's bundle.tar.gz. Prints contest's per-test lines and ends with
# "contest: P passed, F failed, S skipped" (over single tests). Full log and a summary:
# $PEER_DIR/results/contest/<runtime path with _ for />/{log,summary} (.some: some groups only).
#
#   YOUKI_SRC          git source of youki (default: the /work/.mirror copy, then GitHub)
#   CONTEST_KIND       RUNTIME_KIND given to contest: "runc" (default) makes it expect runc's
#                      behaviour where runc and youki differ; "youki" for youki's
#   CONTEST_TOOLCHAIN  rustup toolchain for the build (default stable: youki pins one that
#                      may not be installed, and rustup cannot download here)
#   CONTEST_KEEP_TARGET=1  keep $PEER_DIR/youki-target (~2 GB) after the build
#   CONTEST_GROUP_TIMEOUT  seconds per contest process, one group (default 300)
#   CONTEST_BASELINE   results of an earlier run to compare with, by name (usr_sbin_runc) or dir
# Exit status: 0 when nothing failed, 1 when a test failed, 2 when the suite could not run.
set -euo pipefail
CONF_NAME=contest
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
conf_reexec_private "$0" "$@"

rt=$(conf_runtime "${1:-}")
shift || true
[ "$(id -u)" = 0 ] || conf_die "must run as root (the suite creates real containers)"
command -v cargo >/dev/null || conf_die "cargo missing"

src=$PEER_DIR/youki
bin=$PEER_DIR/bin
peer_checkout youki "${YOUKI_SRC:-}" /work/.mirror/youki-dev+youki/repo https://github.com/youki-dev/youki

build() {
  local stamp rev target host
  rev=$(cat "$src/.vk-checkout")
  stamp=$bin/.contest-$rev
  [ -f "$stamp" ] && [ -x "$bin/contest" ] && [ -x "$bin/runtimetest" ] && return 0
  target=$PEER_DIR/youki-target
  export RUSTUP_TOOLCHAIN=${CONTEST_TOOLCHAIN:-stable}
  export CARGO_TARGET_DIR=$target CARGO_PROFILE_RELEASE_LTO=false
  # libcontainer links libseccomp; Debian ships the library but only libseccomp-dev has the
  # unversioned libseccomp.so the linker wants: point the build at a private symlink instead.
  local seclib="" f
  for f in /usr/lib/*-linux-gnu/libseccomp.so.2 /lib/*-linux-gnu/libseccomp.so.2; do
    [ -e "$f" ] && seclib=$f && break
  done
  [ -n "$seclib" ] || conf_die "libseccomp.so.2 missing (apt-get install libseccomp2)"
  mkdir -p "$PEER_CACHE/seccomp-lib"
  ln -sf "$seclib" "$PEER_CACHE/seccomp-lib/libseccomp.so"
  export LIBSECCOMP_LIB_PATH=$PEER_CACHE/seccomp-lib LIBSECCOMP_LINK_TYPE=dylib
  host=$(rustc -vV | sed -n 's/^host: //p')
  conf_log "building contest and runtimetest with $(rustc --version) (~15-30 min on 2 cores)"
  local log=$PEER_DIR/contest-build.log
  (
    cd "$src"
    cargo build --release --bin contest
    # runtimetest runs inside the test containers, so it is linked statically (youki's
    # scripts/build.sh does the same); --target keeps +crt-static off build scripts.
    RUSTFLAGS="-Ctarget-feature=+crt-static" cargo build --release --target "$host" --bin runtimetest
  ) >"$log" 2>&1 || { tail -30 "$log" >&2; conf_die "build failed (log: $log)"; }
  mkdir -p "$bin"
  cp "$target/release/contest" "$bin/contest"
  cp "$target/$host/release/runtimetest" "$bin/runtimetest"
  rm -f "$bin"/.contest-*
  touch "$stamp"
  if [ "${CONTEST_KEEP_TARGET:-0}" != 1 ]; then
    rm -rf "$target"
  fi
}
build

# contest reads bundle.tar.gz from its current directory.
work=$PEER_DIR/contest-run
mkdir -p "$work"
arch=$(uname -m)
bundle=$src/tests/contest/contest/bundle-$arch.tar.gz
[ -f "$bundle" ] || bundle=$src/tests/contest/contest/bundle.tar.gz
cp "$bundle" "$work/bundle.tar.gz"

out=$PEER_DIR/results/contest/$(conf_result_name "$rt")
# A run of some groups only must not overwrite the results of a full run (a baseline).
[ $# -eq 0 ] || out=$out.some
rm -rf "$out"
mkdir -p "$out"
log=$out/log
export RUNTIME_KIND=${CONTEST_KIND:-runc}

# tests_of GROUP: the test names of a group, read from contest's sources (the file that makes
# the TestGroup, or its whole directory when that file is a mod.rs).
tests_of() {
  python3 - "$src/tests/contest/contest/src/tests" "$1" <<'EOF'
import glob, os, re, sys
root, group = sys.argv[1], sys.argv[2]
names = []
for f in sorted(glob.glob(os.path.join(root, "**", "*.rs"), recursive=True)):
    text = open(f, encoding="utf-8", errors="replace").read()
    if not re.search(r'TestGroup::new\(\s*"%s"\s*\)' % re.escape(group), text):
        continue
    srcs = [f] if os.path.basename(f) != "mod.rs" else sorted(glob.glob(os.path.join(os.path.dirname(f), "*.rs")))
    for x in srcs:
        for n in re.findall(r'(?:Test|ConditionalTest)::new\(\s*"([^"]+)"', open(x, encoding="utf-8", errors="replace").read()):
            if n not in names:
                names.append(n)
print(" ".join(names))
EOF
}

# contest_run SELECTOR: one contest process for one group or group::test, output appended to
# the log. contest runs the tests of a group in threads and prints a group's results only when
# all are done: one panicking test (a v2-only test on this hybrid host, say) takes the whole
# process down with it. So groups run one by one, and a group that dies is run again test by
# test; a test that dies alone is reported failed with its panic message.
contest_run() {
  local sel=$1 rc=0
  (cd "$work" && timeout "${CONTEST_GROUP_TIMEOUT:-300}" "$bin/contest" run --runtime "$rt" \
    --runtimetest "$bin/runtimetest" -t "$sel") >"$out/one" 2>&1 </dev/null || rc=$?
  cat "$out/one" >>"$log"
  return $rc
}
# panic_of RC: the first panic message of the last contest_run on one line, without the
# runtime's debug chatter that contest includes.
panic_of() {
  local m
  m=$(awk '/panicked at/ { on = 1; next }
    on && /^(Stack backtrace|stack backtrace|note: )/ { exit }
    on && !/level=debug/ && NF { printf "%s%s", sep, $0; sep = " | " }' "$out/one" | cut -c1-300) || true
  [ "$1" = 124 ] && m="timeout after ${CONTEST_GROUP_TIMEOUT:-300} s${m:+; $m}"
  echo "${m:-contest exited without results (exit $1)}"
}

if [ $# -gt 0 ]; then
  groups=("$@")
else
  mapfile -t groups < <(cd "$work" && "$bin/contest" list 2>/dev/null | grep -E '^[A-Za-z0-9_]+$')
  [ ${#groups[@]} -gt 0 ] || conf_die "contest list gave no test groups"
fi
echo "contest $(cut -c1-7 "$src/.vk-checkout") against $rt (RUNTIME_KIND=$RUNTIME_KIND, ${#groups[@]} groups)"
start=$(date +%s)
: >"$log"
for g in "${groups[@]}"; do
  rc=0
  contest_run "$g" || rc=$?
  grep -q '^# Start group ' "$out/one" && continue
  # The group died before reporting: once more, test by test; not after a timeout, which
  # would only repeat itself (its tests are reported failed together).
  names=$(tests_of "${g%%::*}")
  if [ "$rc" = 124 ] && [[ $g != *::* ]] && [ -n "$names" ]; then
    for t in $names; do
      printf '# Start group %s\n1 / 1 : %s : not ok\n\tcontest died: %s\n# End group\n' \
        "$g" "$t" "$(panic_of $rc)" >>"$log"
    done
    continue
  fi
  if [[ $g == *::* ]] || [ -z "$names" ]; then
    printf '# Start group %s\n1 / 1 : %s : not ok\n\tcontest died: %s\n# End group\n' \
      "${g%%::*}" "${g#*::}" "$(panic_of $rc)" >>"$log"
    continue
  fi
  for t in $names; do
    rc=0
    contest_run "$g::$t" || rc=$?
    grep -q '^# Start group ' "$out/one" && continue
    printf '# Start group %s\n1 / 1 : %s : not ok\n\tcontest died: %s\n# End group\n' \
      "$g" "$t" "$(panic_of $rc)" >>"$log"
  done
done
rm -f "$out/one"
# Container ids are uuids; some tests use /runtime-test and /test cgroup paths.
conf_cgroup_cleanup "$start" '/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$|/(runtime-test|test)(/|$)'

# Lines: "# Start group G", "i / n : name : ok|skipped|not ok", the reason indented below
# (names may hold spaces: split on " : ").
awk '
  /^# Start group / { group = $4 }
  / : (ok|skipped|not ok)$/ {
    split($0, a, " : "); r = a[3]
    print (r == "ok" ? "ok  " : r == "skipped" ? "skip" : "FAIL") " " group "::" a[2]
    why = (r != "ok"); next
  }
  /^\t/ && why { print "       " substr($0, 2, 300); why = 0; next }
  { why = 0 }' "$log"
awk '/^# Start group / { group = $4 }
  / : (ok|skipped|not ok)$/ {
    split($0, a, " : "); r = a[3]
    print group "::" a[2] "\t" (r == "ok" ? "ok" : r == "skipped" ? "skip" : "FAIL")
  }' "$log" | tr ' ' '_' | tr '\t' ' ' >"$out/summary"
read -r P F S < <(awk '
  / : ok$/ { p++ } / : skipped$/ { s++ } / : not ok$/ { f++ }
  END { printf "%d %d %d\n", p, f, s }' "$log")
echo "groups: ${#groups[@]}; $(($(date +%s) - start)) s; log in $log"
conf_compare "$out/summary" "${CONTEST_BASELINE:-}" "$PEER_DIR/results/contest"
echo "contest: $P passed, $F failed, $S skipped"
[ "$F" -eq 0 ]
