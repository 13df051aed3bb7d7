#!/bin/bash
#SBATCH --job-name=fibtui-r2-predict-1-final
#SBATCH --chdir=/groups/cellmap/s1/jobs/r2-predict-1
#SBATCH --output=/groups/cellmap/s1/jobs/r2-predict-1/stdout.log
#SBATCH --error=/groups/cellmap/s1/jobs/r2-predict-1/stderr.log
#SBATCH --open-mode=append
#SBATCH --partition=gpu_a100
#SBATCH --account=cellmap
#SBATCH --time=04:00:00
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --requeue
# written by fibtui (remote/sbatch.py): job r2-predict-1, final step of the prediction array (pyramid, result.json), profile janelia-gpu

# profile setup
module load cuda/12.1

job=/groups/cellmap/s1/jobs/r2-predict-1
export PYTHONUNBUFFERED=1
cd "$job"
exec python -m remote.run "$job" --finalize
