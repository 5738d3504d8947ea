#!/usr/bin/env bash
# examples/demo.sh, the README's demonstration, runs to the end.
source "$(dirname "$0")/functions.sh"
requires_root
requires qemu-io qemu-img
BUILD=$BUILD "$TOP/examples/demo.sh" || fail "examples/demo.sh exited $?"
