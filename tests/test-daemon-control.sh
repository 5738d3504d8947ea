#!/usr/bin/env bash
# The control socket: mode 0600, other users refused (by the mode, and by
# SO_PEERCRED when the mode is loosened), malformed or unknown requests get
# an error reply on a connection that stays usable and change nothing, an
# overlong line is refused, and several clients are served at once.
source "$(dirname "$0")/functions.sh"
requires_root
requires setpriv

img=$TESTDIR/disk.img
make_image "$img" 16M
start_fssnapd "$img"
chmod 0755 "$TESTDIR"

[ "$(stat -c %a "$CTL_SOCK")" = 600 ] || fail "control.sock has mode $(stat -c %a "$CTL_SOCK")"
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }

# By the mode: nobody cannot even connect.
expect_exit 2 "Permission denied" nobody "$FSSNAP" --run-dir "$RUN_DIR" list
# By the peer credentials: with the mode loosened, the daemon itself says no.
chmod 0666 "$CTL_SOCK"
reply=$(echo '{"request":"create"}' | nobody bash -c "$(declare -f ctl_raw); ctl_raw '$CTL_SOCK'")
echo "nobody got: $reply"
[ "$(echo "$reply" | json_get 'j["ok"], j["errno"]')" = "(False, 'EACCES')" ] || fail "peer check: $reply"
expect_exit 4 "permission denied: uid 65534" nobody "$FSSNAP" --run-dir "$RUN_DIR" list
grep -q "fssnapd: warning: control: refused a client with uid 65534" "$FSSNAPD_LOG" || fail "refusal not logged"
chmod 0600 "$CTL_SOCK"
[ "$(fssnap list --json | json_get 'len(j)')" = 0 ] || fail "a refused client created a snapshot"

# Malformed requests on one connection: each gets ok:false with an errno,
# then a valid request still works on the same connection.
long=$(head -c 100000 /dev/zero | tr '\0' 'x')
ctl_raw >"$TESTDIR/replies" <<EOR
this is not json
{"request":"list"
[1,2,3]
"create"
{}
{"request":5}
{"request":"frobnicate"}
{"request":"delete"}
{"request":"delete","number":"0"}
{"request":"delete","number":-1}
{"request":"delete","number":1.5}
{"request":"info","number":true}
{"request":"list","extra":1}
{"request":"create","maxsize":-5}
{"request":"create","maxsize":"lots"}
{"request":"create","chunksize":"3k"}
{"request":"create","options":"maxsize=1x"}
{"request":"create","options":"nosuchoption"}
{"request":"create","unlink":"yes"}
{"request":"create","options":7}
{"request":"create","backing-store":"$TESTDIR/no/such/dir"}
{"request":"list"} trailing
{"request":"$long"}
{"request":"list"}
EOR
cat "$TESTDIR/replies"
/usr/bin/python3 - "$TESTDIR/replies" <<'EOP' || fail "bad replies"
import json, sys
replies = [json.loads(l) for l in open(sys.argv[1])]
assert len(replies) == 24, len(replies)
for r in replies[:-1]:
    assert r["ok"] is False and r["error"] and r["errno"].startswith("E"), r
assert replies[6]["errno"] == "EOPNOTSUPP", replies[6]
assert replies[22]["errno"] == "E2BIG", replies[22]
assert replies[-1]["ok"] is True and replies[-1]["snapshots"] == [], replies[-1]
assert replies[-1]["volume"]["size"] == 16 << 20, replies[-1]
EOP
[ "$(fssnap list --json | json_get 'len(j)')" = 0 ] || fail "a malformed request created a snapshot"
ls "$STATE_DIR" | grep -q . && fail "a malformed request left files in the state dir: $(ls "$STATE_DIR")"

# Pipelined requests, answered in order; fields override options.
printf '%s\n' '{"request":"create","options":"maxsize=1m,chunksize=4k","maxsize":"2m","mount":"/mnt"}' \
  '{"request":"info","number":0}' '{"request":"delete","number":0}' '{"request":"delete","number":0}' \
  | ctl_raw >"$TESTDIR/replies"
/usr/bin/python3 - "$TESTDIR/replies" <<'EOP' || fail "pipelined replies"
import json, sys
c, i, d, d2 = [json.loads(l) for l in open(sys.argv[1])]
assert c["ok"] and c["snapshot"]["number"] == 0, c
assert c["snapshot"]["maxsize"] == 2 << 20 and c["snapshot"]["chunksize"] == 4096, c
assert c["snapshot"]["mountpoint"] == "/mnt", c
assert i["ok"] and i["snapshots"][0]["uuid"] == c["snapshot"]["uuid"], i
assert d == {"ok": True, "number": 0}, d
assert not d2["ok"] and d2["errno"] == "ENOENT", d2
EOP

# Eight clients at once, each creating and deleting snapshots.
pids=()
for i in $(seq 8); do
  (for _ in 1 2 3; do
     n=$(fssnap create) || exit 1
     fssnap delete "${n##*/}" || exit 1
   done) &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait_exit "$pid" 60 || fail "a parallel client failed"; done
[ "$(fssnap list --json | json_get 'len(j)')" = 0 ] || fail "snapshots left after parallel create/delete"
stop_fssnapd
echo "control ok"
