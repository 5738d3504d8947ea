# Sourced by tests/test-install-*.sh: check_installed ROOT checks that a
# tree made by make install (PREFIX=/usr) or by unpacking the .deb holds
# each file where fssnapd(8) and fssnap(8) say it is, and the units pass
# systemd-analyze verify against that tree.
check_installed() {
  local root=$1 f
  for f in /usr/sbin/fssnapd /usr/sbin/fssnap; do
    [ -x "$root$f" ] || fail "no executable $f in $root"
  done
  for f in /usr/share/man/man8/fssnapd.8 /usr/share/man/man8/fssnap.8; do
    [ -f "$root$f" ] || [ -f "$root$f.gz" ] || fail "no $f in $root"
  done
  # Every path under FILES in fssnapd(8) that a package installs.
  for f in $(sed -n '/^# FILES/,/^# /p' "$TOP/man/fssnapd.8.scd" | sed -nE 's/^_(\/(lib|usr)\/[^_]*)_$/\1/p'); do
    [ -f "$root$f" ] || fail "fssnapd(8) names $f under FILES; it is not in $root"
  done
  [ -f "$root/lib/systemd/system/fssnapd@.service" ] || fail "no unit in $root"
  grep -qx 'ExecStart=/usr/sbin/fssnapd --foreground .* %f' "$root/lib/systemd/system/fssnapd@.service" ||
    fail "the unit does not run /usr/sbin/fssnapd in the foreground"
  grep -q '^d /run/fssnap ' "$root/usr/lib/tmpfiles.d/fssnap.conf" || fail "tmpfiles lacks /run/fssnap"
  grep -q '^d /var/lib/fssnap ' "$root/usr/lib/tmpfiles.d/fssnap.conf" || fail "tmpfiles lacks /var/lib/fssnap"
  "$root/usr/sbin/fssnap" --version | grep -q '^fssnap ' || fail "the installed fssnap does not run"
  "$root/usr/sbin/fssnapd" --version | grep -q '^fssnapd ' || fail "the installed fssnapd does not run"
  verify_units "$root"
}

# systemd-analyze verify of both templates (as instances) in root; the
# commands they run must exist there, so /bin/sh and /bin/rm are copied in.
verify_units() {
  local root=$1 out
  command -v systemd-analyze >/dev/null || { echo "no systemd-analyze: units not verified"; return 0; }
  mkdir -p "$root/bin"
  cp -n /bin/sh /bin/rm "$root/bin/" 2>/dev/null || true
  out=$(systemd-analyze verify --man=no --root="$root" \
          fssnapd@srv-vol.img.service fssnap-attach@srv-vol.img.service 2>&1) ||
    fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify warns: $out"
  [ "$(systemd-escape --path /srv/vol.img)" = srv-vol.img ] || fail "systemd-escape disagrees with the documented instance name"
}
