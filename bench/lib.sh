# shellcheck shell=bash
# Shared helpers for the virtkit-vs-qemu-img benchmarks. Sourced, not run.
#
# Environment (all optional):
#   VK_IMG         virtkit command, word-split; default "target/release/virtkit img".
#                  For a dry run against qemu-img itself: VK_IMG=/usr/bin/qemu-img
#   QEMU_IMG       reference qemu-img (default /usr/bin/qemu-img)
#   QEMU_IO        qemu-io used to build inputs (default /usr/bin/qemu-io)
#   BENCH_DIR      cache/work directory (default .build/bench)
#   BENCH_N        timed trials per command, best one is reported (default 3)
#   BENCH_REPS     invocations per trial for the fast commands (default 20)
#   BENCH_SIZE     virtual size of the convert test image (default 2G)
#   BENCH_SEED     PRNG seed of the generated data (default 351)
#   BENCH_SNAPSHOTS  internal snapshots in the info/check image (default 100)
#   BENCH_VERIFY   1: check virtkit's outputs with qemu-img compare/check (default 1)
#   BENCH_TIMEOUT  seconds before one command is killed (default 900)
# Relative paths are relative to the repository root.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$BENCH_ROOT" || exit 2

VK_IMG=${VK_IMG:-target/release/virtkit img}
QEMU_IMG=${QEMU_IMG:-/usr/bin/qemu-img}
QEMU_IO=${QEMU_IO:-/usr/bin/qemu-io}
BENCH_DIR=${BENCH_DIR:-.build/bench}
BENCH_N=${BENCH_N:-3}
BENCH_REPS=${BENCH_REPS:-20}
BENCH_SIZE=${BENCH_SIZE:-2G}
BENCH_SEED=${BENCH_SEED:-351}
BENCH_SNAPSHOTS=${BENCH_SNAPSHOTS:-100}
BENCH_VERIFY=${BENCH_VERIFY:-1}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-900}

read -r -a VK <<<"$VK_IMG"
read -r -a QEMU <<<"$QEMU_IMG"
TOOLS=(qemu vk)

die() { echo "bench: $*" >&2; exit 2; }
log() { echo "bench: $*" >&2; }

[ -x /usr/bin/time ] || die "/usr/bin/time missing (apt-get install -y time, or scripts/deps.sh)"
command -v "${QEMU[0]}" >/dev/null || die "reference qemu-img not found: $QEMU_IMG"
command -v python3 >/dev/null || die "python3 is needed to generate the inputs"
BENCH_SIZE_BYTES=$(numfmt --from=iec "$BENCH_SIZE") || die "bad BENCH_SIZE: $BENCH_SIZE"

mkdir -p "$BENCH_DIR/inputs" "$BENCH_DIR/out"
BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/vk-bench.XXXXXX")
bench_cleanup() { rm -rf "$BENCH_TMP" "${BENCH_DIR:?}/out"; }
trap bench_cleanup EXIT

# Results and goal verdicts are appended to these files; run.sh shares them
# across the scripts so it can print one summary and avoid re-running work.
BENCH_RESULTS=${BENCH_RESULTS:-$BENCH_TMP/results}
BENCH_GOALS=${BENCH_GOALS:-$BENCH_TMP/goals}
export BENCH_RESULTS BENCH_GOALS
touch "$BENCH_RESULTS" "$BENCH_GOALS"

VK_MISSING=""
if ! command -v "${VK[0]}" >/dev/null 2>&1; then
  VK_MISSING="not found: ${VK[0]} (cargo build --release?)"
fi

# ---------------------------------------------------------------- inputs --

# Generated inputs are cached under $BENCH_DIR/inputs, keyed by their
# parameters and a generator version; they are written to a temporary name
# and renamed into place, so an interrupted generation is never reused.
GEN_VERSION=1

disk_raw() { echo "$BENCH_DIR/inputs/disk-$BENCH_SIZE-s$BENCH_SEED-v$GEN_VERSION.raw"; }
disk_qcow2() { echo "$BENCH_DIR/inputs/disk-$BENCH_SIZE-s$BENCH_SEED-v$GEN_VERSION.qcow2"; }
snap_qcow2() { echo "$BENCH_DIR/inputs/snap-1T-$BENCH_SNAPSHOTS-v$GEN_VERSION.qcow2"; }

ensure_disk_raw() {
  local f; f=$(disk_raw)
  [ -f "$f" ] && return 0
  log "generating $f (sparse, half data; a few seconds)"
  python3 bench/gen_disk.py --size "$BENCH_SIZE_BYTES" --seed "$BENCH_SEED" "$f"
}

