#!/usr/bin/env bash
# Keep a full image backup of an fssnapd volume up to date from its
# snapshots, copying only the chunks that changed (fssnap diff), with real
# NBD clients: nbdcopy for a full copy, python3-libnbd for the changed
# extents.  See --help.
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/sbin:$PATH
prog=incremental-backup.sh
FSSNAP=${FSSNAP:-fssnap}
PYTHON=${PYTHON:-/usr/bin/python3}

usage() {
  cat <<EOF
Usage: $prog [--run-dir DIR] SNAP BACKUP.img

Bring the image file BACKUP.img up to date with snapshot SNAP of the
volume served by the fssnapd whose run dir is DIR (its control.sock and
nbd.sock).

BACKUP.img.state records the UUID and number of the snapshot that
BACKUP.img holds.  If BACKUP.img or its state file does not exist, the
whole of snap/SNAP is copied (nbdcopy).  Otherwise the recorded snapshot
OLD is looked up by its UUID and only the extents that
"fssnap diff OLD SNAP" reports are read from snap/SNAP over NBD and
written into BACKUP.img.  A full copy is made instead, with the reason on
stderr, when:
  - the recorded snapshot was deleted (its number may now belong to
    another snapshot: the UUID tells them apart);
  - fssnap diff exits 5: the change maps cannot be trusted for this pair
    (a transient snapshot lost at a restart lies between them, or damaged
    metadata);
  - the volume size differs from the backup's.
The state file is removed while BACKUP.img is being written and written
again (SNAP's UUID) once it is complete, so an interrupted run is followed
by a full copy.  The last line on stdout is
  transferred BYTES bytes (full|incremental)

Options:
  --run-dir DIR  the fssnapd run dir (passed to fssnap; DIR/nbd.sock);
                 default: the only one under /run/fssnap
  -h, --help     this text

Environment: FSSNAP (the fssnap binary, default: fssnap in PATH), PYTHON
(a python3 with the nbd module of python3-libnbd, default /usr/bin/python3).

Exit status: 0 done; 1 bad usage; 2 a step failed (fssnap, nbdcopy, a
read or a write; the message says which).
EOF
}

die() { echo "$prog: $*" >&2; exit 2; }

run_dir=
while [ $# -gt 0 ]; do
  case $1 in
    --run-dir) [ $# -ge 2 ] || { echo "$prog: --run-dir needs a value" >&2; exit 1; }
               run_dir=$2; shift 2 ;;
    --run-dir=*) run_dir=${1#--run-dir=}; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "$prog: unknown option $1 (see --help)" >&2; exit 1 ;;
    *) break ;;
  esac
done
[ $# -eq 2 ] || { echo "$prog: need SNAP and BACKUP.img (see --help)" >&2; exit 1; }
snap=$1 backup=$2 state=$2.state
[[ $snap =~ ^(0|[1-9][0-9]*)$ ]] || { echo "$prog: \"$snap\" is not a snapshot number" >&2; exit 1; }

fss() { if [ -n "$run_dir" ]; then "$FSSNAP" --run-dir "$run_dir" "$@"; else "$FSSNAP" "$@"; fi; }
if [ -z "$run_dir" ]; then
  # The one fssnapd under /run/fssnap, as fssnap itself looks for it.
  socks=(/run/fssnap/*/nbd.sock)
  [ ${#socks[@]} -eq 1 ] && [ -S "${socks[0]}" ] \
    || die "cannot tell which fssnapd under /run/fssnap to use: give --run-dir"
  run_dir=$(dirname "${socks[0]}")
fi
uri="nbd+unix:///snap/$snap?socket=$run_dir/nbd.sock"

# The UUID of snapshot number $1 now, or nothing.
uuid_of() {
  fss list --json | "$PYTHON" -c '
import json, sys
for s in json.load(sys.stdin):
    if s["number"] == int(sys.argv[1]):
        print(s["uuid"])' "$1"
}
# The number of the snapshot with UUID $1 now, or nothing.
number_of() {
  fss list --json | "$PYTHON" -c '
import json, sys
for s in json.load(sys.stdin):
    if s["uuid"] == sys.argv[1]:
        print(s["number"])' "$1"
}

snap_uuid=$(uuid_of "$snap")
[ -n "$snap_uuid" ] || die "no snapshot $snap"
size=$(fss stats --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["size"])') \
  || die "cannot read the volume size"

record_state() {
  printf 'uuid=%s\nnumber=%s\n' "$snap_uuid" "$snap" >"$state.tmp"
  mv "$state.tmp" "$state"
}

full_copy() {
  echo "$prog: full copy of snapshot $snap ($snap_uuid): $1" >&2
  rm -f "$state"
  nbdcopy "$uri" "$backup.tmp" || die "nbdcopy of snap/$snap failed"
  mv "$backup.tmp" "$backup"
  [ "$(uuid_of "$snap")" = "$snap_uuid" ] || die "snapshot $snap was deleted during the copy"
  record_state
  echo "transferred $(stat -c %s "$backup") bytes (full)"
  exit 0
}

# Copy the extents listed in the diff (JSON on fd 3) from snap/SNAP into
# BACKUP.img; prints the bytes copied.
copy_extents() {
  "$PYTHON" -c '
import json, os, sys
import nbd
diff = json.load(os.fdopen(3))
h = nbd.NBD()
h.connect_uri(sys.argv[1])
fd = os.open(sys.argv[2], os.O_WRONLY)
step = 4 << 20
for e in diff["extents"]:
    off, end = e["offset"], e["offset"] + e["length"]
    while off < end:
        n = min(step, end - off)
        buf = h.pread(n, off)
        if os.pwrite(fd, buf, off) != n:
            sys.exit("short write into " + sys.argv[2])
        off += n
os.fsync(fd)
os.close(fd)
h.shutdown()
print(diff["bytes"])' "$uri" "$backup"
}

[ -f "$backup" ] || full_copy "no backup $backup yet"
[ -f "$state" ] || full_copy "no state file $state (first run, or an interrupted one)"
old_uuid=$(sed -n 's/^uuid=//p' "$state")
old_num=$(sed -n 's/^number=//p' "$state")
[ -n "$old_uuid" ] && [ -n "$old_num" ] || full_copy "$state is damaged"
now=$(number_of "$old_uuid")
if [ -z "$now" ]; then
  other=$(uuid_of "$old_num")
  if [ -n "$other" ]; then
    full_copy "snapshot $old_num ($old_uuid) was deleted; number $old_num now belongs to another snapshot ($other)"
  fi
  full_copy "snapshot $old_num ($old_uuid) was deleted"
fi
[ "$(stat -c %s "$backup")" = "$size" ] || full_copy "the backup is not the size of the volume"

rc=0
fss diff "$now" "$snap" --json >"$backup.diff" || rc=$?
case $rc in
  0|1) ;;
  5) rm -f "$backup.diff"; full_copy "fssnap diff $now $snap: the change maps cannot be trusted" ;;
  *) rm -f "$backup.diff"; die "fssnap diff $now $snap failed (exit $rc)" ;;
esac
# Still the same snapshot after the diff: its number was not reused meanwhile.
[ "$(uuid_of "$now")" = "$old_uuid" ] || { rm -f "$backup.diff"; full_copy "snapshot $now was deleted during the diff"; }

rm -f "$state"
bytes=$(copy_extents 3<"$backup.diff") || { rm -f "$backup.diff"; die "copying the changed extents of snap/$snap failed"; }
rm -f "$backup.diff"
[ "$(uuid_of "$snap")" = "$snap_uuid" ] || die "snapshot $snap was deleted during the copy"
record_state
echo "$prog: snapshot $now -> $snap: copied the changed extents" >&2
echo "transferred $bytes bytes (incremental)"
