# shellcheck shell=bash
# Shared by the conformance scripts: where the peer suites are checked out and built.
# Sourced, not run. Nothing here is committed: the suites live under $PEER_DIR.
#
#   PEER_DIR    checkouts and build outputs (default .build/peer in the repository)
#   PEER_CACHE  Go and cargo caches (default $PEER_DIR/cache)
#   CONF_NO_UNIFIED=1  run the suite in a private mount namespace without the cgroup2 mount at
#               /sys/fs/cgroup/unified: crun 1.8 refuses this machine's hybrid layout otherwise

CONF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PEER_DIR=${PEER_DIR:-$CONF_ROOT/.build/peer}
PEER_CACHE=${PEER_CACHE:-$PEER_DIR/cache}
mkdir -p "$PEER_DIR" "$PEER_CACHE"
PEER_DIR=$(cd "$PEER_DIR" && pwd)

# conf_reexec_private "$0" "$@": with CONF_NO_UNIFIED=1, start the script again in its own mount
# namespace (unshare -m: private propagation, nothing changes outside) minus the cgroup2 mount.
conf_reexec_private() {
  [ "${CONF_NO_UNIFIED:-0}" = 1 ] && [ -z "${_CONF_PRIVATE:-}" ] || return 0
  mountpoint -q /sys/fs/cgroup/unified || return 0
  # shellcheck disable=SC2016 # expanded by the inner sh
  exec env _CONF_PRIVATE=1 unshare -m sh -c 'umount /sys/fs/cgroup/unified && exec "$0" "$@"' "$@"
}

conf_die() { echo "${CONF_NAME:-conformance}: $*" >&2; exit 2; }
conf_log() { echo "${CONF_NAME:-conformance}: $*" >&2; }

# The runtime under test, as an absolute path: the suites run it from other directories.
conf_runtime() {
  local rt=${1:-${RUNTIME:-}}
  [ -n "$rt" ] || conf_die "usage: $0 RUNTIME (path of a runc-compatible binary)"
  if [[ $rt != */* ]]; then
    rt=$(command -v "$rt") || conf_die "runtime not found in PATH: $1"
  fi
  [ -x "$rt" ] || conf_die "runtime not executable: $rt"
  # Keep a symlink as given (virtkit dispatches on argv0), only make it absolute.
  echo "$(cd "$(dirname "$rt")" && pwd)/$(basename "$rt")"
}

# peer_checkout NAME GIT_SOURCE... : a checkout of the first source that works in $PEER_DIR/NAME.
# The sources are tried in order: a local mirror (what the agents' fetch tool puts under
# /work/.mirror) first, then GitHub. An existing checkout is kept (delete it to refresh).
# A mirror may lack its largest blobs (images): those paths are left out by a sparse checkout.
peer_checkout() {
  local name=$1 dest=$PEER_DIR/$1 src missing
  shift
  [ -f "$dest/.vk-checkout" ] && return 0
  for src in "$@"; do
    [ -n "$src" ] || continue
    if [[ $src != *://* ]] && [ ! -e "$src" ]; then continue; fi
    conf_log "cloning $src into $dest"
    rm -rf "$dest"
    git clone -q --no-checkout "$src" "$dest" 2>"$PEER_DIR/$name-clone.log" || continue
    missing=$(git -C "$dest" ls-tree -r HEAD | awk '$2 == "blob" { print $3 " " $4 }' |
      while read -r sha path; do git -C "$dest" cat-file -e "$sha" 2>/dev/null || echo "$path"; done)
    if [ -n "$missing" ]; then
      conf_log "left out (blobs absent from the source): $(echo "$missing" | tr '\n' ' ')"
      # shellcheck disable=SC2046,SC2086 # one pattern per path, split on purpose
      git -C "$dest" sparse-checkout set --no-cone '/*' $(printf '!/%s\n' $missing)
    fi
    # With absent blobs git complains while writing the index, yet checks out the rest.
    git -C "$dest" checkout -q HEAD 2>>"$PEER_DIR/$name-clone.log" || [ -n "$missing" ] || continue
    git -C "$dest" rev-parse HEAD >"$dest/.vk-checkout"
    return 0
  done
  rm -rf "$dest"
  conf_die "cannot get $name: tried $* (set the source variable to a git checkout or mirror)"
}

# A results directory name for a runtime path, unique per path: Debian's runc and virtkit's
# runc link share a basename. /usr/sbin/runc -> usr_sbin_runc.
conf_result_name() { echo "$1" | sed 's|^/||; s|/|_|g'; }

# conf_compare SUMMARY BASELINE RESULTS_ROOT: the tests that fail in SUMMARY but pass in the
# baseline's summary, and back. Summary lines: "name ok|FAIL passed failed skipped".
conf_compare() {
  local summary=$1 base=$2 root=$3
  [ -n "$base" ] || return 0
  [ -d "$base" ] || base=$root/$base
  if [ ! -f "$base/summary" ]; then
    conf_log "no baseline summary in $base"
    return 0
  fi
  awk 'NR == FNR { b[$1] = $2; next }
    ($1 in b) && $2 == "FAIL" && b[$1] == "ok" { worse = worse " " $1 }
    ($1 in b) && $2 == "ok" && b[$1] == "FAIL" { better = better " " $1 }
    END {
      print "worse than baseline:" (worse == "" ? " none" : worse)
      print "better than baseline:" (better == "" ? " none" : better)
    }' "$base/summary" "$summary"
}

# conf_cgroup_cleanup START REGEX: the suites leave cgroups behind when a test fails or dies
# (and contest leaves the container's processes, when a test panics before its clean-up).
# Remove what they made: cgroup directories created since START (epoch seconds) whose path
# below the hierarchy's mount point matches REGEX (grep -E); their processes are killed first.
# Directories that other things created earlier, or that do not match, are not touched; only
# processes in another root than / (containers) are killed.
conf_cgroup_cleanup() {
  local start=$1 re=$2 dirs=() d rel p killed=0 removed=0
  while read -r d; do
    rel=${d#/sys/fs/cgroup/*/}
    [[ /$rel =~ $re ]] && dirs+=("$d")
  done < <(find /sys/fs/cgroup -mindepth 2 -depth -type d -newermt "@$start" 2>/dev/null)
  [ ${#dirs[@]} -gt 0 ] || return 0
  for d in "${dirs[@]}"; do
    while read -r p; do
      # Only container processes: they live in another root (after pivot_root), so a
      # process of something else that happens to use such a cgroup name is spared.
      [ -n "$p" ] && [ "$(readlink "/proc/$p/root" 2>/dev/null)" != / ] || continue
      kill -9 "$p" 2>/dev/null && killed=$((killed + 1))
    done <"$d/cgroup.procs" 2>/dev/null || true
  done
  [ $killed -eq 0 ] || sleep 0.5
  for d in "${dirs[@]}"; do
    rmdir "$d" 2>/dev/null && removed=$((removed + 1))
  done
  if [ $killed -gt 0 ] || [ $removed -gt 0 ]; then
    conf_log "clean-up: killed $killed leftover container processes, removed $removed cgroup dirs"
  fi
}
