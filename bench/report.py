#!/usr/bin/python3
# bench/report.py: the arithmetic of bench/run (Debian python3, no packages).
#
#   report.py fio-summary FILE.json
#       print "IOPS BW_BYTES_PER_S TOTAL_IOS IO_BYTES RUNTIME_S" of a fio run
#       (the one job in it, reads or writes, whichever did I/O)
#   report.py aggregate RAW_DIR OUT_DIR
#       turn RAW_DIR/{meta.txt,samples.jsonl,notes.jsonl,commands.txt,
#       engine-*.txt} into OUT_DIR/results.json and OUT_DIR/results.md
#
# Every figure is the median of its repetitions, with min and max.  A ratio
# between two rows is computed per repetition (rep r of row A over rep r of
# row B: the two ran within minutes of each other, peers interleaved) and
# then summarised the same way; where reps cannot be paired it is the ratio
# of the medians, and says so.
import json
import os
import re
import statistics
import sys

WORKLOADS = [
    ("engine", "bench/engine: the engine alone (no NBD, no daemon)"),
    ("w1_randwrite_4k", "1. 4 KiB random writes, QD32 (fio nbd engine)"),
    ("first_touch", "First touch: one 4 KiB write into each 64 KiB chunk in random order "
     "right after a snapshot, QD32 (fio nbd engine)"),
    ("w2_seqwrite_1m", "2. 1 MiB sequential writes, QD8 (fio nbd engine)"),
    ("w3_snapshot_reads", "3. Reads of a snapshot with half its chunks copied vs reads of the volume"),
    ("w4_many_snapshots", "4. Fresh 4 KiB random writes with 1 to 16 snapshots"),
    ("w5_create_time", "5. Snapshot creation time"),
    ("w6_backup", "6. Backup: nbdcopy of a snapshot of a 10%-full ext4"),
    ("w7_peak_rss", "7. Peak RSS of fssnapd"),
    ("loop_fuse", "Through the kernel: loop device over the FUSE volume file"),
    ("loop_snapshots", "Through the kernel: snapshots, on the loop device over the FUSE volume file"),
]


# --- fio -------------------------------------------------------------------
def load_fio(path):
    with open(path) as f:
        text = f.read()
    # fio's nbd engine prints "fio: connected to NBD server" into the output.
    return json.loads(text[text.index("{"):])


def fio_summary(path):
    job = load_fio(path)["jobs"][0]
    side = job["write"] if job["write"]["io_bytes"] >= job["read"]["io_bytes"] else job["read"]
    secs = side["runtime"] / 1000.0
    print("%.3f %.0f %d %d %.3f" % (side["iops"], side["bw_bytes"], side["total_ios"],
                                    side["io_bytes"], secs))


# --- statistics --------------------------------------------------------------
def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values),
            "max": max(values), "n": len(values), "samples": values}


def paired_ratio(a, b):
    """a, b: {rep: value}.  Per-rep ratio a/b, summarised."""
    reps = sorted(set(a) & set(b))
    return summary([a[r] / b[r] for r in reps if b[r]])


def fmt(v, digits=None):
    if v is None:
        return "–"
    if digits is None:
        a = abs(v)
        digits = 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3
    return "{:,.{}f}".format(v, digits)


def fmt_sum(s, digits=None):
    if not s:
        return "–", "–"
    return fmt(s["median"], digits), "%s – %s" % (fmt(s["min"], digits), fmt(s["max"], digits))


def fmt_ratio(s):
    if not s:
        return "–"
    if s["n"] == 1:
        return "%.2f×" % s["median"]
    return "%.2f× (%.2f–%.2f)" % (s["median"], s["min"], s["max"])


