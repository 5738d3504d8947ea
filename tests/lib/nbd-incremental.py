# Bring BACKUP up to date with export snap/B from its dirty bitmap
# against snap/A, over any NBD URI (nbds:// with a PSK file included):
# block status on qemu:dirty-bitmap:snap/A, then read every dirty extent
# from snap/B and write it into BACKUP at the same offset.
#   nbd-incremental.py URI_OF_SNAP_B A BACKUP
# Prints "copied BYTES bytes in N extents".
import os
import sys

import nbd

uri, old, backup = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = "qemu:dirty-bitmap:snap/" + old
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.add_meta_context(ctx)
h.connect_uri(uri)
if not h.can_meta_context(ctx):
    sys.exit("server does not offer " + ctx)
size = h.get_size()
if os.path.getsize(backup) != size:
    sys.exit("backup is not the size of the export")
dirty = []
pos = [0]                       # where the last reply ended


def extents(metacontext, offset, entries, err):
    if metacontext != ctx:
        return 0
    for i in range(0, len(entries), 2):
        if entries[i + 1] & 1:
            dirty.append((offset, entries[i]))
        offset += entries[i]
    pos[0] = offset
    return 0


while pos[0] < size:
    at = pos[0]
    h.block_status(min(size - at, 1 << 30), at, extents)
    if pos[0] <= at:
        sys.exit("block status made no progress at %d" % at)
fd = os.open(backup, os.O_WRONLY)
total = 0
for o, n in dirty:
    for p in range(o, o + n, 4 << 20):
        k = min(4 << 20, o + n - p)
        if os.pwrite(fd, h.pread(k, p), p) != k:
            sys.exit("short write into " + backup)
    total += n
os.fsync(fd)
os.close(fd)
h.shutdown()
print("copied %d bytes in %d extents" % (total, len(dirty)))
