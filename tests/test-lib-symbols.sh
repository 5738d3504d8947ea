#!/usr/bin/env bash
# libfssnap.a exports exactly the functions include/libfssnap.h declares
# with FSSNAP_API (the engine's internals are hidden and made local), and
# a program that uses only the public API links against it.
source "$(dirname "$0")/functions.sh"
requires nm cc

lib=$BUILD/libfssnap.a
[ -f "$lib" ] || fail "no $lib: build first"

declared=$(grep -o '^FSSNAP_API [^(]*' "$TOP/include/libfssnap.h" \
           | grep -o 'fssnap_[a-z0-9_]* *$' | tr -d ' ' | sort)
exported=$(nm -g --defined-only "$lib" | awk 'NF == 3 { print $3 }' | sort)

[ -n "$declared" ] || fail "no FSSNAP_API declaration found"
if [ "$declared" != "$exported" ]; then
  echo "libfssnap.a exports what include/libfssnap.h does not declare, or"
  echo "misses what it declares (< header, > archive):"
  diff <(echo "$declared") <(echo "$exported")
  exit 1
fi
echo "libfssnap.a exports the $(echo "$exported" | wc -l) functions of the public API, nothing else"

# A public-API program links against the public archive alone.
cat >"$TESTDIR/user.c" <<'C'
#include "libfssnap.h"
int main (void) { return fssnap_io_posix () == 0; }
C
cc -std=c11 -I"$TOP/include" -o "$TESTDIR/user" "$TESTDIR/user.c" "$lib" \
  -pthread
"$TESTDIR/user"