# --- aggregation -------------------------------------------------------------
class Samples:
    def __init__(self, path):
        self.rows = {}          # (w, case, peer, metric) -> {rep: value}
        self.order = []
        if os.path.exists(path):
            for line in open(path):
                if not line.strip():
                    continue
                s = json.loads(line)
                key = (s["w"], s["case"], s["peer"], s["metric"])
                if key not in self.rows:
                    self.rows[key] = {}
                    self.order.append(key)
                self.rows[key][s["rep"]] = s["value"]

    def get(self, w, case, peer, metric):
        return self.rows.get((w, case, peer, metric), {})

    def keys(self, w, metric=None):
        return [k for k in self.order if k[0] == w and (metric is None or k[3] == metric)]

    def cases(self, w):
        seen = []
        for k in self.keys(w):
            if k[1] not in seen:
                seen.append(k[1])
        return seen

    def med(self, w, case, peer, metric):
        s = summary(list(self.get(w, case, peer, metric).values()))
        return s["median"] if s else None


def read_meta(path):
    meta = {}
    for line in open(path):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            meta[k] = v
    return meta


BASELINE = {  # the same server without a snapshot
    "fssnapd, 1 snapshot": "fssnapd volume", "fssnapd, 8 snapshots": "fssnapd volume",
    "fssnapd, 1 snapshot, transient": "fssnapd volume",
    "qemu-nbd qcow2 overlay": "qemu-nbd -f raw", "nbdkit --filter=cow file": "nbdkit file",
}


def rows_vs_fssnapd(sm, w, metric):
    """Rows of w, with the ratio to the fssnapd row of the same case and to
    the same server without a snapshot."""
    rows = []
    for (_, case, peer, m) in sm.keys(w, metric):
        ref_peer = "fssnapd volume" if case == "no snapshot" else "fssnapd, 1 snapshot"
        vals = sm.get(w, case, peer, m)
        row = {"case": case, "peer": peer, "metric": m, **(summary(list(vals.values())) or {})}
        row["ratio_to_fssnapd"] = paired_ratio(vals, sm.get(w, case, ref_peer, m))
        base = BASELINE.get(peer)
        if base and case != "no snapshot":
            bm = sm.med(w, "no snapshot", base, m)
            row["ratio_to_no_snapshot"] = (row["median"] / bm) if bm and "median" in row else None
        rows.append(row)
    return rows


ENGINE_ROWS = ["no snapshot", "1 snapshot, first write", "1 snapshot, repeat write",
               "8 snapshots, first write", "8 snapshots, repeat write",
               # since bench/engine measures persistence (first writes, 1 snapshot)
               "transient, 1 writer", "persistent, 1 writer",
               "transient, 8 writers", "persistent, 8 writers"]


def engine_rows(raw):
    runs = []
    header = None
    for name in sorted(os.listdir(raw)):
        if not re.match(r"engine-\d+\.txt$", name):
            continue
        text = open(os.path.join(raw, name)).read()
        header = header or text.splitlines()[0]
        vals = {}
        for label in ENGINE_ROWS:
            m = re.search(r"^%s\s+(\d+)\s+([\d.]+)\s*$" % re.escape(label), text, re.M)
            if m:
                vals[label] = float(m.group(1))
        m = re.search(r"bytes copied per byte written: 1 snapshot ([\d.]+), 8 snapshots ([\d.]+)", text)
        if m:
            vals["copied1"], vals["copied8"] = float(m.group(1)), float(m.group(2))
        runs.append(vals)
    rows = []
    for label in ENGINE_ROWS:
        reps = {i: r[label] for i, r in enumerate(runs) if label in r}
        if not reps:
            continue
        base = {i: r["no snapshot"] for i, r in enumerate(runs) if "no snapshot" in r}
        if label.endswith("writer") or label.endswith("writers"):
            label = "first write after 1 snapshot, " + label
        rows.append({"case": label, "peer": "libfssnap", "metric": "writes/s",
                     **(summary(list(reps.values())) or {}),
                     "ratio_to_no_snapshot": paired_ratio(reps, base)})
    first1 = {i: r.get("1 snapshot, first write") for i, r in enumerate(runs)}
    first8 = {i: r.get("8 snapshots, first write") for i, r in enumerate(runs)}
    extra = {
        "first_write_8_vs_1": paired_ratio({k: v for k, v in first8.items() if v},
                                           {k: v for k, v in first1.items() if v}),
        "bytes_copied_per_byte_written_1": summary([r.get("copied1") for r in runs]),
        "bytes_copied_per_byte_written_8": summary([r.get("copied8") for r in runs]),
    }
    return rows, extra, header


