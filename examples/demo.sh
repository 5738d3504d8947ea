#!/usr/bin/env bash
# The whole story of fssnap on a small image, with the binaries in build/:
#   make && sudo examples/demo.sh
# Starts fssnapd on a 64 MiB image in a temporary directory, writes a
# pattern through NBD, takes a snapshot, overwrites the volume, shows that
# the snapshot still reads the old pattern while the volume reads the new
# one, deletes the snapshot and stops the daemon.  Exits non-zero on any
# mismatch.  Needs qemu-io and qemu-img (qemu-utils).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$top/build}
fssnapd=$build/fssnapd
fssnap=$build/fssnap
export PATH=/usr/bin:/usr/sbin:/sbin:$PATH

for tool in qemu-io qemu-img; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is needed (qemu-utils)" >&2; exit 1; }
done
[ -x "$fssnapd" ] && [ -x "$fssnap" ] || { echo "demo: build first: make" >&2; exit 1; }

dir=$(mktemp -d /tmp/fssnap-demo.XXXXXX)
run=$dir/run
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
# Print a command as one would type it (build/ left out), then run it.
show() {
  local a out='$'
  for a in "${@/#$build\//}"; do
    [[ $a =~ [[:space:]?*] ]] && a="'$a'"
    out+=" $a"
  done
  echo "$out"
  "$@"
}
uri() { echo "nbd+unix:///$1?socket=$run/nbd.sock"; }

step "A 64 MiB volume image, served by fssnapd"
show truncate -s 64M "$dir/volume.img"
printf '$ %s\n' "fssnapd --foreground --no-fuse --run-dir $run --state-dir $dir/state $dir/volume.img &"
"$fssnapd" --foreground --no-fuse --run-dir "$run" --state-dir "$dir/state" \
  "$dir/volume.img" 2>"$dir/fssnapd.log" &
pid=$!
for _ in $(seq 100); do grep -q "fssnapd: serving" "$dir/fssnapd.log" && break; sleep 0.05; done
grep "fssnapd: serving" "$dir/fssnapd.log" || { cat "$dir/fssnapd.log"; echo "demo: fssnapd did not start" >&2; exit 1; }

step "Write pattern 0xaa over the first 8 MiB through NBD"
show qemu-io -f raw -c "write -P 0xaa 0 8M" "$(uri volume)"

step "Take a snapshot"
echo "$ fssnap --run-dir $run create"
snapdev=$("$fssnap" --run-dir "$run" create)
echo "$snapdev"
n=${snapdev##*/}
show "$fssnap" --run-dir "$run" info "$n"

step "Overwrite the volume with 0x55 while the snapshot exists"
show qemu-io -f raw -c "write -P 0x55 0 4M" -c "write -z 4M 4M" "$(uri volume)"

step "The snapshot still reads the old pattern; the volume reads the new one"
show qemu-io -f raw -r -c "read -P 0xaa 0 8M" "$(uri "snap/$n")"
show qemu-io -f raw -r -c "read -P 0x55 0 4M" -c "read -P 0 4M 4M" "$(uri volume)"

step "Compare whole images: the snapshot against a copy made before the overwrite"
show truncate -s 64M "$dir/expected.img"
show qemu-io -f raw -c "write -P 0xaa 0 8M" "$dir/expected.img"
show qemu-img compare -f raw -F raw "$dir/expected.img" "$(uri "snap/$n")"
if qemu-img compare -q -f raw -F raw "$dir/expected.img" "$(uri volume)"; then
  echo "demo: the volume still equals the old contents" >&2
  exit 1
fi
echo "The volume differs from it, as it should."
show "$fssnap" --run-dir "$run" stats

step "Delete the snapshot and stop fssnapd"
show "$fssnap" --run-dir "$run" delete "$n"
show "$fssnap" --run-dir "$run" list
show kill -TERM "$pid"
wait "$pid"
pid=
sed 1d "$dir/fssnapd.log"
printf '\nDemo finished: the snapshot kept the old data while the volume changed.\n'
