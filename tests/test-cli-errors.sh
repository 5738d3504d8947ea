#!/usr/bin/env bash
# fssnap's documented exit codes, each with one line on stderr:
# 1 usage, 2 daemon unreachable, 3 no such snapshot, 4 refused.
source "$(dirname "$0")/functions.sh"
requires_root

img=$TESTDIR/disk.img
make_image "$img" 16M
F=("$FSSNAP" --run-dir "$RUN_DIR")

# 2: nobody there (nothing sent, nothing created).
expect_exit 2 "no fssnapd is running in $RUN_DIR" "${F[@]}" list
expect_exit 2 "no fssnapd is running in $TESTDIR/nowhere" "$FSSNAP" --run-dir "$TESTDIR/nowhere" create

start_fssnapd "$img" --no-fuse

# 1: the command line itself.
expect_exit 1 "no command given" "${F[@]}"
expect_exit 1 "unknown command \"frob\"" "${F[@]}" frob
expect_exit 1 "unknown option \"--frob\"" "${F[@]}" --frob list
expect_exit 1 "option \"--run-dir\" needs a value" "$FSSNAP" --run-dir
expect_exit 1 "unknown option \"--frob\"" "${F[@]}" list --frob
expect_exit 1 "unexpected argument \"x\"" "${F[@]}" list x
expect_exit 1 "delete needs a snapshot number" "${F[@]}" delete
expect_exit 1 "\"abc\" is not a snapshot number" "${F[@]}" delete abc
expect_exit 1 "\"1x\" is not a snapshot number" "${F[@]}" info 1x
expect_exit 1 "unknown option \"-1\"" "${F[@]}" delete -1
expect_exit 1 "bad -o option \"maxsize=12q\"" "${F[@]}" create -o maxsize=12q
expect_exit 1 "bad -o option \"chunksize=1000\"" "${F[@]}" create -o chunksize=1000
expect_exit 1 "bad -o option \"bogus\"" "${F[@]}" create -o bogus
expect_exit 1 "option \"-o\" needs a value" "${F[@]}" create -o
expect_exit 1 "unknown info key \"nope\"" "${F[@]}" info -o number,nope
expect_exit 1 "create takes no argument" "${F[@]}" create a b
[ "$("${F[@]}" list --json | json_get 'len(j)')" = 0 ] || fail "a usage error created a snapshot"

# 3: no such snapshot.
expect_exit 3 "no snapshot 7" "${F[@]}" delete 7
expect_exit 3 "no snapshot 7" "${F[@]}" info 7
expect_exit 3 "no snapshot 7" "${F[@]}" info 7 --json
[ -z "$LAST_STDOUT" ] || fail "info 7 --json printed \"$LAST_STDOUT\""

# 4: refused by the daemon: a chunk size that differs from the origin's
# while snapshots exist, a backing store that cannot be created.
"${F[@]}" create -o chunksize=4k >/dev/null || fail "first create"
expect_exit 4 "chunk" "${F[@]}" create -o chunksize=8k
expect_exit 4 "cannot create snapshot" "${F[@]}" create -o "backing-store=$TESTDIR/no/such/dir"
[ "$("${F[@]}" list --json | json_get 'len(j)')" = 1 ] || fail "a refused create left a snapshot"

# The help documents the codes.
"$FSSNAP" --help | grep -q "^  3  no such snapshot" || fail "--help lacks the exit codes"
"$FSSNAPD" --help | grep -q "Exit status" || fail "fssnapd --help lacks the exit status"
"$FSSNAP" --version | grep -q "^fssnap [0-9]" || fail "--version"
stop_fssnapd
echo "cli errors ok"
