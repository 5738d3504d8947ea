# bench/peers.sh: start and stop the servers bench/run compares (sourced
# after lib.sh).  Every server is served on a unix socket in the scratch dir,
# buffered (page cache) I/O on the image, export name "volume".
#
#   peer_start ID IMAGE   start peer ID on IMAGE; sets PEER_URI, PEER_PID
#   peer_stop             stop it and remove its per-run files
#
# Peers:
#   fssnapd      build/fssnapd --no-fuse (pread/pwrite on the origin)
#   fssnapd-K    the same with K snapshots created before the run
#                (fssnap create [-o $BENCH_SNAP_OPTS], K times: by default
#                no option, i.e. durable snapshots, what a user gets)
#   fssnapd-K-t  the same with fssnap create -o transient (no syncs)
#   nbdkit       nbdkit file (cache=default: page cache)
#   nbdkit-cow   nbdkit --filter=cow file, cow-block-size=64K; the overlay is
#                a temporary file in the scratch dir
#   qemu-raw     qemu-nbd -f raw --cache=writeback --aio=threads
#   qemu-qcow2   a fresh qcow2 overlay (cluster 64 KiB) backed by the raw
#                image, served by qemu-nbd with the same options
#   ID@SIZE      a copy-on-write peer (fssnapd-K, fssnapd-K-t, nbdkit-cow,
#                qemu-qcow2) with SIZE instead of 64K as its chunk, block or
#                cluster size (fssnap create -o chunksize=SIZE,
#                cow-block-size=SIZE, cluster_size=SIZE); labelled as ID

PEER_ID= PEER_PID= PEER_URI= PEER_DIR= PEER_LOG= FSSNAPD_RUN=

peer_label() {
  case ${1%@*} in
    fssnapd) echo "fssnapd volume" ;;
    fssnapd-1) echo "fssnapd, 1 snapshot" ;;
    fssnapd-1-t) echo "fssnapd, 1 snapshot, transient" ;;
    fssnapd-*-t) local k=${1#fssnapd-}; echo "fssnapd, ${k%-t} snapshots, transient" ;;
    fssnapd-*) echo "fssnapd, ${1#fssnapd-} snapshots" ;;
    nbdkit) echo "nbdkit file" ;;
    nbdkit-cow) echo "nbdkit --filter=cow file" ;;
    qemu-raw) echo "qemu-nbd -f raw" ;;
    qemu-qcow2) echo "qemu-nbd qcow2 overlay" ;;
    *) echo "$1" ;;
  esac
}

# fssnapd_start DIR ORIGIN [ARGS...]: run dir DIR/run, state dir DIR/state.
fssnapd_start() {
  local dir=$1 origin=$2
  shift 2
  mkdir -p "$dir/run" "$dir/state"
  FSSNAPD_RUN=$dir/run
  cmdlog "$FSSNAPD --foreground --run-dir $dir/run --state-dir $dir/state $* $origin"
  start_bg "fssnapd" "$FSSNAPD" --foreground --run-dir "$dir/run" \
    --state-dir "$dir/state" "$@" "$origin"
  FSSNAPD_PID=$BG_PID
  wait_sock "$dir/run/nbd.sock" "$FSSNAPD_PID"
  wait_sock "$dir/run/control.sock" "$FSSNAPD_PID"
}

fssnap_cli() { "$FSSNAP" --run-dir "$FSSNAPD_RUN" "$@"; }

# fssnapd_create [ARGS...]: one snapshot; its number in SNAP_NUM.
fssnapd_create() {
  local out
  cmdlog "$FSSNAP --run-dir $FSSNAPD_RUN create $*"
  out=$(fssnap_cli create "$@") || die "fssnap create $* failed (see $S/logs/fssnapd.log)"
  SNAP_NUM=$(basename "$out")
}

peer_start() {
  local id=${1%@*} img=$2 k i sock bs=64K
  [ "$1" != "$id" ] && bs=${1#*@}
  PEER_ID=$id
  PEER_DIR=$S/peer
  rm -rf "$PEER_DIR"
  mkdir -p "$PEER_DIR"
  sock=$PEER_DIR/nbd.sock
  case $id in
    fssnapd|fssnapd-*)
      PEER_LOG=fssnapd
      fssnapd_start "$PEER_DIR" "$img" --no-fuse
      PEER_PID=$FSSNAPD_PID
      sock=$PEER_DIR/run/nbd.sock
      if [ "$id" != fssnapd ]; then
        k=${id#fssnapd-}
        local opts=${BENCH_SNAP_OPTS:-}
        [ "$bs" != 64K ] && opts=${opts:+$opts,}chunksize=$bs
        if [ "${k%-t}" != "$k" ]; then
          k=${k%-t}
          opts=${opts:+$opts,}transient
        fi
        for ((i = 0; i < k; i++)); do
          fssnapd_create ${opts:+-o "$opts"}
        done
      fi
      ;;
    nbdkit|nbdkit-cow)
      local filt=() args=()
      [ "$id" = nbdkit-cow ] && filt=(--filter=cow) args=(cow-block-size=$bs)
      cmdlog "TMPDIR=\$S/peer nbdkit --unix $sock --foreground ${filt[*]} file $img ${args[*]}"
      PEER_LOG=nbdkit
      start_bg nbdkit env TMPDIR="$PEER_DIR" nbdkit --unix "$sock" --foreground \
        "${filt[@]}" file "$img" "${args[@]}"
      PEER_PID=$BG_PID
      wait_sock "$sock" "$PEER_PID"
      ;;
    qemu-raw|qemu-qcow2)
      local fmt=raw file=$img
      if [ "$id" = qemu-qcow2 ]; then
        fmt=qcow2 file=$PEER_DIR/overlay.qcow2
        cmdlog "qemu-img create -f qcow2 -o cluster_size=$bs -b $img -F raw $file"
        qemu-img create -q -f qcow2 -o cluster_size="$bs" -b "$img" -F raw "$file" \
          >>"$S/logs/qemu.log" 2>&1 || die "qemu-img create failed"
      fi
      cmdlog "qemu-nbd --socket=$sock -t -f $fmt --cache=writeback --aio=threads -x volume $file"
      PEER_LOG=qemu-nbd
      start_bg qemu-nbd qemu-nbd --socket="$sock" -t -f "$fmt" --cache=writeback \
        --aio=threads -x volume "$file"
      PEER_PID=$BG_PID
      wait_sock "$sock" "$PEER_PID"
      ;;
    *) die "unknown peer $id" ;;
  esac
  PEER_URI="nbd+unix:///volume?socket=$sock"
}

# True (and forgets the peer) if it is no longer running.
peer_died() {
  [ -n "$PEER_PID" ] && kill -0 "$PEER_PID" 2>/dev/null && return 1
  wait "$PEER_PID" 2>/dev/null
  PEER_PID=
  rm -rf "$PEER_DIR"
  return 0
}

peer_stop() {
  local rc=0
  [ -n "$PEER_PID" ] || return 0
  stop_bg "$PEER_PID" || rc=$?
  # qemu-nbd exits 1 on SIGTERM... only fssnapd promises a clean 0.
  case $PEER_ID in
    fssnapd*) [ "$rc" -eq 0 ] || die "fssnapd exited with status $rc on SIGTERM (log: $S/logs/fssnapd.log)" ;;
  esac
  PEER_PID=
  rm -rf "$PEER_DIR"
}