ensure_disk_qcow2() {
  local f; f=$(disk_qcow2)
  [ -f "$f" ] && return 0
  ensure_disk_raw
  log "converting to $f with the reference qemu-img"
  "${QEMU[@]}" convert -f raw -O qcow2 "$(disk_raw)" "$f.tmp"
  mv "$f.tmp" "$f"
}

# 1 TiB qcow2 with $BENCH_SNAPSHOTS internal snapshots; a few small writes
# land between consecutive snapshots (new clusters far apart, plus a rewrite
# of the previous step's cluster, which forces copy-on-write), so every
# snapshot has its own L1 table and the refcounts are non-trivial.
ensure_snap_qcow2() {
  local f i a b c tmp
  f=$(snap_qcow2)
  [ -f "$f" ] && return 0
  [ -x "$QEMU_IO" ] || command -v "$QEMU_IO" >/dev/null || die "qemu-io not found: $QEMU_IO"
  log "generating $f ($BENCH_SNAPSHOTS snapshots; about 6 s per 100)"
  tmp=$f.tmp
  rm -f "$tmp"
  "${QEMU[@]}" create -q -f qcow2 "$tmp" 1T
  for ((i = 1; i <= BENCH_SNAPSHOTS; i++)); do
    # 16384 slots of 64 MiB span the 1 TiB disk.
    a=$(((i * 7919) % 16384))
    b=$(((i * 104729 + 77) % 16384))
    c=$((((i - 1) * 7919) % 16384))
    "$QEMU_IO" -f qcow2 \
      -c "write -q -P $((i % 255 + 1)) $((a << 26)) 64k" \
      -c "write -q -P $(((i * 3) % 255 + 1)) $(((b << 26) + (i % 16) * 4096)) 192k" \
      -c "write -q -P $(((i * 5) % 255 + 1)) $((c << 26)) 4k" \
      "$tmp" >/dev/null
    "${QEMU[@]}" snapshot -c "snap$(printf %03d "$i")" "$tmp"
  done
  # Snapshot dates are wall-clock stamps; pin them to make the file reproducible.
  python3 bench/pin_snapshot_dates.py "$tmp" 1704067200 3600
  "${QEMU[@]}" check -q "$tmp"
  mv "$tmp" "$f"
}

# Reads a file once so that every timed run finds it in the page cache.
warm() { cat "$@" >/dev/null; }

# --------------------------------------------------------------- running --

# run_once OUT ERR CMD...: one invocation under /usr/bin/time.
# Sets R_US (wall microseconds), R_RSS (peak RSS, KiB), R_RC (exit code).
run_once() {
  local out=$1 err=$2 t0 t1
  shift 2
  R_RC=0
  t0=${EPOCHREALTIME/./}
  /usr/bin/time -f '%x %M' -o "$BENCH_TMP/time" \
    timeout "$BENCH_TIMEOUT" "$@" >"$out" 2>"$err" || R_RC=$?
  t1=${EPOCHREALTIME/./}
  R_US=$((t1 - t0))
  R_RSS=$(tail -n 1 "$BENCH_TMP/time" | awk '{print $2+0}')
}

# run_plain CMD...: one invocation without any wrapper (so a fast command
# pays no fork/exec of /usr/bin/time or timeout). Sets R_US and R_RC.
run_plain() {
  local t0 t1
  R_RC=0
  t0=${EPOCHREALTIME/./}
  "$@" >/dev/null 2>&1 || R_RC=$?
  t1=${EPOCHREALTIME/./}
  R_US=$((t1 - t0))
}

# Short reason for a failed run: exit code plus the first line of stderr.
fail_reason() {
  local rc=$1 err=$2 line
  line=$(grep -m1 . "$err" 2>/dev/null | cut -c1-70 || true)
  case $rc in
    124) echo "timeout after ${BENCH_TIMEOUT}s" ;;
    *) echo "exit $rc${line:+: $line}" ;;
  esac
}

# ----------------------------------------------------------------- table --

declare -A T_US RSS SIZE ERR NOTE

fmt_s() { # microseconds -> seconds, precision adapted to magnitude
  awk -v u="$1" 'BEGIN { s = u / 1e6
    if (s >= 10) printf "%.2f", s; else if (s >= 0.1) printf "%.3f", s; else printf "%.4f", s }'
}
fmt_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v q="$1" -v v="$2" 'BEGIN { if (v > 0) printf "%.2fx", q / v; else printf "-" }'; }

TABLE_FMT='%-24s %10s %10s %7s %9s %9s  %s\n'