def aggregate(raw, out):
    meta = read_meta(os.path.join(raw, "meta.txt"))
    sm = Samples(os.path.join(raw, "samples.jsonl"))
    notes = {}
    np = os.path.join(raw, "notes.jsonl")
    if os.path.exists(np):
        for line in open(np):
            if line.strip():
                n = json.loads(line)
                notes.setdefault(n["w"], []).append(n["text"])
    commands = []
    cp = os.path.join(raw, "commands.txt")
    if os.path.exists(cp):
        commands = [l.rstrip("\n") for l in open(cp) if l.strip()]

    chunk_kib = int(meta.get("chunk", 65536)) // 1024
    W = {key: {"title": title, "rows": [], "notes": notes.get(key, [])} for key, title in WORKLOADS}

    # engine
    erows, eextra, eheader = engine_rows(raw)
    W["engine"]["rows"] = erows if any("median" in r for r in erows) else []
    W["engine"]["summary"] = eextra
    if eheader:
        W["engine"]["notes"].insert(0, eheader)
    W["engine"]["unit"] = "writes/s (one 4 KiB write per chunk, synchronous, in-process)"

    W["w1_randwrite_4k"]["rows"] = rows_vs_fssnapd(sm, "w1_randwrite_4k", "iops")
    W["w1_randwrite_4k"]["unit"] = "IOPS"
    W["first_touch"]["rows"] = rows_vs_fssnapd(sm, "first_touch", "iops")
    W["first_touch"]["unit"] = "IOPS"
    W["w2_seqwrite_1m"]["rows"] = rows_vs_fssnapd(sm, "w2_seqwrite_1m", "MBps")
    W["w2_seqwrite_1m"]["unit"] = "MB/s"

    # w3: snapshot vs volume, per pattern
    rows = []
    for case in sm.cases("w3_snapshot_reads"):
        for (_, c, peer, m) in sm.keys("w3_snapshot_reads"):
            if c != case:
                continue
            vals = sm.get("w3_snapshot_reads", c, peer, m)
            row = {"case": c, "peer": peer, "metric": m, **(summary(list(vals.values())) or {})}
            if peer != "fssnapd volume":
                row["ratio_to_volume"] = paired_ratio(vals, sm.get("w3_snapshot_reads", c, "fssnapd volume", m))
            rows.append(row)
    W["w3_snapshot_reads"]["rows"] = rows
    W["w3_snapshot_reads"]["unit"] = "IOPS (4 KiB) or MB/s (1 MiB)"

    # w4: k snapshots, per way of creating them
    rows = []
    w = "w4_many_snapshots"
    peers = []
    for k in sm.keys(w):
        if k[2] not in peers:
            peers.append(k[2])
    for peer in peers:
        ks = sorted({int(k[1]) for k in sm.keys(w) if k[2] == peer})
        one_iops = sm.get(w, "1", peer, "iops")
        one_copied = sm.med(w, "1", peer, "copied_per_written")
        for k in ks:
            iops = sm.get(w, str(k), peer, "iops")
            copied = summary(list(sm.get(w, str(k), peer, "copied_per_written").values()))
            per_chunk = summary(list(sm.get(w, str(k), peer, "copies_per_chunk").values()))
            rows.append({"case": "%d snapshot%s" % (k, "" if k == 1 else "s"), "snapshots": k,
                         "peer": peer, "metric": "iops",
                         **(summary(list(iops.values())) or {}),
                         "ratio_to_1_snapshot": paired_ratio(iops, one_iops),
                         "bytes_copied_per_byte_written": copied,
                         "copies_per_written_chunk": per_chunk,
                         "dm_snapshot_design_bytes_copied_per_byte_written":
                             (k * one_copied) if one_copied is not None else None})
    W[w]["rows"] = rows
    W[w]["unit"] = "IOPS"

    for key, unit in (("w5_create_time", "ms"), ("w6_backup", None), ("w7_peak_rss", "MiB")):
        rows = []
        for (_, c, peer, m) in sm.keys(key):
            vals = sm.get(key, c, peer, m)
            row = {"case": c, "peer": peer, "metric": m, **(summary(list(vals.values())) or {})}
            if key == "w6_backup" and peer != "fssnapd snapshot":
                ours = sm.get(key, c, "fssnapd snapshot", m)
                row["ratio_fssnapd_to_this"] = paired_ratio(ours, vals)
            rows.append(row)
        W[key]["rows"] = rows
        W[key]["unit"] = unit or "s and MiB"

    rows = []
    for (_, c, peer, m) in sm.keys("loop_fuse"):
        vals = sm.get("loop_fuse", c, peer, m)
        row = {"case": c, "peer": peer, "metric": m, **(summary(list(vals.values())) or {})}
        if peer != "loop over the image file":
            row["ratio_to_image_file"] = paired_ratio(vals, sm.get("loop_fuse", c, "loop over the image file", m))
        rows.append(row)
    W["loop_fuse"]["rows"] = rows
    W["loop_fuse"]["unit"] = "IOPS"

    rows = []
    base = sm.get("loop_snapshots", "no snapshot", "loop over fssnapd FUSE volume", "iops")
    for (_, c, peer, m) in sm.keys("loop_snapshots"):
        vals = sm.get("loop_snapshots", c, peer, m)
        rows.append({"case": c, "peer": peer, "metric": m, **(summary(list(vals.values())) or {}),
                     "ratio_to_no_snapshot": paired_ratio(vals, base) if c != "no snapshot" else None})
    W["loop_snapshots"]["rows"] = rows
    W["loop_snapshots"]["unit"] = "IOPS"

    for key in W:
        if not W[key]["rows"] and not W[key]["notes"]:
            W[key]["notes"].append("not measured in this run")

    headline = make_headline(sm, W, meta)
    goals = [{"goal": g, "compared": c, "ratio": r, "target": t,
              "met": (r["median"] >= t) if r else None} for g, c, r, t in goal_rows(sm, W)]
    result = {
        "machine": {k: meta.get(k) for k in ("cpu", "cpus", "memory", "kernel", "os", "scratch_fs")},
        "versions": {k: meta.get(k) for k in ("fssnap", "fio", "nbdkit", "qemu-nbd", "nbdcopy", "e2fsprogs")},
        "config": {k: meta.get(k) for k in ("quick", "reps", "runtime", "chunk", "image_size", "fill_offset",
                                            "region_a_size", "region_b_offset", "region_b_size",
                                            "ext4_size", "ext4_big", "ext4_keep", "snap_opts",
                                            "settle", "started", "finished", "elapsed")},
        "headline": headline,
        "goals": goals,
        "workloads": W,
        "commands": commands,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=False)
        f.write("\n")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(result, chunk_kib))


