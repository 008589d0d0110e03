#!/usr/bin/env bash
# Runs every benchmark (convert, compress, snapshots, rss) and prints one
# summary of the goals. Each script also runs on its own: bench/convert.sh ...
# Exit status is 0 even when goals are missed; BENCH_STRICT=1 makes any
# FAIL or ERROR exit 1.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR
source "$here/lib.sh"

bench_banner
export BENCH_NESTED=1
start=$SECONDS
broken=()
for s in convert compress snapshots rss formats guest; do
  "$here/$s.sh" || broken+=("$s.sh (exit $?)")
done

echo
echo "Summary ($((SECONDS - start)) s):"
sed 's/^/  /' "$BENCH_GOALS"
for b in "${broken[@]}"; do echo "  ERROR bench/$b aborted"; done
npass=$(grep -c '^PASS' "$BENCH_GOALS" || true)
ntotal=$(wc -l <"$BENCH_GOALS")
echo "  $npass of $ntotal goals met"
if [ "${BENCH_STRICT:-0}" = 1 ] && { [ "$npass" -ne "$ntotal" ] || [ ${#broken[@]} -gt 0 ]; }; then
  exit 1
fi
