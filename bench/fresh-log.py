#!/usr/bin/python3
# bench/fresh-log.py [--file NAME] OUT OFFSET SIZE CHUNK [SEED]
#
# Writes a fio iolog (version 2) for the nbd engine: one 4 KiB write in
# every CHUNK-sized slot of [OFFSET, OFFSET+SIZE), the slots in a random
# order (a seeded permutation) and the 4 KiB at a random aligned place in
# its slot.  Replayed with read_iolog=, it is a 4 KiB random write load in
# which no write lands in a slot an earlier write touched: after a fresh
# snapshot every write finds its chunk uncopied, for every peer whose
# copy-on-write granularity is CHUNK (fssnapd chunks, qcow2 clusters and
# nbdkit cow blocks are all 64 KiB by default).  fio stops when the log
# ends, so a run that exhausts it is short, never repeated.  --file names
# the file the log writes to (default "nbd", for the nbd engine; a block
# device for libaio).
import random
import sys


def main():
    args = sys.argv[1:]
    name = "nbd"
    if args[:1] == ["--file"] and len(args) > 1:
        name, args = args[1], args[2:]
    if len(args) not in (4, 5):
        sys.exit("usage: fresh-log.py [--file NAME] OUT OFFSET SIZE CHUNK [SEED]")
    out, offset, size, chunk = args[0], *map(int, args[1:4])
    seed = int(args[4]) if len(args) == 5 else 1
    rnd = random.Random(seed)
    slots = list(range(size // chunk))
    rnd.shuffle(slots)
    per = max(chunk // 4096, 1)
    with open(out, "w") as f:
        f.write("fio version 2 iolog\n%s add\n%s open\n" % (name, name))
        for s in slots:
            f.write("%s write %d 4096\n"
                    % (name, offset + s * chunk + rnd.randrange(per) * 4096))
        f.write("%s close\n" % name)
    print(len(slots))


if __name__ == "__main__":
    main()
