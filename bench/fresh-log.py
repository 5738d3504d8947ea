#!/usr/bin/python3
# bench/fresh-log.py OUT OFFSET SIZE CHUNK [SEED]
#
# Writes a fio iolog (version 2) for the nbd engine: one 4 KiB write in
# every CHUNK-sized slot of [OFFSET, OFFSET+SIZE), the slots in a random
# order (a seeded permutation) and the 4 KiB at a random aligned place in
# its slot.  Replayed with read_iolog=, it is a 4 KiB random write load in
# which no write lands in a slot an earlier write touched: after a fresh
# snapshot every write finds its chunk uncopied, for every peer whose
# copy-on-write granularity is CHUNK (fssnapd chunks, qcow2 clusters and
# nbdkit cow blocks are all 64 KiB by default).  fio stops when the log
# ends, so a run that exhausts it is short, never repeated.
import random
import sys


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit("usage: fresh-log.py OUT OFFSET SIZE CHUNK [SEED]")
    out, offset, size, chunk = sys.argv[1], *map(int, sys.argv[2:5])
    seed = int(sys.argv[5]) if len(sys.argv) == 6 else 1
    rnd = random.Random(seed)
    slots = list(range(size // chunk))
    rnd.shuffle(slots)
    per = max(chunk // 4096, 1)
    with open(out, "w") as f:
        f.write("fio version 2 iolog\nnbd add\nnbd open\n")
        for s in slots:
            f.write("nbd write %d 4096\n"
                    % (offset + s * chunk + rnd.randrange(per) * 4096))
        f.write("nbd close\n")
    print(len(slots))


if __name__ == "__main__":
    main()
