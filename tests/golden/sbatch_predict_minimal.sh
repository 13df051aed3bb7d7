#!/bin/bash
#SBATCH --job-name=fibtui-r2-predict-1
#SBATCH --chdir=/scratch/s/jobs/r2-predict-1
#SBATCH --output=/scratch/s/jobs/r2-predict-1/stdout.log
#SBATCH --error=/scratch/s/jobs/r2-predict-1/stderr.log
#SBATCH --open-mode=append
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --requeue
# written by fibtui (remote/sbatch.py): job r2-predict-1, kind predict, profile default

job=/scratch/s/jobs/r2-predict-1
export PYTHONUNBUFFERED=1
cd "$job"
exec /opt/fibtui/bin/python -m remote.run "$job"
