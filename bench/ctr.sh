#!/usr/bin/env bash
# Container start-up: create, start and delete a busybox /bin/true container N times with
# virtkit's runc, Debian's runc and crun, in the same run; times, peak RSS, ratios.
#
#   VIRTKIT_RUNC=target/release/runc bench/ctr.sh
#
# One iteration, as containerd drives a runtime (three runtime processes):
#   RT --root R create --bundle B --pid-file P ID   # container init waits on its exec fifo
#   RT --root R start ID                            # /bin/true runs
#   (wait until P's process has exited: gone or a zombie; no runtime call)
#   RT --root R delete ID                           # on the stopped container
# The bundle: the busybox rootfs (scripts/busybox-rootfs.sh) and `runc spec`'s config.json
# with terminal false and args ["/bin/true"], the same file for every runtime. Before timing,
# each runtime runs one container whose process writes a marker file, to prove it really
# starts the container's process. Iterations are interleaved in BENCH_ROUNDS rounds so that
# load from elsewhere on the machine hits every runtime alike; 3 untimed warm-up iterations.
#
# crun 1.8 refuses this machine's hybrid cgroup layout (v1 controllers plus a cgroup2 mount at
# /sys/fs/cgroup/unified): its loop runs in a private mount namespace where that mount is gone
# (unshare -m; nothing changes outside). runc and virtkit run as they are.
#
# Peak RSS: /usr/bin/time -f %M on each of create, start and delete of one extra container;
# the table shows create's and the largest of the three (KiB).
#
#   VIRTKIT_RUNC   virtkit's runc link (argv0 dispatch); left out of the run if unset
#   RUNC           default /usr/sbin/runc;  CRUN  default /usr/bin/crun (empty: skip one)
#   BENCH_N        iterations per runtime (default 100)
#   BENCH_ROUNDS   rounds the iterations are split into (default 5)
#   BENCH_STRICT=1 exit 1 when a goal (virtkit <= 0.8 x crun's time, RSS <= crun's) is missed
# Exit status: 0, or 1 for a missed goal under BENCH_STRICT, 2 when a runtime fails.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "bench ctr: $*" >&2; exit 2; }