CEILING = "disk ceiling: O_DIRECT write bandwidth / chunk size"  # bench/run's CEILING_PEER


def first_touch_headline(sm):
    """Durable and transient first touch against the better peer, with the
    goals of issue 12 (1.0x and 1.5x)."""
    w, case = "first_touch", "random order, every write a first touch"
    peers = ["qemu-nbd qcow2 overlay", "nbdkit --filter=cow file"]
    meds = [(sm.med(w, case, p, "iops") or 0, p) for p in peers]
    best_med, best = max(meds)
    if not best_med:
        return []
    out = []
    for ours, goal in (("fssnapd, 1 snapshot", 1.0), ("fssnapd, 1 snapshot, transient", 1.5)):
        r = paired_ratio(sm.get(w, case, ours, "iops"), sm.get(w, case, best, "iops"))
        if r:
            out.append("Random-order first touch: %s does %s IOPS, %s the better peer (%s, %s): "
                       "goal >= %.1fx %s." % (
                           ours, fmt(sm.med(w, case, ours, "iops")), fmt_ratio(r), best,
                           fmt(best_med), goal, "met" if r["median"] >= goal else "not met"))
    ceiling = sm.get(w, case, CEILING, "iops")
    if ceiling and best_med:
        out.append("The scratch disk's ceiling for a server that writes every copied chunk to it "
                   "(O_DIRECT write bandwidth / chunk size) is %s first touches a second: "
                   "fssnapd durable reaches %s of it, transient %s; 1.5x the better peer would be "
                   "%s the ceiling." % (
                       fmt(sm.med(w, case, CEILING, "iops")),
                       fmt_ratio(paired_ratio(sm.get(w, case, "fssnapd, 1 snapshot", "iops"), ceiling)),
                       fmt_ratio(paired_ratio(sm.get(w, case, "fssnapd, 1 snapshot, transient", "iops"),
                                              ceiling)),
                       fmt_ratio(paired_ratio({r: 1.5 * v for r, v in sm.get(w, case, best, "iops").items()},
                                              ceiling))))
    case4k = "random order, 4 KiB chunks: every write covers a whole chunk"
    cow4k = sm.get(w, case4k, "nbdkit --filter=cow file", "iops")
    if cow4k:
        out.append("With 4 KiB chunks (each write covers a whole chunk): fssnapd durable %s IOPS, "
                   "transient %s, nbdkit --filter=cow file (4 KiB blocks) %s: an overlay needs no copy "
                   "for a whole-block write, copy-on-write still copies the old block (durable %s, "
                   "transient %s the overlay)." % (
                       fmt(sm.med(w, case4k, "fssnapd, 1 snapshot", "iops")),
                       fmt(sm.med(w, case4k, "fssnapd, 1 snapshot, transient", "iops")),
                       fmt(sm.med(w, case4k, "nbdkit --filter=cow file", "iops")),
                       fmt_ratio(paired_ratio(sm.get(w, case4k, "fssnapd, 1 snapshot", "iops"), cow4k)),
                       fmt_ratio(paired_ratio(sm.get(w, case4k, "fssnapd, 1 snapshot, transient", "iops"),
                                              cow4k))))
    return out


