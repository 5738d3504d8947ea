#!/usr/bin/env bash
# The Debian package: dpkg-buildpackage -us -uc -b on a copy of the source
# tree (the checkout stays clean) builds a .deb whose dependencies come
# from dpkg-shlibdeps, lintian reports no error, and dpkg -x of it holds
# each file where the man pages say (tests/lib/installed-files.sh), the
# units verified.  Builds the programs once (DEB_BUILD_OPTIONS=nocheck,
# parallel=2).
source "$(dirname "$0")/functions.sh"
source "$TOP/tests/lib/installed-files.sh"
requires dpkg-buildpackage dh scdoc dpkg-deb

status_before=$(git -C "$TOP" status --porcelain 2>/dev/null)
src=$TESTDIR/src/fssnap-0.2.0
mkdir -p "$src"
if git -C "$TOP" rev-parse --git-dir >/dev/null 2>&1; then
  # Tracked and new files, as they are now (uncommitted changes included).
  (cd "$TOP" && git ls-files -z --cached --others --exclude-standard |
     xargs -0 -I{} sh -c '[ -e "{}" ] && printf "%s\0" "{}"' | tar --null -T - -cf -) |
    tar -C "$src" -xf -
else
  (cd "$TOP" && tar --exclude='./build*' -cf - .) | tar -C "$src" -xf -
fi
rm -rf "$src/build" "$src"/build-*

(cd "$src" && DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -us -uc -b) \
  >"$TESTDIR/build.log" 2>&1 || { tail -40 "$TESTDIR/build.log"; fail "dpkg-buildpackage"; }
deb=$(ls "$TESTDIR"/src/fssnap_*.deb)
[ -f "$deb" ] || fail "no .deb built"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
for lib in libfuse3 libjson-c libsystemd0 libblkid1 libext2fs2; do
  [[ $depends == *"$lib"* ]] || fail "Depends lacks $lib (dpkg-shlibdeps): $depends"
done
[ "$(dpkg-deb -f "$deb" Architecture)" = "$(dpkg --print-architecture)" ] || fail "architecture"

if command -v lintian >/dev/null; then
  lintian --tag-display-limit 0 "$deb" >"$TESTDIR/lintian.log" 2>&1 || true
  cat "$TESTDIR/lintian.log"
  grep -q '^E: ' "$TESTDIR/lintian.log" && fail "lintian reports errors"
else
  echo "no lintian: not checked"
fi

root=$TESTDIR/root
dpkg -x "$deb" "$root"
check_installed "$root"
dpkg-deb -c "$deb" | grep -q 'usr/lib/libfssnap.a' && fail "the package ships the static library"
# The maintainer scripts apply the tmpfiles entry and reload systemd.
dpkg-deb -e "$deb" "$TESTDIR/control"
grep -q 'systemd-tmpfiles' "$TESTDIR/control/postinst" || fail "postinst does not run systemd-tmpfiles"
[ "$(git -C "$TOP" status --porcelain 2>/dev/null)" = "$status_before" ] || fail "the build changed the checkout"
echo "$(basename "$deb"): $(dpkg-deb -c "$deb" | wc -l) entries, lintian: $(grep -c "^[EWI]: " "$TESTDIR/lintian.log" || true) tags, no error"
