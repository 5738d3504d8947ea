#!/usr/bin/env bash
# What fssnap is for, on a small image, with the binaries in build/:
#   make && sudo examples/demo.sh
# Serves a 256 MiB image with fssnapd, puts ext4 on it through a loop
# device and mounts it, keeps writing files into it, takes a snapshot
# (frozen for an instant) while the writes go on, overwrites the files the
# snapshot holds, then mounts the snapshot read-only and checks it: fsck
# finds it clean, every file it held at the snapshot reads back exactly,
# and every file the writer had finished is whole.  Cleans up whatever
# happens; exits non-zero on any mismatch.  Needs root (loop devices,
# mount), e2fsprogs and FUSE.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$top/build}
fssnapd=$build/fssnapd
fssnap=$build/fssnap
export PATH=/usr/bin:/usr/sbin:/sbin:/bin:$PATH

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (loop devices, mount)" >&2; exit 1; }
[ -x "$fssnapd" ] && [ -x "$fssnap" ] || { echo "demo: build first: make" >&2; exit 1; }
for tool in mkfs.ext4 e2fsck losetup sha256sum; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is needed" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/fssnap-demo.XXXXXX)
run=$dir/run
pid= writer= voldev= snapdev=
cleanup() {
  set +e
  [ -n "$writer" ] && kill "$writer" 2>/dev/null && wait "$writer" 2>/dev/null
  mountpoint -q "$dir/snap" && umount "$dir/snap"
  [ -n "$snapdev" ] && losetup -d "$snapdev" 2>/dev/null
  mountpoint -q "$dir/data" && umount "$dir/data"
  [ -n "$voldev" ] && losetup -d "$voldev" 2>/dev/null
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
fssnap() { "$fssnap" --run-dir "$run" "$@"; }

step "A 256 MiB volume image, served by fssnapd"
show truncate -s 256M "$dir/volume.img"
printf '$ %s\n' "fssnapd --foreground --run-dir $run --state-dir $dir/state $dir/volume.img &"
"$fssnapd" --foreground --run-dir "$run" --state-dir "$dir/state" \
  "$dir/volume.img" 2>"$dir/fssnapd.log" &
pid=$!
for _ in $(seq 200); do [ -f "$run/dev/volume" ] && break; sleep 0.05; done
grep "fssnapd: serving" "$dir/fssnapd.log" || { cat "$dir/fssnapd.log"; echo "demo: fssnapd did not start" >&2; exit 1; }

step "ext4 on the volume, through a loop device, mounted"
echo "$ fssnap attach volume"
voldev=$(fssnap attach volume)
echo "$voldev"
show mkfs.ext4 -q -E nodiscard "$voldev"
mkdir "$dir/data" "$dir/snap"
show mount "$voldev" "$dir/data"

step "Files that the snapshot will hold, with their checksums"
mkdir "$dir/data/base"
for i in $(seq 1 24); do
  head -c $((i * 37 * 1024)) /dev/urandom >"$dir/data/base/file$i"
done
(cd "$dir/data" && sha256sum base/*) >"$dir/base.sha256"
echo "24 files, $(du -sh "$dir/data/base" | cut -f1), checksums in base.sha256"

step "A writer keeps adding files while the snapshot is taken"
# Each file is written and fsynced before its checksum goes into the
# manifest, so in any consistent image a listed file is whole.
mkdir "$dir/data/churn"
(
  i=0
  while :; do
    i=$((i + 1))
    head -c $(((i % 16 + 1) * 16 * 1024)) /dev/urandom >"$dir/data/churn/f$i"
    sync "$dir/data/churn/f$i"
    (cd "$dir/data" && sha256sum "churn/f$i") >>"$dir/data/churn/MANIFEST"
    sync "$dir/data/churn/MANIFEST"
  done
) &
writer=$!
sleep 1

step "Take the snapshot: freeze, snapshot, thaw, while the writer runs"
echo "$ fssnap create --mount $dir/data"
snap=$(fssnap create --mount "$dir/data")
echo "$snap"
n=${snap##*/}
sleep 1
kill "$writer" && wait "$writer" 2>/dev/null || true
writer=
echo "the writer had finished $(wc -l <"$dir/data/churn/MANIFEST") files"

step "Overwrite every file the snapshot holds, on the live volume"
for f in "$dir"/data/base/*; do head -c 4096 /dev/zero >"$f"; done
sync -f "$dir/data"
if (cd "$dir/data" && sha256sum --quiet -c "$dir/base.sha256") 2>/dev/null; then
  echo "demo: the live files were not overwritten" >&2
  exit 1
fi
echo "the live volume now holds other data"

step "Mount the snapshot read-only and check it"
echo "$ fssnap attach $n"
snapdev=$(fssnap attach "$n")
echo "$snapdev"
show e2fsck -fn "$snapdev"
show mount -o ro,noload "$snapdev" "$dir/snap"
echo "$ (cd snap && sha256sum -c base.sha256)"
(cd "$dir/snap" && sha256sum --quiet -c "$dir/base.sha256")
echo "all 24 files hold what they held at the snapshot"
echo "$ (cd snap && sha256sum -c churn/MANIFEST)"
(cd "$dir/snap" && sha256sum --quiet -c churn/MANIFEST)
echo "all $(wc -l <"$dir/snap/churn/MANIFEST") files the writer had finished by then are whole"
show fssnap info "$n"

step "Clean up: unmount, detach, delete the snapshot, stop fssnapd"
show umount "$dir/snap"
show fssnap detach "$n"
snapdev=
show fssnap delete "$n"
show umount "$dir/data"
show fssnap detach volume
voldev=
show fssnap stats
show kill -TERM "$pid"
wait "$pid"
pid=
printf '\nDemo finished: the snapshot is a consistent ext4 image of the moment it was taken,\nwhile the live file system kept changing.\n'