def goal_rows(sm, W):
    """The goals of issue 12: (goal, what is compared, ratio summary, target)."""
    out = []
    w, case = "first_touch", "random order, every write a first touch"
    peers = ["qemu-nbd qcow2 overlay", "nbdkit --filter=cow file"]
    best_med, best = max((sm.med(w, case, p, "iops") or 0, p) for p in peers)
    for ours, goal, what in (("fssnapd, 1 snapshot", 1.0, "durable"),
                             ("fssnapd, 1 snapshot, transient", 1.5, "transient")):
        if best_med:
            out.append(("first touch, %s" % what, "%s / %s" % (ours, best),
                        paired_ratio(sm.get(w, case, ours, "iops"), sm.get(w, case, best, "iops")),
                        goal))
    w1 = "w1_randwrite_4k"
    v = sm.get(w1, "no snapshot", "fssnapd volume", "iops")
    out.append(("no snapshot, 4 KiB random writes", "fssnapd volume / nbdkit file",
                paired_ratio(v, sm.get(w1, "no snapshot", "nbdkit file", "iops")), 1.0))
    r8 = next((r for r in W["w4_many_snapshots"]["rows"]
               if r["snapshots"] == 8 and r["peer"] == "fssnapd (default options)"), None)
    out.append(("8 snapshots, fresh writes", "8 snapshots / 1 snapshot (durable)",
                r8.get("ratio_to_1_snapshot") if r8 else None, 0.9))
    out.append(("every chunk copied, 4 KiB random writes", "1 snapshot, all copied / no snapshot",
                paired_ratio(sm.get(w1, "snapshot, every chunk copied", "fssnapd, 1 snapshot", "iops"), v),
                0.9))
    lw, lp = "loop_snapshots", "loop over fssnapd FUSE volume"
    lb = sm.get(lw, "no snapshot", lp, "iops")
    l1 = sm.get(lw, "1 snapshot, first touch", lp, "iops")
    out.append(("through the kernel (loop over FUSE): 8 snapshots", "8 snapshots / 1 snapshot, first touch",
                paired_ratio(sm.get(lw, "8 snapshots, first touch", lp, "iops"), l1), 0.9))
    out.append(("through the kernel (loop over FUSE): every chunk copied",
                "1 snapshot, all copied / no snapshot",
                paired_ratio(sm.get(lw, "1 snapshot, every chunk copied", lp, "iops"), lb), 0.9))
    return out


