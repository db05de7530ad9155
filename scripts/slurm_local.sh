#!/usr/bin/env bash
# A throwaway single-node Slurm cluster for tests and demos (no munge, no accounting).
#
#   scripts/slurm_local.sh start [DIR] [--no-install] [--stop-with PID]
#       writes DIR/slurm.conf (DIR: a new temp folder when omitted), starts slurmctld -D and
#       slurmd -D as root (exit 3 otherwise) in the background on free ports, waits until
#       the node is idle and prints on stdout:   export SLURM_CONF=DIR/slurm.conf
#       Installs Debian's slurm-wlm with apt-get when the daemons are missing and the caller is
#       root with apt-get (unless --no-install); otherwise exits 3 with the reason on stderr.
#       --stop-with PID: a watcher stops the cluster once process PID has ended (a test
#       runner killed before its clean-up cannot leave the daemons behind).
#   scripts/slurm_local.sh stop [DIR]
#       cancels the jobs of that cluster, then stops only the daemons that `start` launched
#       (PIDs in DIR/pids); DIR defaults to the folder of $SLURM_CONF. Removes DIR when `start`
#       created it.
#   eval "$(scripts/slurm_local.sh start)"; sbatch --wait job.sh; scripts/slurm_local.sh stop
#
# Exit codes: 0 ok, 1 the cluster failed to come up (logs in DIR), 2 usage, 3 Slurm unavailable.
set -euo pipefail

START_TIMEOUT=${START_TIMEOUT:-60}   # seconds to wait for an idle node
say() { echo "slurm_local: $*" >&2; }

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

ensure_slurm() {  # $1: 1 = installing allowed
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; then
    return 0
  fi
  if [ "$1" != 1 ]; then
    say "Slurm is not installed (slurmctld/slurmd/sbatch missing) and --no-install was given"; exit 3
  fi
  if [ "$(id -u)" != 0 ]; then
    say "Slurm is not installed and installing it needs root (apt-get install slurm-wlm)"; exit 3
  fi
  if ! command -v apt-get >/dev/null; then
    say "Slurm is not installed and apt-get is not available to install slurm-wlm"; exit 3
  fi
  say "installing slurm-wlm with apt-get"
  local log; log=$(mktemp /tmp/slurm-apt.XXXXXX.log)
  if ! { apt-get -o DPkg::Lock::Timeout=300 update -qq &&
       DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq slurm-wlm; } >"$log" 2>&1; then
    say "apt-get install slurm-wlm failed (log: $log): $(tail -n 3 "$log" | tr '\n' ' ')"; exit 3
  fi
  rm -f "$log"
  command -v slurmctld >/dev/null || { say "slurm-wlm installed but slurmctld is missing"; exit 3; }
}

port_busy() {  # $1: port; true when something listens on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {  # prints a TCP port nobody listens on, not in $1 (space-separated list)
  local p i
  for i in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    case " $1 " in *" $p "*) continue ;; esac
    port_busy "$p" || { echo "$p"; return 0; }
  done
  say "no free TCP port found"; exit 1
}

pid_is_ours() {  # $1: pid, $2: conf path; true when the process runs with our config
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$2"
}

cmd_start() {
  local dir="" install=1 created=0 stop_with=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --no-install) install=0 ;;
      --stop-with)
        [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] && kill -0 "$2" 2>/dev/null ||
          { say "--stop-with needs the PID of a running process, got '${2:-}'"; exit 2; }
        stop_with=$2; shift ;;
      -h|--help) usage ;;
      -*) say "unknown option $1"; usage ;;
      *) [ -z "$dir" ] || usage; dir=$1 ;;
    esac
    shift
  done
  ensure_slurm "$install"
  if [ "$(id -u)" != 0 ]; then
    say "the test cluster runs slurmctld/slurmd as root (SlurmUser=root); not root here"; exit 3
  fi
  if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/rgdist-slurm.XXXXXX); created=1; fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ ! -e "$dir/pids" ] || { say "$dir already holds a started cluster (stop it first)"; exit 1; }
  mkdir -p "$dir/state" "$dir/spool"
  [ "$created" = 0 ] || : >"$dir/.created_by_slurm_local"

  local cpus ctld_port slurmd_port conf="$dir/slurm.conf"
  cpus=$(nproc --all)   # not `nproc`: it honours OMP_NUM_THREADS
  ctld_port=$(free_port "")
  slurmd_port=$(free_port "$ctld_port")
  cat >"$conf" <<EOF
