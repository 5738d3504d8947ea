#!/usr/bin/env bash
# A snapshot whose metadata cannot be read at start-up (here: a directory
# stands where its file was, so reading it fails with EISDIR, as an I/O
# error would) is offline: `fssnap list` and `info` show it with the
# reason, and so is the older one that may need copies it records; NBD
# refuses both, delete is refused, nothing in the state dir is rewritten;
# the next start that can read the file brings both back exact.
source "$(dirname "$0")/functions.sh"
requires_root
requires nbdcopy nbdinfo sha256sum

size=$((8 << 20))
img=$TESTDIR/disk.img
make_image "$img" "$size"
head -c "$size" /dev/urandom >"$img"
start_fssnapd "$img" --no-fuse --chunksize 64k
F=("$FSSNAP" --run-dir "$RUN_DIR")
digest() { nbdcopy "$(nbd_uri "$1")" - | sha256sum | cut -d' ' -f1; }
scribble() {
  head -c 1048576 /dev/urandom >"$TESTDIR/w"
  nbdcopy "$TESTDIR/w" "$(nbd_uri volume)"
}

"${F[@]}" create >/dev/null
scribble
"${F[@]}" create >/dev/null
scribble
sum0=$(digest snap/0)
sum1=$(digest snap/1)
stop_fssnapd

meta1=$(ls "$STATE_DIR"/disk.img.snap1.*.meta)
mv "$meta1" "$TESTDIR/meta1"
mkdir "$meta1"
before=$(cd "$STATE_DIR" && find . -type f -exec sha256sum {} + | sort)

start_fssnapd "$img" --no-fuse
list=$("${F[@]}" list)
echo "$list"
[ "$("${F[@]}" info 1 -o state)" = offline ] || fail "snapshot 1 is not offline: $list"
[ "$("${F[@]}" info 0 -o state)" = offline ] || fail "snapshot 0 is not offline: $list"
grep -q "reason: offline: cannot open" <<<"$list" || fail "list does not say why"
grep -q "snapshot 1, newer than it, is offline" <<<"$list" || fail "list does not say why 0 is offline"
"${F[@]}" info 1 | grep -q "offline" || fail "info does not say offline"
nbdinfo "$(nbd_uri snap/1)" >/dev/null 2>&1 && fail "NBD served an offline snapshot"
nbdinfo "$(nbd_uri snap/0)" >/dev/null 2>&1 && fail "NBD served an offline snapshot"
expect_exit 4 "snapshot 1 is offline" "${F[@]}" delete 1
stop_fssnapd
after=$(cd "$STATE_DIR" && find . -type f -exec sha256sum {} + | sort)
[ "$before" = "$after" ] || fail "the state dir was rewritten while offline"

rmdir "$meta1"
mv "$TESTDIR/meta1" "$meta1"
start_fssnapd "$img" --no-fuse
[ "$("${F[@]}" info 1 -o state)" = idle ] || fail "snapshot 1 did not come back"
[ "$("${F[@]}" info 0 -o state)" = idle ] || fail "snapshot 0 did not come back"
[ "$(digest snap/0)" = "$sum0" ] || fail "snapshot 0 changed"
[ "$(digest snap/1)" = "$sum1" ] || fail "snapshot 1 changed"
echo "offline while unreadable, nothing rewritten, back exact once readable"
