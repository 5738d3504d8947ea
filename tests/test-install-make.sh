#!/usr/bin/env bash
# make install DESTDIR=... PREFIX=/usr: both programs in /usr/sbin, the
# man pages, the units (ExecStart with this PREFIX) and tmpfiles where
# fssnapd(8) says; systemd-analyze verify passes on that tree; no library
# or header unless make install-lib; PREFIX=/opt/x moves the programs and
# the unit's ExecStart with it.
source "$(dirname "$0")/functions.sh"
source "$TOP/tests/lib/installed-files.sh"
requires make scdoc

root=$TESTDIR/root
make -s -C "$TOP" BUILD="$BUILD" install DESTDIR="$root" PREFIX=/usr >/dev/null || fail "make install"
check_installed "$root"
[ -e "$root/usr/lib/libfssnap.a" ] || [ -e "$root/usr/include/libfssnap.h" ] && fail "make install put the library in"
make -s -C "$TOP" BUILD="$BUILD" install-lib DESTDIR="$root" PREFIX=/usr >/dev/null || fail "make install-lib"
[ -f "$root/usr/lib/libfssnap.a" ] && [ -f "$root/usr/include/libfssnap.h" ] || fail "make install-lib"

opt=$TESTDIR/opt
make -s -C "$TOP" BUILD="$BUILD" install DESTDIR="$opt" PREFIX=/opt/x >/dev/null || fail "make install PREFIX=/opt/x"
[ -x "$opt/opt/x/sbin/fssnapd" ] && [ -f "$opt/opt/x/share/man/man8/fssnap.8" ] || fail "PREFIX=/opt/x not honoured"
grep -q '^ExecStart=/opt/x/sbin/fssnapd ' "$opt/lib/systemd/system/fssnapd@.service" || fail "the unit ignores PREFIX"
echo "make install: $(cd "$root" && find . -type f | wc -l) files where the man pages say"