# written by scripts/slurm_local.sh: a single-node test cluster
ClusterName=rgdistlocal
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
AuthInfo=cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=10
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

  export SLURM_CONF="$conf"
  slurmctld -D -f "$conf" >"$dir/slurmctld.stdout" 2>&1 &
  local ctld_pid=$!
  slurmd -D -N localhost -f "$conf" >"$dir/slurmd.stdout" 2>&1 &
  local slurmd_pid=$!
  printf '%s %s\n' "$ctld_pid" "$slurmd_pid" >"$dir/pids"

  local t0=$SECONDS state=""
  while :; do
    for pid in "$ctld_pid" "$slurmd_pid"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        say "a daemon exited during start-up; logs: $dir/slurmctld.log $dir/slurmd.log"
        tail -n 5 "$dir/slurmctld.log" "$dir/slurmd.log" "$dir/slurmctld.stdout" "$dir/slurmd.stdout" >&2 2>/dev/null || true
        cmd_stop "$dir" >/dev/null 2>&1 || true
        exit 1
      fi
    done
    state=$(sinfo -h -N -n localhost -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    if (( SECONDS - t0 > START_TIMEOUT )); then
      say "node not idle after ${START_TIMEOUT}s (state '${state}'); logs in $dir"
      cmd_stop "$dir" >/dev/null 2>&1 || true
      exit 1
    fi
    sleep 0.5
  done
  if [ -n "$stop_with" ]; then
    # detached, and off the caller's stdout/stderr (a reader waiting for EOF must not hang)
    setsid bash "$(cd "$(dirname "$0")" && pwd)/$(basename "$0")" _watch "$dir" "$stop_with" </dev/null >>"$dir/watch.log" 2>&1 &
  fi
  say "cluster up in $((SECONDS - t0))s: slurmctld pid $ctld_pid port $ctld_port, slurmd pid $slurmd_pid port $slurmd_port, $cpus CPUs"
  echo "export SLURM_CONF=$conf"
}

cmd_stop() {
  local dir=${1:-}
  if [ -z "$dir" ]; then
    [ -n "${SLURM_CONF:-}" ] || { say "stop: give DIR or set SLURM_CONF"; exit 2; }
    dir=$(dirname "$SLURM_CONF")
  fi
  local conf="$dir/slurm.conf"
  [ -r "$dir/pids" ] || { say "stop: no $dir/pids (nothing started there)"; return 0; }
  local pids; read -r -a pids <"$dir/pids"
  export SLURM_CONF="$conf"
  # cancel this cluster's jobs first so that no job step outlives its slurmd
  if pid_is_ours "${pids[0]}" "$conf"; then
    local jobs
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      timeout 10 scancel $jobs 2>/dev/null || true
      local t0=$SECONDS
      while [ -n "$(timeout 5 squeue -h -o %A 2>/dev/null || true)" ] && (( SECONDS - t0 < 30 )); do
        sleep 0.5
      done
    fi
  fi
  local pid live
  for pid in "${pids[@]}"; do
    pid_is_ours "$pid" "$conf" && kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 40); do
    live=0
    for pid in "${pids[@]}"; do pid_is_ours "$pid" "$conf" && live=1; done
    [ "$live" = 1 ] || break
    sleep 0.25
  done
  for pid in "${pids[@]}"; do
    pid_is_ours "$pid" "$conf" && { say "pid $pid ignored SIGTERM; sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
  done
  rm -f "$dir/pids"
  if [ -e "$dir/.created_by_slurm_local" ]; then
    rm -rf -- "$dir"
  fi
  say "stopped the cluster of $dir"
}

cmd_watch() {  # $1: DIR, $2: PID; stop the cluster of DIR when PID ends (unless stopped already)
  local dir=$1 pid=$2
  while [ -e "$dir/pids" ] && kill -0 "$pid" 2>/dev/null; do sleep 1; done
  if [ -e "$dir/pids" ]; then
    say "process $pid has ended: stopping the cluster of $dir"
    cmd_stop "$dir"
  fi
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  _watch) [ $# -eq 3 ] || usage; cmd_watch "$2" "$3" ;;
  stop) shift; cmd_stop "$@" ;;
  *) usage ;;
esac
