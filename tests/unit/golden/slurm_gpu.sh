#!/bin/bash
#SBATCH --account=phys123
#SBATCH --cpus-per-task=8
#SBATCH --gpus-per-node=4
#SBATCH --job-name=rgdist-critical_scan
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --open-mode=append
#SBATCH --output=/scratch/user/runs/crit/slurm-%j.out
#SBATCH --partition=gpu
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --time=1-12:00:00

# rgdist campaign job (rendered by `rgdist slurm`). Pre-emption: SIGUSR1 reaches this shell
# 300 s before the time limit; it is relayed to the ranks, which checkpoint and exit 75;
# the job then re-queues itself (at most 5 times) and resumes.
set -euo pipefail

export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
prog=(/opt/venv/bin/python -m rgdist)
campaign='/home/user/campaigns/critical scan.yaml'
run_dir=/scratch/user/runs/crit
max_requeues=5
restarts=${SLURM_RESTART_COUNT:-0}
job_ref=${SLURM_JOB_ID:-}
resume_hint="rgdist resume $run_dir"
if (( restarts == 0 )); then
  step=(srun --unbuffered "${prog[@]}" run "$campaign" --run-dir "$run_dir")
else
  step=(srun --unbuffered "${prog[@]}" resume "$run_dir")
fi

log() { echo "rgdist-slurm $(date '+%F %T'): $*"; }
log "start: job ${SLURM_JOB_ID:-?} restart $restarts on ${SLURM_JOB_NODELIST:-?}"
if (( restarts > max_requeues )); then
  log "error: restart $restarts exceeds the cap of $max_requeues re-queues; resume by hand: $resume_hint" >&2
  exit 1
fi

step_pid=
relay() {  # srun passes SIGUSR1 on to every rank (a SIGTERM would make srun kill the step)
  log "got SIG$1: asking the ranks to checkpoint"
  if [ -n "$step_pid" ]; then kill -s USR1 "$step_pid" 2>/dev/null || true; fi
}
trap 'relay USR1' USR1
trap 'relay TERM' TERM
"${step[@]}" &
step_pid=$!
rc=0
while :; do  # a trap cuts `wait` short; wait again while the step runs
  wait "$step_pid" && rc=0 || rc=$?
  kill -0 "$step_pid" 2>/dev/null || break
done
if (( rc > 128 )); then  # the step may have ended while a trap ran: collect its own status
  wait "$step_pid" 2>/dev/null && rc=0 || { r=$?; (( r == 127 )) || rc=$r; }
fi
log "step exited with code $rc"
if (( rc == 75 )); then
  if (( restarts >= max_requeues )); then
    log "error: pre-empted after $restarts re-queues (cap $max_requeues); resume by hand: $resume_hint" >&2
    exit 75
  fi
  log "checkpoint written; re-queueing job $job_ref (restart $((restarts + 1)) of at most $max_requeues)"
  if ! scontrol requeue "$job_ref"; then
    log "error: scontrol requeue failed; resume by hand: $resume_hint" >&2
    exit 75
  fi
  exit 0
fi
exit "$rc"