bench_header() {
  echo
  echo "== $1"
  # shellcheck disable=SC2059
  printf "$TABLE_FMT" BENCHMARK "QEMU-IMG s" "VIRTKIT s" RATIO "QEMU MiB" "VK MiB" NOTE
}

print_row() {
  local id=$1 label=$2 qs vs r qm vm note
  qs=ERROR vs=ERROR r=- qm=- vm=-
  [ -n "${T_US[$id.qemu]:-}" ] && qs=$(fmt_s "${T_US[$id.qemu]}")
  [ -n "${T_US[$id.vk]:-}" ] && vs=$(fmt_s "${T_US[$id.vk]}")
  [ -n "${RSS[$id.qemu]:-}" ] && qm=$(fmt_mib "${RSS[$id.qemu]}")
  [ -n "${RSS[$id.vk]:-}" ] && vm=$(fmt_mib "${RSS[$id.vk]}")
  if [ -n "${T_US[$id.qemu]:-}" ] && [ -n "${T_US[$id.vk]:-}" ]; then
    r=$(ratio "${T_US[$id.qemu]}" "${T_US[$id.vk]}")
  fi
  note=${NOTE[$id]:-}
  [ -n "${ERR[$id.qemu]:-}" ] && note="qemu-img ERROR: ${ERR[$id.qemu]}${note:+; $note}"
  [ -n "${ERR[$id.vk]:-}" ] && note="virtkit ERROR: ${ERR[$id.vk]}${note:+; $note}"
  # shellcheck disable=SC2059
  printf "$TABLE_FMT" "$label" "$qs" "$vs" "$r" "$qm" "$vm" "$note"
}

# Results of earlier scripts in the same run.sh session (used by rss.sh).
# One line per id and tool: ID TOOL WALL_US RSS_KIB SIZE_BYTES [ERROR TEXT].
record_result() { # id tool
  local id=$1 t=$2
  printf '%s %s %s %s %s %s\n' "$id" "$t" "${T_US[$id.$t]:--}" "${RSS[$id.$t]:--}" \
    "${SIZE[$id.$t]:--}" "${ERR[$id.$t]:-}" >>"$BENCH_RESULTS"
}

load_result() { # id tool -> 0 if an earlier script measured it
  local id=$1 t=$2 line us rss size err
  line=$(awk -v i="$id" -v t="$t" '$1 == i && $2 == t { l = $0 } END { print l }' "$BENCH_RESULTS")
  [ -n "$line" ] || return 1
  read -r _ _ us rss size err <<<"$line"
  if [ "$us" != "-" ]; then T_US[$id.$t]=$us; fi
  if [ "$rss" != "-" ]; then RSS[$id.$t]=$rss; fi
  if [ "$size" != "-" ]; then SIZE[$id.$t]=$size; fi
  if [ -n "$err" ]; then ERR[$id.$t]=$err; fi
  return 0
}

# ------------------------------------------------------------- benchmarks --

# Odd trials run qemu-img first, even trials virtkit first, so neither side
# systematically inherits the other's cache or writeback state.
trial_order() { if (($1 % 2)); then echo qemu vk; else echo vk qemu; fi; }

tool_cmd() { # tool -> sets CMD to its command words
  case $1 in
    qemu) CMD=("${QEMU[@]}") ;;
    vk) CMD=("${VK[@]}") ;;
  esac
}

