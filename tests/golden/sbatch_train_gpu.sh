#!/bin/bash
#SBATCH --job-name=fibtui-r2-train-1
#SBATCH --chdir=/groups/cellmap/s1/jobs/r2-train-1
#SBATCH --output=/groups/cellmap/s1/jobs/r2-train-1/stdout.log
#SBATCH --error=/groups/cellmap/s1/jobs/r2-train-1/stderr.log
#SBATCH --open-mode=append
#SBATCH --partition=gpu_a100
#SBATCH --account=cellmap
#SBATCH --qos=normal
#SBATCH --time=04:00:00
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --gres=gpu:1
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --constraint=a100
# written by fibtui (remote/sbatch.py): job r2-train-1, kind train, profile janelia-gpu

# profile setup
module load cuda/12.1
source ~/venvs/fibtui/bin/activate

job=/groups/cellmap/s1/jobs/r2-train-1
export PYTHONUNBUFFERED=1
cd "$job"
# Slurm signals this shell (B:USR1) before the time limit or on preemption:
# pass it on; training writes checkpoint.pt and exits 143 without result.json.
child= usr1= woke=
trap 'usr1=1 woke=1; [ -n "$child" ] && kill -USR1 "$child" 2>/dev/null' USR1
trap 'woke=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM
python -m remote.run "$job" &
child=$!
while :; do
    woke=
    wait "$child"; rc=$?
    [ -z "$woke" ] && break                       # the job ended
    if ! kill -0 "$child" 2>/dev/null; then         # it ended while we were signalled
        wait "$child"; r=$?; [ "$r" != 127 ] && rc=$r
        break
    fi
done
# stopped by USR1 without a result: run again, the next run resumes from checkpoint.pt
if [ -n "$usr1" ] && [ ! -e "$job/result.json" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "fibtui: USR1 received, requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID" >&2 || true
fi
exit "$rc"
