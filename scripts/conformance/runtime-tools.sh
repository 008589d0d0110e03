#!/usr/bin/env bash
# The opencontainers runtime-tools validation suite against a runc-compatible runtime.
#
#   scripts/conformance/runtime-tools.sh RUNTIME [TEST...]
#
# Checks out github.com/opencontainers/runtime-tools under $PEER_DIR (never committed), builds
# runtimetest and the validation/*.t executables with the vendored modules (no network), runs
# each .t with RUNTIME=<runtime> from the checkout (the tests read rootfs-amd64.tar.gz and
# runtimetest from the current directory) and counts its TAP lines: one line per test
# executable, then "runtime-tools: P passed, F failed, S skipped" over all TAP assertions
# (what the suite's own `make localvalidation` counts). An executable that dies without a
# complete plan counts one failure more. Full TAP output: $PEER_DIR/results/runtime-tools/<rt>/
# (<rt>: the runtime path with _ for /; <rt>.some for a run of some tests only).
#
#   TEST           names as in validation/ (e.g. default pidfile); default: all
#   RT_TOOLS_SRC   git source of runtime-tools (default: the /work/.mirror copy, then GitHub)
#   RT_TOOLS_REV   commit to test (default: the checkout's HEAD)
#   RT_TIMEOUT     seconds per test executable (default 120)
#   RT_BASELINE    results of an earlier run to compare with, by name (e.g. usr_sbin_runc) or
#                  directory: lists the executables that fail here and not there, and back
# Exit status: 0 when nothing failed, 1 when a test failed, 2 when the suite could not run.
set -euo pipefail
CONF_NAME=runtime-tools
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
conf_reexec_private "$0" "$@"

rt=$(conf_runtime "${1:-}")
shift || true
[ "$(id -u)" = 0 ] || conf_die "must run as root (the suite creates real containers)"
command -v go >/dev/null || conf_die "go missing (apt-get install golang-go)"

src=$PEER_DIR/runtime-tools
peer_checkout runtime-tools "${RT_TOOLS_SRC:-}" /work/.mirror/opencontainers+runtime-tools/repo \
  https://github.com/opencontainers/runtime-tools
if [ -n "${RT_TOOLS_REV:-}" ]; then
  want=$(git -C "$src" rev-parse --verify "$RT_TOOLS_REV^{commit}") || conf_die "no commit $RT_TOOLS_REV"
  if [ "$(git -C "$src" rev-parse HEAD)" != "$want" ]; then
    git -C "$src" checkout -q -f "$want"
    git -C "$src" clean -q -fdx -e .vk-checkout
    rm -f "$src/.vk-built" "$src/.vk-go119"
  fi
fi

export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local GOSUMDB=off
export GOCACHE=$PEER_CACHE/go-build GOPATH=$PEER_CACHE/gopath CGO_ENABLED=0

