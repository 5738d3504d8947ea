#!/usr/bin/env bash
# The "group" field of a create request: checked (a UUID or refused),
# recorded in the snapshot's metadata, shown by list and info, and kept
# across a restart; a snapshot without one has "group": "".
. "$(dirname "$0")/functions.sh"

img=$TESTDIR/vol.img
make_image "$img" 4M
start_fssnapd "$img" --no-fuse
g=0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9
out=$(printf '%s\n' '{"request":"create","group":"not-a-uuid"}' \
  "{\"request\":\"create\",\"group\":\"$g\"}" '{"request":"create"}' | ctl_raw)
echo "$out" | sed -n 1p | grep -q '"errno": *"EINVAL"' || fail "a bad group was taken: $out"
[ "$(fssnap list --json | json_get 'len(j)')" = 2 ] || fail "the bad create made a snapshot"
check() {
  [ "$(fssnap list --json | json_get '[s["group"] for s in j]')" = "['$g', '']" ] \
    || fail "list groups $1: $(fssnap list --json)"
  [ "$(fssnap info 0 --json | json_get 'j["group"]')" = "$g" ] || fail "info 0 group $1"
  fssnap list | grep -q "group: $g" || fail "fssnap list does not show the group $1"
  fssnap info 0 | grep -q "Group.*$g" || fail "fssnap info 0 does not show the group $1"
  fssnap info 1 | grep -q "Group.* -$" || fail "fssnap info 1 shows a group $1"
  [ "$(fssnap info 0 -o group)" = "$g" ] || fail "info -o group $1"
}
check "before the restart"
stop_fssnapd
start_fssnapd "$img" --no-fuse
check "after a restart"
echo "group recorded and kept"
