#!/usr/bin/python3
"""Model-checked NBD load for tests/test-persist-crash.sh.

The volume is a sequence of 4 KiB blocks; block b at version v holds bytes
derived from (b, v), version 0 being zeros.  The model (a JSON file) keeps
the acknowledged version of each block, the one write possibly in flight,
and every snapshot with the SHA-256 the volume had when it was created
(computed from the model, not read back).  A third of the snapshots are
transient: they must be gone after a restart, and the writes acknowledged
while they stood must not.

  crashload.py run STATE SOCK FSSNAP RUNDIR     write, flush, create and
        delete snapshots until fssnapd goes away, saving the model as it goes
  crashload.py verify ...                        check the restarted fssnapd
  crashload.py summary ...                       print what was checked
"""
import hashlib, json, os, random, subprocess, sys
import nbd

BLOCK = 4096


def content(b, v):
    if v == 0:
        return bytes(BLOCK)
    seed = hashlib.sha256(b"%d:%d" % (b, v)).digest()
    return seed * (BLOCK // len(seed))


def image_sha(versions):
    h = hashlib.sha256()
    for b, v in enumerate(versions):
        h.update(content(b, v))
    return h.hexdigest()


def load_model(path, nblocks):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"versions": [0] * nblocks, "inflight": None, "snaps": [],
            "pending_create": None, "next_version": 1, "checked": 0,
            "rounds": 0, "writes": 0}


def save_model(path, m):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(m, f)
    os.replace(tmp, path)


def cli(fssnap, rundir, *args):
    r = subprocess.run([fssnap, "--run-dir", rundir] + list(args),
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return r.stdout


def connect(sock, export):
    h = nbd.NBD()
    h.set_export_name(export)
    h.connect_unix(sock)
    return h


def run(m, path, sock, fssnap, rundir):
    rng = random.Random()
    try:
        h = connect(sock, "volume")
    except nbd.Error:
        return 0                    # fssnapd was killed before we connected
    nblocks = len(m["versions"])
    m["rounds"] += 1
    try:
        while True:
            p = rng.random()
            if p < 0.85:
                b = rng.randrange(nblocks)
                v = m["next_version"]
                m["next_version"] += 1
                m["inflight"] = [b, v]
                save_model(path, m)
                h.pwrite(content(b, v), b * BLOCK)
                m["versions"][b] = v
                m["inflight"] = None
                m["writes"] += 1
            elif p < 0.90:
                h.flush()
            elif p < 0.96 and sum(1 for s in m["snaps"] if not s["deleting"]) < 5:
                transient = rng.random() < 0.33
                m["pending_create"] = image_sha(m["versions"])
                m["pending_transient"] = transient
                save_model(path, m)
                args = ["create", "-o", "transient"] if transient else ["create"]
                num = int(os.path.basename(cli(fssnap, rundir, *args).strip()))
                info = json.loads(cli(fssnap, rundir, "info", str(num), "--json"))
                m["snaps"].append({"uuid": info["uuid"], "number": num,
                                   "sha": m["pending_create"], "deleting": False,
                                   "transient": transient})
                m["pending_create"] = None
            elif m["snaps"]:
                s = rng.choice(m["snaps"])
                if not s["deleting"]:
                    s["deleting"] = True
                    save_model(path, m)
                    cli(fssnap, rundir, "delete", str(s["number"]))
                    m["snaps"].remove(s)
            save_model(path, m)
    except (nbd.Error, RuntimeError, subprocess.TimeoutExpired):
        save_model(path, m)         # fssnapd is gone: the round is over
    return 0


def read_all(sock, export, size):
    h = connect(sock, export)
    data = bytearray()
    for off in range(0, size, 1 << 20):
        data += h.pread(min(1 << 20, size - off), off)
    h.shutdown()
    return bytes(data)


def verify(m, path, sock, fssnap, rundir):
    nblocks = len(m["versions"])
    size = nblocks * BLOCK
    vol = read_all(sock, "volume", size)
    inflight = m["inflight"]
    for b, v in enumerate(m["versions"]):
        got = vol[b * BLOCK:(b + 1) * BLOCK]
        if got == content(b, v):
            continue
        if inflight and inflight[0] == b and got == content(b, inflight[1]):
            m["versions"][b] = inflight[1]      # it landed after all
            continue
        print("block %d: acknowledged version %d lost" % (b, v))
        return 1
    m["inflight"] = None
    listed = json.loads(cli(fssnap, rundir, "list", "--json"))
    by_uuid = {s["uuid"]: s for s in m["snaps"]}
    kept = []
    for s in listed:
        if s["state"] != "idle":
            print("snapshot %d came back %s" % (s["number"], s["state"]))
            return 1
        rec = by_uuid.pop(s["uuid"], None)
        if rec is not None and rec.get("transient"):
            print("transient snapshot %d came back" % s["number"])
            return 1
        if rec is None:                        # its create was cut short
            if m.get("pending_transient"):
                print("transient snapshot %d came back" % s["number"])
                return 1
            if m["pending_create"] is None:
                print("unknown snapshot %d (%s)" % (s["number"], s["uuid"]))
                return 1
            rec = {"uuid": s["uuid"], "number": s["number"],
                   "sha": m["pending_create"], "deleting": False}
        rec["deleting"] = False                # a cut delete: it is still here
        sha = hashlib.sha256(read_all(sock, "snap/%d" % s["number"], size)).hexdigest()
        if sha != rec["sha"]:
            print("snapshot %d (%s) differs from its creation image" % (s["number"], s["uuid"]))
            return 1
        m["checked"] += 1
        kept.append(rec)
    lost = [s for s in by_uuid.values()
            if not s["deleting"] and not s.get("transient")]
    m["transient_gone"] = m.get("transient_gone", 0) + sum(
        1 for s in by_uuid.values() if s.get("transient"))
    if lost:
        print("snapshots lost: %s" % [s["number"] for s in lost])
        return 1
    m["snaps"] = kept
    m["pending_create"] = None
    m["pending_transient"] = False
    save_model(path, m)
    return 0


def main():
    cmd, path, sock, fssnap, rundir = sys.argv[1:6]
    nblocks = 8 * 1024 * 1024 // BLOCK
    m = load_model(path, nblocks)
    if cmd == "run":
        return run(m, path, sock, fssnap, rundir)
    if cmd == "verify":
        return verify(m, path, sock, fssnap, rundir)
    print("crash rounds: %d, acknowledged writes: %d, snapshot images verified "
          "after restarts: %d, transient snapshots gone after restarts: %d"
          % (m["rounds"], m["writes"], m["checked"], m.get("transient_gone", 0)))
    return 0


sys.exit(main())
