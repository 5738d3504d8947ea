#!/usr/bin/env bash
# File-level backup of a live file system with restic, from a consistent
# snapshot: fssnap exec freezes the file system for an instant, mounts the
# snapshot read-only at a private directory and runs restic on it while
# the live file system keeps taking writes; the snapshot is dropped
# afterwards whatever happens.  See --help.
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/sbin:$PATH
prog=backup-restic.sh
FSSNAP=${FSSNAP:-fssnap}
RESTIC=${RESTIC:-restic}

usage() {
  cat <<EOF
Usage: $prog [--run-dir DIR] [--manifest FILE] MOUNTPOINT [RESTIC-OPTION...]

Back up the file system mounted at MOUNTPOINT (on a volume served by
fssnapd) into the restic repository named by the environment
(RESTIC_REPOSITORY or RESTIC_REPOSITORY_FILE, RESTIC_PASSWORD or
RESTIC_PASSWORD_FILE, as restic takes them), from a snapshot taken with
the file system frozen:

  fssnap exec --mount MOUNTPOINT -- restic backup ...

The repository is initialised if it does not exist yet.  restic runs in
the snapshot's root and backs up ".", so paths in the repository are
relative to MOUNTPOINT whatever private directory the snapshot is mounted
on; the snapshot gets the tags "fssnap", "fssnap-mount:MOUNTPOINT" and
"fssnap-uuid:UUID" (the fssnap snapshot's UUID), and the newest earlier
backup with the same mount tag is given as --parent, so unchanged files
are not read again.  RESTIC-OPTIONs go to "restic backup" (for example
--exclude PATTERN).

Options:
  --run-dir DIR    the fssnapd run dir (passed to fssnap); default: the
                   only one under /run/fssnap
  --manifest FILE  also write, from the same snapshot and before the
                   backup, a checksum manifest of its files to FILE: one
                   line "TYPE PATH" per entry (find -printf '%y %p'),
                   then sha256sum lines of every regular file, sorted
  -h, --help       this text

Environment: FSSNAP, RESTIC (the binaries; default: from PATH).

Exit status: restic's (0 done, 3 some files could not be read...); 125
when fssnap could not take, mount or drop the snapshot (the message says
which); 1 bad usage or a failed manifest or repository initialisation.
EOF
}

run_dir=() manifest=
while [ $# -gt 0 ]; do
  case $1 in
    --run-dir) [ $# -ge 2 ] || { echo "$prog: --run-dir needs a value" >&2; exit 1; }
               run_dir=(--run-dir "$2"); shift 2 ;;
    --manifest) [ $# -ge 2 ] || { echo "$prog: --manifest needs a value" >&2; exit 1; }
                manifest=$(realpath -m "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "$prog: unknown option \"$1\" (see --help)" >&2; exit 1 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "$prog: no MOUNTPOINT given (see --help)" >&2; exit 1; }
mnt=$(realpath "$1") || { echo "$prog: $1: no such directory" >&2; exit 1; }
shift

if ! "$RESTIC" cat config >/dev/null 2>&1; then
  "$RESTIC" init >/dev/null || { echo "$prog: cannot initialise the repository" >&2; exit 1; }
fi
tag=fssnap-mount:$mnt
parent=$("$RESTIC" snapshots --json --latest 1 --tag "$tag" 2>/dev/null |
         grep -o '"id":"[0-9a-f]*"' | tail -1 | cut -d'"' -f4) || parent=
export MANIFEST=$manifest RESTIC TAG=$tag PARENT=$parent

# Runs in the snapshot: the manifest first, then restic on the same tree.
inner='
cd "$FSSNAP_ROOT" || exit 1
if [ -n "$MANIFEST" ]; then
  { find . -printf "%y %p\n" | LC_ALL=C sort &&
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum; } >"$MANIFEST" ||
    { echo "backup-restic.sh: cannot write the manifest $MANIFEST" >&2; exit 1; }
fi
exec "$RESTIC" backup --tag fssnap --tag "$TAG" --tag "fssnap-uuid:$FSSNAP_UUID" \
  ${PARENT:+--parent "$PARENT"} "$@" .
'
exec "$FSSNAP" "${run_dir[@]}" exec --mount "$mnt" -- bash -c "$inner" "$prog" "$@"