def make_headline(sm, W, meta):
    h = first_touch_headline(sm)
    w1 = "w1_randwrite_4k"
    f1 = sm.get(w1, "fresh snapshot", "fssnapd, 1 snapshot", "iops")
    for ours in ("fssnapd, 1 snapshot", "fssnapd, 1 snapshot, transient"):
        fo = sm.get(w1, "fresh snapshot", ours, "iops")
        if not fo:
            continue
        parts = []
        for peer in ("qemu-nbd qcow2 overlay", "nbdkit --filter=cow file"):
            r = paired_ratio(fo, sm.get(w1, "fresh snapshot", peer, "iops"))
            if r:
                parts.append("%s the IOPS of %s (%s)" % (
                    fmt_ratio(r), peer, fmt(sm.med(w1, "fresh snapshot", peer, "iops"))))
        h.append("4 KiB random writes (QD32) right after a snapshot, every write copying a "
                 "64 KiB chunk: %s (%s) does %s IOPS: %s." % (
                     "fssnapd" if ours.endswith("snapshot") else "fssnapd with `-o transient`",
                     "durable snapshots, the default" if ours.endswith("snapshot") else "no syncs, like the peers",
                     fmt(sm.med(w1, "fresh snapshot", ours, "iops")), ", ".join(parts)))
    v = sm.get(w1, "no snapshot", "fssnapd volume", "iops")
    if v:
        parts = []
        for peer in ("nbdkit file", "qemu-nbd -f raw"):
            r = paired_ratio(v, sm.get(w1, "no snapshot", peer, "iops"))
            if r:
                parts.append("%s %s" % (fmt_ratio(r), peer))
        h.append("Without a snapshot the fssnapd volume does %s IOPS of 4 KiB random writes: %s." %
                 (fmt(sm.med(w1, "no snapshot", "fssnapd volume", "iops")), ", ".join(parts)))
    c = sm.get(w1, "snapshot, every chunk copied", "fssnapd, 1 snapshot", "iops")
    if c and v:
        h.append("Once every chunk is copied, fssnapd's 4 KiB writes run at %s of its no-snapshot "
                 "rate (right after the snapshot: %s)." % (
                     fmt_ratio(paired_ratio(c, v)), fmt_ratio(paired_ratio(f1, v)) if f1 else "–"))
    allrows = W["w4_many_snapshots"]["rows"]
    for peer in sorted({r["peer"] for r in allrows}):
        rows = [r for r in allrows if r["peer"] == peer]
        last = rows[-1]
        r8 = next((r for r in rows if r["snapshots"] == 8), None)
        txt = "%s: with %d snapshots fresh writes run at %s the 1-snapshot rate" % (
            peer, last["snapshots"], fmt_ratio(last.get("ratio_to_1_snapshot")))
        if r8 and r8 is not last:
            txt += " (8 snapshots: %s)" % fmt_ratio(r8.get("ratio_to_1_snapshot"))
        cps = [fmt(r["bytes_copied_per_byte_written"]["median"])
               for r in rows if r.get("bytes_copied_per_byte_written")]
        if cps:
            txt += "; bytes copied per byte written: %s for %s snapshots (dm-snapshot's design " \
                   "copies once per snapshot: %s)" % (
                       " / ".join(cps), " / ".join(str(r["snapshots"]) for r in rows),
                       " / ".join(fmt(r["dm_snapshot_design_bytes_copied_per_byte_written"])
                                  for r in rows))
        h.append(txt + ".")
    w6 = "w6_backup"
    ts = sm.get(w6, "nbdcopy time", "fssnapd snapshot", "s")
    tk = sm.get(w6, "nbdcopy time", "nbdkit file", "s")
    if ts and tk:
        h.append("Backup of a 10%%-full ext4 whose deleted file is still allocated in the image: "
                 "nbdcopy of the snapshot reads %s MiB in %s s, of the image via nbdkit file %s MiB "
                 "in %s s." % (
                     fmt(sm.med(w6, "bytes read by the server", "fssnapd snapshot", "MiB")),
                     fmt(sm.med(w6, "nbdcopy time", "fssnapd snapshot", "s")),
                     fmt(sm.med(w6, "bytes read by the server", "nbdkit file", "MiB")),
                     fmt(sm.med(w6, "nbdcopy time", "nbdkit file", "s"))))
    ct = sm.med("w5_create_time", "sparse 1T, no file system", "fssnapd", "ms")
    rss = [r for r in W["w7_peak_rss"]["rows"] if "median" in r]
    if ct is not None or rss:
        txt = []
        if ct is not None:
            txt.append("creating a snapshot of a sparse 1 TiB volume takes %s ms" % fmt(ct))
        if rss:
            txt.append("fssnapd peaks at %s MiB RSS serving it with 8 snapshots under write load"
                       % fmt(rss[-1]["median"]))
        line = "; ".join(txt)
        h.append(line[:1].upper() + line[1:] + ".")
    return h


