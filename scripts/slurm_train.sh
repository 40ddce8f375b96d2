#!/usr/bin/env bash
# Train one stage on N nodes x 8 GPUs under SLURM (docs/scaling.md): one task per GPU, started by srun;
# Lightning reads the SLURM variables itself (SLURMEnvironment) and checks that trainer.num_nodes and
# trainer.devices match them, which this script sets from the allocation.
#
#   sbatch --nodes 4 scripts/slurm_train.sh coarse --config paper --trainer fsdp \
#       data.train_shards=/shared/tokens/train data.val_shards=/shared/tokens/val trainer.output_dir=/shared/runs
#
# Submit from the repository root with the Python environment active (sbatch passes the environment on).
# The shards and trainer.output_dir must be on a filesystem every node sees: every rank resumes from the
# same last.ckpt, and FSDP ranks each write their part of a sharded checkpoint. To stop cleanly before the
# time limit, add e.g. trainer.max_time=00:23:45:00 (it saves last.ckpt); submitting the same line again resumes.
#SBATCH --job-name=audiolm-pl
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

STAGE="${1:?usage: sbatch --nodes N scripts/slurm_train.sh STAGE [--config NAME] [--trainer ddp|fsdp] [key=value ...]}"
shift
cd "${SLURM_SUBMIT_DIR:-.}"
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-8}"
export HF_HUB_OFFLINE=1

# the last overrides win: the world size always comes from the allocation
srun python -m audiolm_pl train "$STAGE" "$@" \
    trainer.num_nodes="$SLURM_NNODES" trainer.devices="$SLURM_NTASKS_PER_NODE"
