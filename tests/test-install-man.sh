#!/usr/bin/env bash
# The man pages fssnapd(8) and fssnap(8) (man/*.scd, built by make) render
# without a warning from man --warnings, and say what --help says: every
# option (--long and -x) and every subcommand in a program's --help is in
# its man page's OPTIONS/COMMANDS sections, and every one there is in
# --help (counted where they are defined: option lines "  -x, --long"
# and the command lines of "Commands:" in --help; lines opening with
# "*-x*" or "*name*" in the page).  A failure names each missing option and where to add it, so
# that an option added to --help (or to the page) alone cannot go
# unnoticed.  Each page also has the sections a manual page needs.
source "$(dirname "$0")/functions.sh"
requires man scdoc
MAN=$BUILD/man
# The sources: man/ (MAN_SRC=DIR checks a draft page against a build).
MAN_SRC=${MAN_SRC:-$TOP/man}
[ -f "$MAN/fssnapd.8" ] && [ -f "$MAN/fssnap.8" ] || fail "man pages not built (make)"

errors=0
complain() { echo "MISSING: $*" >&2; errors=$((errors + 1)); }

# Option tokens of a text: --long (up to "=" or a space) and -x.
options_of() {
  grep -oE '(^|[][ ,|(*])(--[a-z][a-z0-9-]*|-[a-zA-Z])([] ,|)*=.:]|$)' |
    sed -E 's/^[][ ,|(*]//; s/[] ,|)*=.:]$//' | LC_ALL=C sort -u
}
# The lines of --help that define options or commands: "  -x, --long ..."
# anywhere, "  name [ARGS]" in the Commands: block (prose that mentions
# other tools' options does not count).
help_defs() {
  awk '/^Commands:/ { cmd = 1; next } /^[^ ]/ { cmd = 0 } /^ +-/ || (cmd && /^  [a-z]/)'
}
# The lines of the page that define them: "*--long* ...", "*name* ..."
# opening a line of OPTIONS or COMMANDS.
man_defs() {
  sections_of "$1" 'OPTIONS|COMMANDS' | grep '^\*'
}
# The scdoc sections named (a regex), without the headings.
sections_of() {
  awk -v want="$2" '/^# / { on = ($0 ~ "^# (" want ")$"); next } on' "$1"
}
# Subcommands in --help: "  name ..." lines of its "Commands:" block.
help_commands() {
  awk '/^Commands:/ { on = 1; next } /^[^ ]/ { on = 0 } on && /^  [a-z]/ { print $1 }' | LC_ALL=C sort -u
}
# Subcommands in the page: "*name*" opening a line of COMMANDS.
man_commands() {
  sections_of "$1" COMMANDS | sed -nE 's/^\*([a-z][a-z-]*)\*.*/\1/p' | LC_ALL=C sort -u
}

check_page() {  # PROGRAM SOURCE PAGE
  local prog=$1 src=$2 page=$3 help o c warnings
  help=$("$BUILD/$prog" --help) || fail "$prog --help failed"
  for o in $(echo "$help" | help_defs | options_of); do
    man_defs "$src" | options_of | grep -qxF -- "$o" ||
      complain "$prog --help has $o, $page does not: add it to OPTIONS (or COMMANDS) in $src"
  done
  for o in $(man_defs "$src" | options_of); do
    echo "$help" | help_defs | options_of | grep -qxF -- "$o" ||
      complain "$page ($src) has $o, $prog --help does not: add it to the help text of $prog"
  done
  for c in $(echo "$help" | help_commands); do
    man_commands "$src" | grep -qxF "$c" ||
      complain "$prog --help has the command \"$c\", $page does not: add \"*$c* ...\" to COMMANDS in $src"
  done
  for c in $(man_commands "$src"); do
    echo "$help" | help_commands | grep -qxF "$c" ||
      complain "$page ($src) has the command \"$c\", $prog --help does not: add it under Commands: in $prog's help"
  done
  for s in NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" FILES EXAMPLES "SEE ALSO"; do
    grep -qx "# $s" "$src" || complain "$page ($src) has no $s section"
  done
  warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$MAN/${page%(8)}.8" 2>&1 >/dev/null)
  [ -z "$warnings" ] || complain "man --warnings -l $MAN/${page%(8)}.8: $warnings"
  LC_ALL=C.UTF-8 MANWIDTH=80 man -l "$MAN/${page%(8)}.8" | grep -q "^NAME" || complain "$page does not render"
}

check_page fssnapd "$MAN_SRC/fssnapd.8.scd" "fssnapd(8)"
check_page fssnap "$MAN_SRC/fssnap.8.scd" "fssnap(8)"
# The extraction itself finds options and commands (a test that cannot
# fail proves nothing).
[ "$("$BUILD/fssnap" --help | help_commands | wc -l)" -ge 10 ] || fail "found too few commands in fssnap --help"
"$BUILD/fssnapd" --help | help_defs | options_of | grep -qx -- --run-dir || fail "options_of finds no --run-dir"
[ "$errors" -eq 0 ] || fail "$errors differences between --help and the man pages (above)"
echo "fssnapd(8), fssnap(8): $("$BUILD/fssnapd" --help | help_defs | options_of | wc -l) + $("$BUILD/fssnap" --help | help_defs | options_of | wc -l) options and $("$BUILD/fssnap" --help | help_commands | wc -l) commands agree with --help"