def markdown(r, chunk_kib):
    o = []
    cfg = r["config"]
    o.append("# fssnap benchmarks\n")
    o.append("Generated by `bench/run` (`make bench`)%s. Chunk size %d KiB (fssnapd default; "
             "qcow2 cluster and nbdkit cow block set to the same). Each figure: median of %s runs, "
             "min – max beside it; ratios are per repetition (peers interleaved within a repetition), "
             "then median (min–max).\n" % (
                 " in quick mode (1 rep, tiny sizes: not for quoting)" if cfg.get("quick") == "1" else "",
                 chunk_kib, cfg.get("reps")))
    o.append("## Headline\n")
    for line in r["headline"]:
        o.append("- " + line)
    o.append("")
    o.append("## Goals (issue 12)\n")
    o.append("| goal | compared | ratio, median (min–max) | target | met |\n|---|---|---:|---:|---|")
    for g in r["goals"]:
        o.append("| %s | %s | %s | >= %.1fx | %s |" % (
            g["goal"], g["compared"], fmt_ratio(g["ratio"]), g["target"],
            "not measured" if g["met"] is None else "yes" if g["met"] else "no"))
    o.append("")
    o.append("## Machine and versions\n")
    o.append("| | |\n|---|---|")
    for k, v in list(r["machine"].items()) + list(r["versions"].items()):
        o.append("| %s | %s |" % (k, v))
    o.append("| run | %s to %s, %s s |" % (cfg.get("started"), cfg.get("finished"), cfg.get("elapsed")))
    o.append("")
    o.append("## Setup\n")
    gib = 1024 ** 3
    mib = 1024 ** 2
    o.append(
        "- Scratch image: %s MiB, %s, in a temp dir under /var/tmp. "
        "Every server uses buffered I/O on it (fssnapd pread/pwrite, `nbdkit file` cache=default, "
        "`qemu-nbd --cache=writeback --aio=threads`), on a unix socket; fio's nbd engine sends no "
        "flushes. fssnapd runs with `--no-fuse` for the NBD workloads; its snapshots are created "
        "with `fssnap create%s` (the default: durable, the copy synced before the write goes on) "
        "or, in rows marked transient, with `-o transient` (no syncs, like the peers).\n"
        "- Region A = the first %s MiB: fresh-snapshot random writes replay a log from "
        "`bench/fresh-log.py` with one 4 KiB write per 64 KiB slot in random order, so every write "
        "lands in an uncopied chunk for every peer (fssnapd's `chunks_copied` confirms one copy per "
        "write). Region B = %s MiB at %s MiB: no-snapshot and every-chunk-copied random writes "
        "(fio's random map), 1 MiB sequential writes (one size-based pass; the first pass after a "
        "snapshot is the first touch), reads.\n"
        "- Time-based fio runs last %s s. Between peers the scratch data is synced (untimed).\n" % (
            int(cfg["image_size"]) // mib,
            "filled with data by fio (no holes)" if cfg.get("fill_offset") in ("0", None)
            else "sparse except region B (quick mode)",
            (" -o " + cfg["snap_opts"]) if cfg.get("snap_opts") else "",
            int(cfg["region_a_size"]) // mib, int(cfg["region_b_size"]) // mib,
            int(cfg["region_b_offset"]) // mib, cfg.get("runtime")))
    for key, _ in WORKLOADS:
        wl = r["workloads"][key]
        o.append("## %s\n" % wl["title"])
        rows = wl["rows"]
        if rows:
            extra_cols = []
            for col, title in (("ratio_to_fssnapd", "ratio to fssnapd"),
                               ("ratio_to_no_snapshot", "vs same server, no snapshot"),
                               ("ratio_to_volume", "ratio to volume"),
                               ("ratio_to_1_snapshot", "ratio to 1 snapshot"),
                               ("bytes_copied_per_byte_written", "bytes copied / byte written"),
                               ("copies_per_written_chunk", "copies per written chunk"),
                               ("dm_snapshot_design_bytes_copied_per_byte_written",
                                "dm-snapshot design (k copies)"),
                               ("ratio_fssnapd_to_this", "fssnapd / this"),
                               ("ratio_to_image_file", "ratio to image file")):
                if any(row.get(col) is not None for row in rows):
                    extra_cols.append((col, title))
            o.append("| case | server | unit | median | min – max |" +
                     "".join(" %s |" % t for _, t in extra_cols))
            o.append("|---|---|---|---:|---:|" + "---:|" * len(extra_cols))
            for row in rows:
                med, rng = fmt_sum(row if "median" in row else None)
                cells = []
                for col, _ in extra_cols:
                    v = row.get(col)
                    if isinstance(v, dict):
                        if col in ("bytes_copied_per_byte_written", "copies_per_written_chunk"):
                            cells.append(fmt(v["median"], 2))
                        else:
                            cells.append(fmt_ratio(v))
                    elif isinstance(v, float):
                        cells.append(("%.2f×" % v) if col.startswith("ratio") else fmt(v, 2))
                    else:
                        cells.append("–")
                o.append("| %s | %s | %s | %s | %s |%s" % (
                    row["case"], row["peer"], row["metric"], med, rng,
                    "".join(" %s |" % c for c in cells)))
            o.append("")
        if key == "engine" and wl.get("summary"):
            s = wl["summary"]
            if s.get("first_write_8_vs_1"):
                o.append("First write with 8 snapshots vs 1: %s (writes/s ratio); bytes copied per "
                         "byte written (over both passes): 1 snapshot %s, 8 snapshots %s.\n" % (
                             fmt_ratio(s["first_write_8_vs_1"]),
                             fmt((s.get("bytes_copied_per_byte_written_1") or {}).get("median")),
                             fmt((s.get("bytes_copied_per_byte_written_8") or {}).get("median"))))
        for n in wl["notes"]:
            o.append("- " + n)
        if wl["notes"]:
            o.append("")
    o.append("## Commands\n")
    o.append("As run (`$S` is the scratch dir; fio job files are in `bench/fio-jobs/`):\n")
    o.append("```")
    o.extend(r["commands"])
    o.append("```")
    return "\n".join(o) + "\n"


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "fio-summary":
        fio_summary(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "aggregate":
        aggregate(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__ if False else "usage: report.py fio-summary FILE | aggregate RAW OUT")


if __name__ == "__main__":
    main()