# bench_convert ID LABEL OUTEXT VERIFY -- ARGS...
# A heavy command that writes @OUT@ (replaced by a per-tool output path).
# Each of BENCH_N trials runs qemu-img and virtkit once (order alternating), under
# /usr/bin/time, after a sync so earlier writeback does not overlap; the best
# wall time and the largest peak RSS are kept. Output size is recorded, and
# virtkit's output is checked by VERIFY (a function: VERIFY OUT) unless
# BENCH_VERIFY=0.
bench_convert() {
  local id=$1 label=$2 ext=$3 verify=$4 trial t out a
  shift 5
  local -a args
  for ((trial = 1; trial <= BENCH_N; trial++)); do
    for t in $(trial_order "$trial"); do
      [ -n "${ERR[$id.$t]:-}" ] && continue
      if [ "$t" = vk ] && [ -n "$VK_MISSING" ]; then ERR[$id.vk]=$VK_MISSING; continue; fi
      out=$BENCH_DIR/out/$t.$ext
      args=()
      for a in "$@"; do args+=("${a//@OUT@/$out}"); done
      tool_cmd "$t"
      rm -f "$out"
      sync
      run_once "$BENCH_TMP/stdout" "$BENCH_TMP/stderr" "${CMD[@]}" "${args[@]}"
      if [ "$R_RC" -ne 0 ]; then
        ERR[$id.$t]=$(fail_reason "$R_RC" "$BENCH_TMP/stderr")
        continue
      fi
      if [ -z "${T_US[$id.$t]:-}" ] || [ "$R_US" -lt "${T_US[$id.$t]}" ]; then T_US[$id.$t]=$R_US; fi
      if [ -z "${RSS[$id.$t]:-}" ] || [ "$R_RSS" -gt "${RSS[$id.$t]}" ]; then RSS[$id.$t]=$R_RSS; fi
      if [ "$trial" -eq 1 ]; then
        SIZE[$id.$t]=$(stat -c %s "$out" 2>/dev/null || echo 0)
        if [ "$t" = vk ] && [ "$BENCH_VERIFY" = 1 ] && [ -n "$verify" ]; then
          if ! "$verify" "$out" >"$BENCH_TMP/verify" 2>&1; then
            ERR[$id.vk]="wrong output: $(grep -m1 . "$BENCH_TMP/verify" | cut -c1-60 || true)"
          fi
        fi
      fi
    done
  done
  rm -f "$BENCH_DIR"/out/*
  size_note "$id"
  for t in "${TOOLS[@]}"; do record_result "$id" "$t"; done
  print_row "$id" "$label"
}

size_note() { # id: output sizes of both tools into NOTE
  local id=$1 q=${SIZE[$1.qemu]:-} v=${SIZE[$1.vk]:-}
  [ -n "$q" ] && [ -n "$v" ] || return 0
  NOTE[$id]=$(awk -v q="$q" -v v="$v" 'BEGIN {
    printf "out MiB %.1f / %.1f (%+.2f%%)", q / 1048576, v / 1048576, (q > 0 ? (v / q - 1) * 100 : 0) }')
}

# bench_fast ID LABEL -- ARGS...
# A fast read-only command. One warm-up run per tool under /usr/bin/time
# gives peak RSS and stdout (virtkit's stdout is compared with qemu-img's).
# Then BENCH_N x BENCH_REPS timed invocations per tool, unwrapped, the tools
# alternating invocation by invocation so both see the same background load;
# the fastest invocation is kept (the least disturbed by other processes).
bench_fast() {
  local id=$1 label=$2 trial i t
  shift 3
  for t in "${TOOLS[@]}"; do
    if [ "$t" = vk ] && [ -n "$VK_MISSING" ]; then ERR[$id.vk]=$VK_MISSING; continue; fi
    tool_cmd "$t"
    run_once "$BENCH_TMP/stdout.$t" "$BENCH_TMP/stderr" "${CMD[@]}" "$@"
    if [ "$R_RC" -ne 0 ]; then
      ERR[$id.$t]=$(fail_reason "$R_RC" "$BENCH_TMP/stderr")
    else
      RSS[$id.$t]=$R_RSS
    fi
  done
  if [ -z "${ERR[$id.qemu]:-}${ERR[$id.vk]:-}" ] &&
    ! cmp -s "$BENCH_TMP/stdout.qemu" "$BENCH_TMP/stdout.vk"; then
    NOTE[$id]="stdout differs from qemu-img"
  fi
  for ((trial = 1; trial <= BENCH_N; trial++)); do
    for ((i = 0; i < BENCH_REPS; i++)); do
      for t in $(trial_order $((trial + i))); do
        [ -n "${ERR[$id.$t]:-}" ] && continue
        tool_cmd "$t"
        run_plain "${CMD[@]}" "$@"
        if [ "$R_RC" -ne 0 ]; then
          ERR[$id.$t]="exit $R_RC in a repeated run"
          unset "T_US[$id.$t]"
          continue
        fi
        if [ -z "${T_US[$id.$t]:-}" ] || [ "$R_US" -lt "${T_US[$id.$t]}" ]; then T_US[$id.$t]=$R_US; fi
      done
    done
  done
  for t in "${TOOLS[@]}"; do record_result "$id" "$t"; done
  print_row "$id" "$label"
}

# ---------------------------------------------------------------- goals --

GOAL_LINES=()

goal() { # STATUS TEXT
  local line
  line=$(printf '%-5s %s' "$1" "$2")
  GOAL_LINES+=("$line")
  echo "$line" >>"$BENCH_GOALS"
}

# goal_faster ID LABEL MIN_RATIO: virtkit must be at least MIN_RATIO times
# as fast as qemu-img (1 = no slower).
goal_faster() {
  local id=$1 label=$2 min=$3 q v r st
  if [ -n "${ERR[$id.vk]:-}" ]; then goal ERROR "$label: virtkit ${ERR[$id.vk]}"; return; fi
  if [ -n "${ERR[$id.qemu]:-}" ]; then goal ERROR "$label: qemu-img ${ERR[$id.qemu]}"; return; fi
  q=${T_US[$id.qemu]} v=${T_US[$id.vk]}
  r=$(ratio "$q" "$v")
  st=$(awk -v q="$q" -v v="$v" -v m="$min" 'BEGIN { print (q >= m * v) ? "PASS" : "FAIL" }')
  if [ "$min" = 1 ]; then
    goal "$st" "$label: virtkit $(fmt_s "$v") s vs qemu-img $(fmt_s "$q") s, ratio $r (goal: virtkit no slower, >= 1.00x)"
  else
    goal "$st" "$label: virtkit $(fmt_s "$v") s vs qemu-img $(fmt_s "$q") s, ratio $r (goal >= ${min}x)"
  fi
}

# goal_size ID LABEL MAX_PCT: virtkit's output at most MAX_PCT % larger.
goal_size() {
  local id=$1 label=$2 max=$3 q v st pct
  if [ -n "${ERR[$id.vk]:-}" ]; then goal ERROR "$label: virtkit ${ERR[$id.vk]}"; return; fi
  if [ -n "${ERR[$id.qemu]:-}" ]; then goal ERROR "$label: qemu-img ${ERR[$id.qemu]}"; return; fi
  q=${SIZE[$id.qemu]} v=${SIZE[$id.vk]}
  pct=$(awk -v q="$q" -v v="$v" 'BEGIN { printf "%+.2f", (q > 0 ? (v / q - 1) * 100 : 0) }')
  st=$(awk -v p="$pct" -v m="$max" 'BEGIN { print (p <= m) ? "PASS" : "FAIL" }')
  goal "$st" "$label: virtkit $(fmt_mib $((v / 1024))) MiB vs qemu-img $(fmt_mib $((q / 1024))) MiB, ${pct}% (goal <= +${max}%)"
}

# goal_rss ID LABEL MAX_MIB: virtkit's peak RSS at most MAX_MIB.
goal_rss() {
  local id=$1 label=$2 max=$3 v st
  if [ -z "${RSS[$id.vk]:-}" ]; then goal ERROR "$label: virtkit ${ERR[$id.vk]:-not measured}"; return; fi
  v=${RSS[$id.vk]}
  st=PASS
  [ "$v" -le $((max * 1024)) ] || st=FAIL
  [ -n "${ERR[$id.vk]:-}" ] && st=ERROR
  goal "$st" "$label: virtkit peak RSS $(fmt_mib "$v") MiB (qemu-img $(fmt_mib "${RSS[$id.qemu]:-0}") MiB; goal <= $max MiB)${ERR[$id.vk]:+; ${ERR[$id.vk]}}"
}

print_goals() { # skipped under run.sh, which prints one summary at the end
  local l
  [ -z "${BENCH_NESTED:-}" ] || return 0
  echo
  echo "Goals:"
  for l in "${GOAL_LINES[@]}"; do echo "  $l"; done
}

bench_banner() { # printed once: by run.sh, or by a script run on its own
  [ -z "${BENCH_NESTED:-}" ] || return 0
  echo "virtkit:  $VK_IMG${VK_MISSING:+   [$VK_MISSING]}"
  echo "qemu-img: $QEMU_IMG ($("${QEMU[@]}" --version | head -n 1))"
  echo "work dir: $BENCH_DIR"
  echo "RATIO = qemu-img time / virtkit time (> 1: virtkit faster); MiB = peak RSS"
}

# Shared verifiers for converted outputs (the reference qemu-img does the
# checking); on failure they print one line saying what is wrong.
verify_check() {
  "${QEMU[@]}" check -f qcow2 "$1" >/dev/null 2>&1 || { echo "qemu-img check reports errors"; return 1; }
}
verify_compare() { # FMT1 IMG1 FMT2 IMG2
  local msg
  msg=$("${QEMU[@]}" compare -f "$1" -F "$3" "$2" "$4" 2>&1) || { echo "${msg:-compare failed}"; return 1; }
}
verify_qcow2_of_raw() { verify_check "$1" && verify_compare raw "$(disk_raw)" qcow2 "$1"; }
verify_raw_of_qcow2() { verify_compare qcow2 "$(disk_qcow2)" raw "$1"; }
