#!/usr/bin/env bash
# containerd driving a runc-compatible runtime: a private containerd, a docker-archive image
# built here, then run, run -d, exec, kill, delete through `ctr --runc-binary RUNTIME`.
#
#   scripts/containerd-test.sh RUNTIME
#
# Everything lives in a temporary directory: containerd's root, state, socket and config,
# the runtime's state (--runc-root), the IO FIFOs. containerd runs in the background
# (`containerd --config`, no systemd) and is stopped at the end, with every shim it started;
# the only traces outside are the shims' sockets under /run/containerd/s, gone with them.
# Each step checks its output and exit status; the first failure stops the test with a
# message naming the step, and containerd's log tail. Takes ~10-20 s.
#
#   CTR_TEST_TTY=0     skip the steps with a terminal (they need util-linux `script`)
#   KEEP_TMP=1         keep the temporary directory (and print it)
# Exit status: 0 all steps passed, 1 a step failed, 2 set-up problem (missing tool, no root).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "containerd-test: $*" >&2; exit 2; }
[ $# -eq 1 ] || die "usage: $0 RUNTIME (path of a runc-compatible binary)"
rt=$1
[[ $rt == */* ]] || rt=$(command -v "$rt") || die "runtime not found: $1"
[ -x "$rt" ] || die "runtime not executable: $rt"
rt="$(cd "$(dirname "$rt")" && pwd)/$(basename "$rt")" # absolute; a symlink stays one (argv0)
[ "$(id -u)" = 0 ] || die "must run as root"
for t in containerd ctr containerd-shim-runc-v2 python3; do
  command -v "$t" >/dev/null || die "$t missing (apt-get install containerd)"
done

T=$(mktemp -d /tmp/vk-ctrd.XXXXXX) # short: the socket path must fit in 108 bytes
started=$(date +%s)
SOCK=$T/containerd.sock
NS=virtkit-test
IMG=docker.io/virtkit/busybox:test
had_run_containerd=0
[ -d /run/containerd ] && had_run_containerd=1
cpid=""

cleanup() {
  local p pids
  set +e
  if [ -n "$cpid" ] && kill -0 "$cpid" 2>/dev/null; then
    # Tasks left by a failed step, then containerd itself.
    for c in $(ctr -a "$SOCK" -n "$NS" tasks ls -q 2>/dev/null); do
      ctr -a "$SOCK" -n "$NS" tasks kill -s SIGKILL "$c" >/dev/null 2>&1
      ctr -a "$SOCK" -n "$NS" tasks delete -f "$c" >/dev/null 2>&1
    done
    kill "$cpid"
    for _ in $(seq 50); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$cpid" 2>/dev/null
  fi
  # Shims outlive containerd by design: ours are those started with our socket's address.
  pids=$(pgrep -f -- "-address $SOCK( |$)" 2>/dev/null)
  for p in $pids; do kill -9 "$p" 2>/dev/null; done
  # Rootfs mounts (overlay) and the like that a failure left behind, deepest first.
  awk -v t="$T" '$2 == t || index($2, t "/") == 1 { print $2 }' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "containerd-test: kept $T" >&2
  else
    rm -rf "$T"
  fi
  # ctr puts tasks in cgroup /<namespace>/<id>: the runtime removes <id>, the parent stays.
  find /sys/fs/cgroup -mindepth 2 -maxdepth 4 -depth -type d -name "$NS" -newermt "@$started" \
    -exec rmdir {} \; 2>/dev/null
  # The shim socket directory containerd created, if it was not there before and is empty.
  if [ $had_run_containerd = 0 ]; then
    rmdir /run/containerd/s /run/containerd 2>/dev/null
  fi
}
trap cleanup EXIT

failed() {
  echo "containerd-test: FAIL: $*" >&2
  if [ -f "$T/containerd.log" ]; then
    echo "--- containerd log (last 15 lines):" >&2
    tail -15 "$T/containerd.log" >&2
  fi
  exit 1
}
step() { echo "containerd-test: $*"; }

# run_ctr NAME EXPECTED_RC CMD...: run, capture output to $T/NAME.out, check the status.
out=""
run_ctr() {
  local name=$1 want=$2 rc=0
  shift 2
  timeout 60 "$@" >"$T/$name.out" 2>&1 </dev/null || rc=$?
  # A terminal's output has CR LF line ends (and script(1) may echo a NUL): drop both.
  out=$(tr -d '\r\000' <"$T/$name.out")
  [ "$rc" = "$want" ] || failed "$name: exit status $rc, expected $want: $*"$'\n'"$out"
}
expect() { # expect NAME PATTERN: the last output holds PATTERN (grep -E).
  grep -qE -- "$2" <<<"$out" || failed "$1: output lacks /$2/:"$'\n'"$out"
}

cat >"$T/config.toml" <<EOF
version = 2
root = "$T/root"
state = "$T/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$T/opt"
  # Unused (ctr uses io.containerd.runc.v2), but the tasks service of 1.6 wants it loaded.
  [plugins."io.containerd.runtime.v1.linux"]
    runtime_root = "$T/runc-v1"
EOF

step "image: scripts/busybox-rootfs.sh --docker-archive"
"$root/scripts/busybox-rootfs.sh" --docker-archive "$T/busybox.tar" || failed "building the docker-archive"

step "starting containerd $(containerd --version | awk '{print $3}') on $SOCK"
containerd --config "$T/config.toml" >"$T/containerd.log" 2>&1 &
cpid=$!
for _ in $(seq 100); do
  ctr -a "$SOCK" version >/dev/null 2>&1 && break
  kill -0 "$cpid" 2>/dev/null || failed "containerd exited at start"
  sleep 0.1
done
ctr -a "$SOCK" version >/dev/null 2>&1 || failed "containerd did not answer on $SOCK within 10 s"

C=(ctr -a "$SOCK" -n "$NS")
RUN=(run --runc-binary "$rt" --runc-root "$T/runc-root" --fifo-dir "$T/fifo")

step "ctr images import"
run_ctr import 0 "${C[@]}" images import "$T/busybox.tar"
run_ctr images 0 "${C[@]}" images ls -q
expect images "^$IMG\$"

step "ctr run --rm: a marker on stdout"
# shellcheck disable=SC2016 # expanded by the container's shell
run_ctr run 0 "${C[@]}" "${RUN[@]}" --rm "$IMG" vk-run /bin/sh -c 'echo "marker $((6 * 7)) $(id -u)"'
expect run "^marker 42 0\$"

step "ctr run --rm: the exit status comes back"
run_ctr run-status 3 "${C[@]}" "${RUN[@]}" --rm "$IMG" vk-status /bin/sh -c 'exit 3'

step "ctr run -d: a long-running container"
# PID 1 of a PID namespace ignores signals it has no handler for: trap TERM explicitly.
run_ctr run-d 0 "${C[@]}" "${RUN[@]}" -d "$IMG" vk-long \
  /bin/sh -c 'trap "exit 0" TERM; echo up > /tmp/up; while :; do sleep 0.1; done'
for _ in $(seq 50); do
  run_ctr tasks 0 "${C[@]}" tasks ls
  grep -qE '^vk-long +[0-9]+ +RUNNING' <<<"$out" && break
  sleep 0.1
done
expect tasks '^vk-long +[0-9]+ +RUNNING'
host_pid=$(awk '$1 == "vk-long" { print $2 }' <<<"$out")
[ -d "/proc/$host_pid" ] || failed "task pid $host_pid is not a live process"

step "ctr task exec --exec-id"
# shellcheck disable=SC2016 # expanded by the container's shell
run_ctr exec 0 "${C[@]}" tasks exec --exec-id vk-x1 --fifo-dir "$T/fifo" vk-long \
  /bin/sh -c 'cat /tmp/up; echo "exec pid1=$(cat /proc/1/cmdline | tr "\0" " ")"'
# The exec'd process sees the container's files and its PID namespace (PID 1 is the task).
expect exec '^up$'
expect exec '^exec pid1=/bin/sh -c trap'
run_ctr exec-status 5 "${C[@]}" tasks exec --exec-id vk-x2 --fifo-dir "$T/fifo" vk-long /bin/sh -c 'exit 5'

if [ "${CTR_TEST_TTY:-1}" = 1 ] && command -v script >/dev/null; then
  step "ctr task exec -t (terminal through the console socket)"
  # script(1) gives ctr the terminal it wants on its stdin; the command reports its own tty.
  run_ctr exec-tty 0 script -qfec "$(printf '%q ' "${C[@]}" tasks exec -t --exec-id vk-x3 \
    --fifo-dir "$T/fifo" vk-long /bin/sh -c 'tty; echo tty-ok')" /dev/null
  expect exec-tty '/dev/pts/[0-9]+'
  expect exec-tty 'tty-ok'
fi

step "ctr task kill (SIGTERM), then the task is STOPPED"
run_ctr kill 0 "${C[@]}" tasks kill vk-long
for _ in $(seq 100); do
  run_ctr tasks 0 "${C[@]}" tasks ls
  grep -qE '^vk-long +[0-9]+ +STOPPED' <<<"$out" && break
  sleep 0.1
done
expect tasks '^vk-long +[0-9]+ +STOPPED'
[ ! -d "/proc/$host_pid" ] || grep -q '^State:.*Z' "/proc/$host_pid/status" 2>/dev/null ||
  failed "task pid $host_pid still runs after kill"

step "ctr task delete, ctr container delete"
run_ctr task-delete 0 "${C[@]}" tasks delete vk-long
run_ctr tasks 0 "${C[@]}" tasks ls -q
grep -q '^vk-long$' <<<"$out" && failed "task vk-long still listed after delete"
run_ctr container-delete 0 "${C[@]}" containers delete vk-long
run_ctr containers 0 "${C[@]}" containers ls -q
[ -z "$out" ] || failed "containers left after delete (--rm ones included):"$'\n'"$out"
# The runtime forgot the container too (its state under --runc-root).
if [ -d "$T/runc-root/$NS" ] && [ -n "$(ls -A "$T/runc-root/$NS")" ]; then
  failed "runtime state left under $T/runc-root/$NS: $(ls -A "$T/runc-root/$NS")"
fi

if [ "${CTR_TEST_TTY:-1}" = 1 ] && command -v script >/dev/null; then
  step "ctr run -t --rm (terminal)"
  run_ctr run-tty 0 script -qfec "$(printf '%q ' "${C[@]}" "${RUN[@]}" -t --rm "$IMG" vk-tty \
    /bin/sh -c 'tty; echo tty-run-ok')" /dev/null
  expect run-tty '/dev/pts/[0-9]+'
  expect run-tty 'tty-run-ok'
fi

echo "containerd-test: all steps passed with $rt"
