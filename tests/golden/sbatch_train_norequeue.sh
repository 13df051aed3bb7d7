#!/bin/bash
#SBATCH --job-name=fibtui-r2-train-1
#SBATCH --chdir=/scratch/s/jobs/r2-train-1
#SBATCH --output=/scratch/s/jobs/r2-train-1/stdout.log
#SBATCH --error=/scratch/s/jobs/r2-train-1/stderr.log
#SBATCH --open-mode=append
#SBATCH --time=30
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --gpus=a100:2
#SBATCH --no-requeue
#SBATCH --signal=B:USR1@120
# written by fibtui (remote/sbatch.py): job r2-train-1, kind train, profile short

job=/scratch/s/jobs/r2-train-1
export PYTHONUNBUFFERED=1
cd "$job"
# Slurm signals this shell (B:USR1) before the time limit or on preemption:
# pass it on; training writes checkpoint.pt and exits 143 without result.json.
child= usr1= woke=
trap 'usr1=1 woke=1; [ -n "$child" ] && kill -USR1 "$child" 2>/dev/null' USR1
trap 'woke=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM
/opt/fibtui/bin/python -m remote.run "$job" &
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
exit "$rc"
