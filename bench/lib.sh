# bench/lib.sh: helpers for bench/run (sourced).
#
#   log MSG               progress on stderr, with the seconds since start
#   die MSG               log and exit 1 (the EXIT trap cleans up)
#   bench_init            make the scratch dir $S under $BENCH_TMP (/var/tmp)
#                         and install the cleanup trap
#   start_bg NAME CMD...  run CMD in the background, output in $S/logs/NAME.log;
#                         its pid in $BG_PID; stopped at exit if still running
#   stop_bg PID           SIGTERM, wait (SIGKILL after 20 s); returns its status
#   wait_sock PATH PID    wait until PATH is a socket (fail if PID dies)
#   track_loop DEV, track_mount DIR   undone at exit
#   cmdlog CMD...         remember CMD (with $S written as $S) for results.md
#   sample W CASE PEER REP METRIC VALUE   one measurement, to samples.jsonl
#   note W TEXT           a remark for workload W, to notes.jsonl
#   fio_job JOB NAME VAR=VAL...   run bench/fio-jobs/JOB.fio with those
#                         variables, JSON to $RAW/fio/NAME.json; sets FIO_IOPS,
#                         FIO_BW (bytes/s), FIO_IOS, FIO_BYTES, FIO_SECS
#   now_ns                monotonic-ish wall clock in nanoseconds

BENCH_T0=$SECONDS
log() { printf '[bench %4ds] %s\n' $((SECONDS - BENCH_T0)) "$*" >&2; }
die() { log "error: $*"; exit 1; }

_bg_pids=()
_job_pid=
_loops=()
_mounts=()

bench_cleanup() {
  local rc=$? i pid m
  set +e
  trap - EXIT INT TERM
  # First the client (fio) that may hold a loop device or a mount open.
  if [ -n "$_job_pid" ] && kill -0 "$_job_pid" 2>/dev/null; then
    kill -TERM "$_job_pid" 2>/dev/null
    wait "$_job_pid" 2>/dev/null
  fi
  for ((i = ${#_mounts[@]} - 1; i >= 0; i--)); do
    umount "${_mounts[i]}" 2>/dev/null || umount -l "${_mounts[i]}" 2>/dev/null
  done
  for ((i = ${#_loops[@]} - 1; i >= 0; i--)); do
    losetup -d "${_loops[i]}" 2>/dev/null
  done
  for pid in "${_bg_pids[@]}"; do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && stop_bg "$pid" >/dev/null 2>&1
  done
  if [ -n "${S:-}" ] && [ -d "$S" ]; then
    # FUSE mounts an fssnapd that died may have left behind.
    awk -v s="$S/" 'index($2, s) == 1 { print $2 }' /proc/mounts | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept scratch dir $S"; else rm -rf "$S"; fi
  fi
  exit "$rc"
}

bench_init() {
  local base=${BENCH_TMP:-/var/tmp}
  mkdir -p "$base"
  S=$(mktemp -d "$base/fssnap-bench.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  mkdir -p "$S/logs"
}

start_bg() {
  local name=$1
  shift
  "$@" >>"$S/logs/$name.log" 2>&1 </dev/null &
  BG_PID=$!
  _bg_pids+=("$BG_PID")
}

stop_bg() {
  local pid=$1 i rc=0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "process $pid did not stop within 20 s of SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || rc=$?
  for i in "${!_bg_pids[@]}"; do
    [ "${_bg_pids[i]}" = "$pid" ] && unset '_bg_pids[i]'
  done
  return "$rc"
}

wait_sock() {
  local path=$1 pid=$2 i
  for ((i = 0; i < 400; i++)); do
    [ -S "$path" ] && return 0
    kill -0 "$pid" 2>/dev/null || die "server $pid exited before creating $path"
    sleep 0.05
  done
  die "no socket $path after 20 s"
}

track_loop() { _loops+=("$1"); }
untrack_loop() {
  local i
  for i in "${!_loops[@]}"; do [ "${_loops[i]}" = "$1" ] && unset '_loops[i]'; done
  _loops=("${_loops[@]}")
}
track_mount() { _mounts+=("$1"); }
untrack_mount() {
  local i
  for i in "${!_mounts[@]}"; do [ "${_mounts[i]}" = "$1" ] && unset '_mounts[i]'; done
  _mounts=("${_mounts[@]}")
}

# Commands as run, with the scratch dir and the tree replaced by names.
cmdlog() {
  local line="$*"
  line=${line//"$S"/'$S'}
  line=${line//"$TOP"/.}
  grep -qxF -- "$line" "$RAW/commands.txt" 2>/dev/null || printf '%s\n' "$line" >>"$RAW/commands.txt"
}

_json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

sample() {
  local w=$1 case=$2 peer=$3 rep=$4 metric=$5 value=$6
  printf '{"w":%s,"case":%s,"peer":%s,"rep":%s,"metric":%s,"value":%s}\n' \
    "$(_json_str "$w")" "$(_json_str "$case")" "$(_json_str "$peer")" "$rep" \
    "$(_json_str "$metric")" "$value" >>"$RAW/samples.jsonl"
}

note() {
  printf '{"w":%s,"text":%s}\n' "$(_json_str "$1")" "$(_json_str "$2")" >>"$RAW/notes.jsonl"
}

now_ns() { date +%s%N; }

FIO_TIMEOUT_SLACK=${FIO_TIMEOUT_SLACK:-120}
fio_job() {
  local job=$1 name=$2 out rc=0
  shift 2
  out=$RAW/fio/$name.json
  mkdir -p "$RAW/fio"
  cmdlog "env $* fio --output-format=json --output=OUT bench/fio-jobs/$job.fio"
  # In the background, so that a signal to bench/run is handled at once
  # (bash runs traps only between foreground commands) and fio is stopped.
  env "$@" timeout "$((RUNTIME * 4 + FIO_TIMEOUT_SLACK))" \
    fio --output-format=json --output="$out" "$TOP/bench/fio-jobs/$job.fio" \
    >>"$S/logs/fio.log" 2>&1 </dev/null &
  _job_pid=$!
  wait "$_job_pid" || rc=$?
  _job_pid=
  if [ "$rc" -ne 0 ]; then
    tail -20 "$S/logs/fio.log" >&2
    [ "$rc" -eq 124 ] && die "fio $job ($name) did not finish: timed out (see above)"
    die "fio $job ($name) failed with status $rc"
  fi
  read -r FIO_IOPS FIO_BW FIO_IOS FIO_BYTES FIO_SECS < <("$PY" "$TOP/bench/report.py" fio-summary "$out") ||
    die "cannot read $out"
}