# ---- the timed loop; also entered as `ctr.sh --loop ...`, inside unshare for crun ----------
# wait_exit PID: until the process is gone or a zombie (its parent may not reap it at once).
wait_exit() {
  local st
  while read -r st 2>/dev/null <"/proc/$1/stat"; do
    st=${st##*) }
    [ "${st%% *}" = Z ] && return 0
  done
  return 0
}

# loop RT STATE_ROOT BUNDLE N TAG: N create/start/wait/delete cycles; prints elapsed seconds.
loop() {
  local rt=$1 r=$2 b=$3 n=$4 tag=$5 i id t0 t1 pid
  t0=$EPOCHREALTIME
  for ((i = 0; i < n; i++)); do
    id=$tag-$i
    "$rt" --root "$r" create --bundle "$b" --pid-file "$r/$id.pid" "$id" ||
      { echo "create failed: $rt $id" >&2; return 2; }
    "$rt" --root "$r" start "$id" || { echo "start failed: $rt $id" >&2; return 2; }
    pid=$(<"$r/$id.pid")
    wait_exit "$pid"
    "$rt" --root "$r" delete "$id" || { echo "delete failed: $rt $id" >&2; return 2; }
  done
  t1=$EPOCHREALTIME
  rm -f "$r"/*.pid
  # EPOCHREALTIME is seconds.microseconds; bash has integers only.
  echo $((${t1/./} - ${t0/./})) | awk '{ printf "%.6f\n", $1 / 1e6 }'
}

if [ "${1:-}" = --loop ]; then
  shift
  if [ "${1:-}" = --no-unified ]; then
    shift
    # In our own mount namespace (unshare -m): hide the cgroup2 mount from crun.
    umount /sys/fs/cgroup/unified 2>/dev/null || umount -l /sys/fs/cgroup/unified ||
      die "cannot unmount /sys/fs/cgroup/unified in the private namespace"
  fi
  if [ "${1:-}" = --once ]; then
    # One container under /usr/bin/time, for peak RSS: create, start, delete -> three numbers.
    shift
    rt=$1 r=$2 b=$3 id=$4-rss
    /usr/bin/time -f %M -o "$r/rss.create" "$rt" --root "$r" create --bundle "$b" --pid-file "$r/$id.pid" "$id"
    /usr/bin/time -f %M -o "$r/rss.start" "$rt" --root "$r" start "$id"
    wait_exit "$(<"$r/$id.pid")"
    /usr/bin/time -f %M -o "$r/rss.delete" "$rt" --root "$r" delete "$id"
    echo "$(tail -1 "$r/rss.create") $(tail -1 "$r/rss.start") $(tail -1 "$r/rss.delete")"
    exit 0
  fi
  loop "$@"
  exit $?
fi

# ---- the benchmark ------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "must run as root (real containers, cgroups)"
[ -x /usr/bin/time ] || die "/usr/bin/time missing (apt-get install time)"
N=${BENCH_N:-100}
ROUNDS=${BENCH_ROUNDS:-5}
[ "$N" -ge "$ROUNDS" ] || ROUNDS=$N
RUNC=${RUNC-/usr/sbin/runc}
CRUN=${CRUN-/usr/bin/crun}

names=() bins=()
add() {
  [ -n "$2" ] || return 0
  [ -x "$2" ] || die "$1 not executable: $2"
  # Absolute, but a symlink stays a symlink: virtkit dispatches on argv0.
  names+=("$1") bins+=("$(cd "$(dirname "$2")" && pwd)/$(basename "$2")")
}
add virtkit "${VIRTKIT_RUNC:-}"
add runc "$RUNC"
add crun "$CRUN"
[ ${#names[@]} -gt 0 ] || die "no runtime to run"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vk-ctr-bench.XXXXXX")
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  local i
  for i in "${!names[@]}"; do
    # Leftovers of a failed run: containers under our private state roots only.
    for id in $("${bins[$i]}" --root "$tmp/state-${names[$i]}" list -q 2>/dev/null); do
      "${bins[$i]}" --root "$tmp/state-${names[$i]}" delete -f "$id" >/dev/null 2>&1 || true
    done
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

bundle=$tmp/bundle
"$root/scripts/busybox-rootfs.sh" "$bundle/rootfs"
"${RUNC:-/usr/sbin/runc}" spec --bundle "$bundle" 2>/dev/null || die "runc spec failed (RUNC=$RUNC)"
python3 - "$bundle/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(p, "w"), indent=1)
EOF
# The proof bundle: same config, but the process writes a marker into a writable rootfs.
proof=$tmp/proof
mkdir -p "$proof"
"$root/scripts/busybox-rootfs.sh" "$proof/rootfs"
python3 - "$bundle/config.json" "$proof/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["root"]["readonly"] = False
c["process"]["args"] = ["/bin/sh", "-c", "echo ran > /marker"]
json.dump(c, open(sys.argv[2], "w"), indent=1)
EOF

self=$root/bench/ctr.sh
# The loop helper is a child subreaper, as containerd's shim is: the container's init, orphaned
# when `create` exits, becomes its child and is reaped there, not by this machine's PID 1.
subreaper=(python3 -c 'import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
os.execv(sys.argv[1], sys.argv[1:])')
# run NAME ARGS...: the loop helper for that runtime, in a private mount namespace for crun.
run() {
  local name=$1
  shift
  if [ "$name" = crun ] && mountpoint -q /sys/fs/cgroup/unified; then
    unshare -m "${subreaper[@]}" "$self" --loop --no-unified "$@"
  else
    "${subreaper[@]}" "$self" --loop "$@"
  fi
}

echo "bench ctr: create + start + delete of a busybox /bin/true container, $N times per runtime"
echo "           ($ROUNDS interleaved rounds; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
declare -A total rss_c rss_max
for i in "${!names[@]}"; do
  n=${names[$i]} rt=${bins[$i]}
  mkdir -p "$tmp/state-$n"
  rm -f "$proof/rootfs/marker"
  run "$n" "$rt" "$tmp/state-$n" "$proof" 1 "proof-$n" >/dev/null ||
    die "$n ($rt) cannot run a container; see the messages above"
  [ "$(cat "$proof/rootfs/marker" 2>/dev/null)" = ran ] ||
    die "$n ($rt): create/start returned but the container's process did not run"
  run "$n" "$rt" "$tmp/state-$n" "$bundle" 3 "warm-$n" >/dev/null || die "$n: warm-up failed"
  read -r c s d < <(run "$n" --once "$rt" "$tmp/state-$n" "$bundle" "$n") || die "$n: RSS run failed"
  rss_c[$n]=$c
  rss_max[$n]=$(printf '%s\n' "$c" "$s" "$d" | sort -n | tail -1)
  total[$n]=0
done
per=$((N / ROUNDS))
for ((round = 0; round < ROUNDS; round++)); do
  k=$per
  [ $round -eq $((ROUNDS - 1)) ] && k=$((N - per * (ROUNDS - 1)))
  for i in "${!names[@]}"; do
    n=${names[$i]}
    secs=$(run "$n" "${bins[$i]}" "$tmp/state-$n" "$bundle" "$k" "r$round-$n") ||
      die "$n failed in round $round"
    total[$n]=$(awk -v a="${total[$n]}" -v b="$secs" 'BEGIN { printf "%.6f", a + b }')
  done
done

printf '\n%-8s %9s %9s %13s %13s  %s\n' RUNTIME "TOTAL s" "ms/iter" "CREATE KiB" "PEAK KiB" BINARY
for i in "${!names[@]}"; do
  n=${names[$i]}
  printf '%-8s %9.3f %9.2f %13s %13s  %s\n' "$n" "${total[$n]}" \
    "$(awk -v t="${total[$n]}" -v n="$N" 'BEGIN { print t * 1000 / n }')" \
    "${rss_c[$n]}" "${rss_max[$n]}" "${bins[$i]}"
done
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
missed=0
if [ -n "${total[virtkit]:-}" ]; then
  for ref in crun runc; do
    [ -n "${total[$ref]:-}" ] || continue
    tr=$(ratio "${total[virtkit]}" "${total[$ref]}")
    rr=$(ratio "${rss_max[virtkit]}" "${rss_max[$ref]}")
    goal="" rgoal=""
    if [ "$ref" = crun ]; then
      if awk -v r="$tr" 'BEGIN { exit !(r <= 0.8) }'; then goal=" (goal <= 0.80: PASS)"; else goal=" (goal <= 0.80: FAIL)"; missed=1; fi
      if awk -v r="$rr" 'BEGIN { exit !(r <= 1.0) }'; then rgoal=" (goal <= 1.00: PASS)"; else rgoal=" (goal <= 1.00: FAIL)"; missed=1; fi
    fi
    echo "virtkit/$ref time ratio: $tr$goal"
    echo "virtkit/$ref peak RSS ratio: $rr$rgoal"
  done
else
  echo "(VIRTKIT_RUNC unset: virtkit not measured)"
  if [ -n "${total[runc]:-}" ] && [ -n "${total[crun]:-}" ]; then
    echo "crun/runc time ratio: $(ratio "${total[crun]}" "${total[runc]}")"
    echo "crun/runc peak RSS ratio: $(ratio "${rss_max[crun]}" "${rss_max[runc]}")"
  fi
fi
[ "${BENCH_STRICT:-0}" = 1 ] && [ $missed = 1 ] && exit 1
exit 0