# runtime-tools asks for Go 1.21 since 2025; Debian 12 has 1.19. The tree uses four newer
# library functions (slices.Contains/DeleteFunc, sync.OnceValue(s), strings.CutPrefix): give
# 1.19 small equivalents in the local checkout instead of needing a newer toolchain.
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
patch_for_old_go() {
  [ "${go_minor:-99}" -lt 21 ] || return 0
  [ -f "$src/.vk-go119" ] && return 0
  if ! grep -rqE --include='*.go' '"slices"|sync\.OnceValue|strings\.CutPrefix' "$src"; then
    touch "$src/.vk-go119"
    return 0
  fi
  conf_log "go 1.$go_minor: adding Go 1.21 library shims to the checkout"
  mkdir -p "$src/vendor/slices"
  cat >"$src/vendor/slices/slices.go" <<'EOF'
// Package slices: the two Go 1.21 functions runtime-tools uses, for older Go (virtkit harness).
package slices

func Contains[S ~[]E, E comparable](s S, v E) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func DeleteFunc[S ~[]E, E any](s S, del func(E) bool) S {
	out := s[:0]
	for _, x := range s {
		if !del(x) {
			out = append(out, x)
		}
	}
	return out
}
EOF
  local pkg d
  for pkg in vendor/github.com/moby/sys/capability:capability validate/capabilities:capabilities; do
    d=$src/${pkg%%:*}
    grep -qE 'sync\.OnceValue|strings\.CutPrefix' "$d"/*.go 2>/dev/null || continue
    cat >"$d/zz_go119compat.go" <<EOF
package ${pkg##*:}

// Go 1.21 library functions for older Go (virtkit harness).

import (
	"strings"
	"sync"
)

func onceValues[T1, T2 any](f func() (T1, T2)) func() (T1, T2) {
	var once sync.Once
	var r1 T1
	var r2 T2
	return func() (T1, T2) {
		once.Do(func() { r1, r2 = f() })
		return r1, r2
	}
}

func onceValue[T any](f func() T) func() T {
	var once sync.Once
	var r T
	return func() T {
		once.Do(func() { r = f() })
		return r
	}
}

func cutPrefix(s, prefix string) (string, bool) {
	if !strings.HasPrefix(s, prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

var _ = onceValue[int]
var _ = onceValues[int, int]
var _ = cutPrefix
EOF
    for f in "$d"/*.go; do
      [ "$f" = "$d/zz_go119compat.go" ] && continue
      grep -qE 'sync\.OnceValues?\(|strings\.CutPrefix\(' "$f" || continue
      sed -i 's/sync\.OnceValues(/onceValues(/g; s/sync\.OnceValue(/onceValue(/g;
              s/strings\.CutPrefix(/cutPrefix(/g' "$f"
      # Drop an import the rewrite left unused.
      grep -q 'sync\.' "$f" || sed -i '/^\t"sync"$/d' "$f"
      grep -q 'strings\.' "$f" || sed -i '/^\t"strings"$/d' "$f"
    done
  done
  touch "$src/.vk-go119"
}

build() {
  [ -f "$src/.vk-built" ] && [ -x "$src/runtimetest" ] && return 0
  patch_for_old_go
  conf_log "building runtimetest and the validation executables (go 1.$go_minor; ~2 min)"
  if ! make -C "$src" runtimetest validation-executables >"$PEER_DIR/runtime-tools-build.log" 2>&1; then
    tail -20 "$PEER_DIR/runtime-tools-build.log" >&2
    conf_die "build failed (log: $PEER_DIR/runtime-tools-build.log)"
  fi
  touch "$src/.vk-built"
}
build

cd "$src"
if [ $# -gt 0 ]; then
  tests=()
  for t in "$@"; do
    [ -x "validation/$t/$t.t" ] || conf_die "no such test: $t (see $src/validation)"
    tests+=("validation/$t/$t.t")
  done
else
  mapfile -t tests < <(find validation -name '*.t' -type f | sort)
fi
[ ${#tests[@]} -gt 0 ] || conf_die "no validation executables in $src/validation"

out=$PEER_DIR/results/runtime-tools/$(conf_result_name "$rt")
# A run of some tests only must not overwrite the results of a full run (a baseline).
[ $# -eq 0 ] || out=$out.some
rm -rf "$out"
mkdir -p "$out"
timeout_s=${RT_TIMEOUT:-120}
# last_words BASE: the last telling line a dead test executable left in BASE.err or BASE.tap.
last_words() {
  local w
  w=$(cat "$1.err" "$1.tap" | grep -v -e '^ok ' -e '^not ok ' -e '^1\.\.' -e '^TAP version' \
    -e '^\s*$' -e '^exit status' | tail -1 | cut -c1-200) || true
  echo "${w:-no message}"
}
P=0 F=0 S=0 files_ok=0 files_bad=0
start=$(date +%s)
echo "runtime-tools $(git rev-parse --short HEAD) against $rt"
for t in "${tests[@]}"; do
  name=$(basename "$t" .t)
  rc=0
  RUNTIME=$rt timeout "$timeout_s" "./$t" >"$out/$name.tap" 2>"$out/$name.err" </dev/null || rc=$?
  # TAP: "ok N ...", "ok N # SKIP ...", "not ok N ...", plan "1..N"; YAML blocks are indented.
  # Some executables print two TAP streams (the second "1..0"): the plans add up.
  read -r p f s plan seen < <(awk '
    /^ok [0-9]+ # [Ss][Kk][Ii][Pp]/ { s++; n++; next }
    /^ok [0-9]+/ { p++; n++; next }
    /^not ok [0-9]+/ { f++; n++; next }
    /^1\.\.[0-9]+/ { plan += substr($0, 4) + 0; next }
    END { printf "%d %d %d %d %d\n", p, f, s, plan, n }' "$out/$name.tap")
  note=""
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    # Died or timed out without a failing assertion of its own: that is a failure.
    f=$((f + 1))
    note=" (exit $rc$([ "$rc" = 124 ] && echo ", timeout ${timeout_s}s"): $(last_words "$out/$name"))"
  elif [ "$seen" -eq 0 ] && grep -q '"error":' "$out/$name.tap"; then
    # The hook tests report their verdict as an error diagnostic without any assertion.
    f=$((f + 1))
    note=" (no assertion, error: $(sed -n 's/^ *"error": "\(.*\)",\{0,1\}$/\1/p' "$out/$name.tap" | head -1 | sed 's/\\n.*//' | cut -c1-120))"
  elif [ "$seen" -ne "$plan" ]; then
    f=$((f + 1))
    note=" (plan $plan, saw $seen assertions)"
  fi
  P=$((P + p)) F=$((F + f)) S=$((S + s))
  if [ "$f" -eq 0 ]; then files_ok=$((files_ok + 1)); verdict=ok; else files_bad=$((files_bad + 1)); verdict=FAIL; fi
  printf '%-4s %-40s %3d passed, %2d failed, %2d skipped%s\n' "$verdict" "$name" "$p" "$f" "$s" "$note"
  echo "$name $verdict $p $f $s" >>"$out/summary"
  # The failing assertions by name, so the cause is visible without opening the log.
  grep -E '^not ok [0-9]+' "$out/$name.tap" | head -5 | sed 's/^/       /' || true
done
# Its fixed cgroup names (cgroups/cgroups.go) and the uuids it names containers with.
conf_cgroup_cleanup "$start" '/(cgrouptest|testdir)(/|$)|/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
echo "executables: $files_ok without failures, $files_bad with; $(($(date +%s) - start)) s; TAP in $out"
conf_compare "$out/summary" "${RT_BASELINE:-}" "$PEER_DIR/results/runtime-tools"
echo "runtime-tools: $P passed, $F failed, $S skipped"
[ "$F" -eq 0 ]
