#!/usr/bin/env bash
# LLaVA-1.5-7B stage-2 fine-tuning on a cbdsl selection, then VLMEvalKit on eight benchmarks.
#
#   train_eval.sh LLAVA_JSON WORKDIR
#
# What cbdsl's command (or ray) backend runs for the instruction-tuning track:
#   [backend.command]
#   command = "/path/to/cbdsl/recipes/llava15/train_eval.sh {export} {workdir}"
#   format = "llava"                           # {export} is the selection's llava.json
#   metrics = "eval/llava-v1.5-7b-cbdsl"       # VLMEvalKit's results folder for the model, under {workdir}
#   metrics_format = "vlmevalkit"
#   benchmarks = [the eight of LLAVA15_BENCHMARKS]
#
# 1. Training: haotian-liu/LLaVA's scripts/v1_5/finetune.sh (read at c121f04) with the 7B base
#    (lmsys/vicuna-7b-v1.5) and the 7B projector, every other flag as there; the global batch stays
#    128 on any GPU count dividing 8 (16 a GPU x GPUs x gradient accumulation). Two departures, both
#    settings below: --report_to none (finetune.sh: wandb, which needs a login) and the data/output paths.
# 2. Evaluation: open-compass/VLMEvalKit's run.py (read at e8e78f0) with --config (the checkpoint as
#    class LLaVA) and --judge exact_matching (no API judge), results in WORKDIR/eval/MODEL/.
# 3. The checkpoint (14 GB) is removed once evaluated, unless LLAVA15_KEEP_CHECKPOINT=1.
# cbdsl reads the results (pipelines/loop/backends/vlmevalkit.py); the GPU machine needs no cbdsl.
#
# Environment (required):
#   LLAVA_DIR              a checkout of haotian-liu/LLaVA, installed (pip install -e ".[train]"; flash-attn)
#   VLMEVALKIT_DIR         a checkout of open-compass/VLMEvalKit, installed in the same Python as LLaVA
#   LLAVA15_IMAGE_FOLDER   the folder the records' image paths are relative to: LLaVA's playground/data
#                          (the --image-folder the pool was imported with; `cbdsl pool info` shows it)
# Environment (optional, defaults in brackets):
#   LLAVA15_GPUS           GPU ids [0,1,2,3,4,5,6,7]; 1, 2, 4 or 8 of them
#   LLAVA15_BASE           [lmsys/vicuna-7b-v1.5]
#   LLAVA15_VISION_TOWER   [openai/clip-vit-large-patch14-336]
#   LLAVA15_PROJECTOR      the stage-1 projector [$LLAVA_DIR/checkpoints/llava-v1.5-7b-pretrain/mm_projector.bin]
#                          (liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5 on the Hugging Face Hub)
#   LLAVA15_CHECKPOINTS    where the fine-tuned model is written [WORKDIR/checkpoints]
#   LLAVA15_KEEP_CHECKPOINT  1 keeps it after the evaluation [0]
#   LLAVA15_BENCHMARKS     VLMEvalKit datasets [MME MMBench_DEV_EN SEEDBench_IMG POPE GQA_TestDev_Balanced
#                          TextVQA_VAL ScienceQA_TEST VizWiz]
#   LLAVA15_MODEL_NAME     VLMEvalKit's name for the model, its results folder [llava-v1.5-7b-cbdsl]
#   LLAVA15_PYTHON         the Python of LLaVA and VLMEvalKit [python3]
#   LLAVA15_REPORT_TO      the trainer's --report_to [none]
#   LLAVA15_MASTER_PORT    deepspeed's --master_port [29500 + $$ % 1000]
#   LMUData                VLMEvalKit's dataset cache (its own default: ~/LMUData)

set -euo pipefail

die() { echo "train_eval.sh: $*" >&2; exit 2; }
say() { echo "[train_eval $(date +%H:%M:%S)] $*"; }

[ $# -eq 2 ] || die "usage: train_eval.sh LLAVA_JSON WORKDIR (the command backend passes {export} {workdir})"
[ -f "$1" ] || die "no selection file at $1: give the llava.json that cbdsl exported (format = \"llava\")"
EXPORT="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"  # absolute: training runs inside the LLaVA checkout
mkdir -p "$2"
WORKDIR="$(cd "$2" && pwd)"

[ -n "${LLAVA_DIR:-}" ] || die "set LLAVA_DIR to a checkout of haotian-liu/LLaVA (installed with pip install -e .)"
[ -f "$LLAVA_DIR/llava/train/train_mem.py" ] && [ -f "$LLAVA_DIR/scripts/zero3.json" ] \
  || die "LLAVA_DIR=$LLAVA_DIR is not a LLaVA checkout (no llava/train/train_mem.py or scripts/zero3.json)"
[ -n "${VLMEVALKIT_DIR:-}" ] || die "set VLMEVALKIT_DIR to a checkout of open-compass/VLMEvalKit"
[ -f "$VLMEVALKIT_DIR/run.py" ] || die "VLMEVALKIT_DIR=$VLMEVALKIT_DIR is not a VLMEvalKit checkout (no run.py)"
[ -n "${LLAVA15_IMAGE_FOLDER:-}" ] || die "set LLAVA15_IMAGE_FOLDER to the folder the image paths are relative to \
(LLaVA's playground/data; the pool's image folder, shown by cbdsl pool info)"
[ -d "$LLAVA15_IMAGE_FOLDER" ] || die "LLAVA15_IMAGE_FOLDER=$LLAVA15_IMAGE_FOLDER is not a directory"
IMAGE_FOLDER="$(cd "$LLAVA15_IMAGE_FOLDER" && pwd)"

GPUS="${LLAVA15_GPUS:-0,1,2,3,4,5,6,7}"
IFS=, read -r -a GPU_LIST <<< "$GPUS"
NGPU=${#GPU_LIST[@]}
case "$NGPU" in 1|2|4|8) ;; *) die "LLAVA15_GPUS=$GPUS names $NGPU GPUs; the global batch of 128 (16 a GPU) needs \
1, 2, 4 or 8";; esac
ACCUM=$(( 8 / NGPU ))  # 16 a GPU x NGPU x ACCUM = 128, finetune.sh's 8 x 16 x 1

BASE="${LLAVA15_BASE:-lmsys/vicuna-7b-v1.5}"
VISION_TOWER="${LLAVA15_VISION_TOWER:-openai/clip-vit-large-patch14-336}"
PROJECTOR="${LLAVA15_PROJECTOR:-$LLAVA_DIR/checkpoints/llava-v1.5-7b-pretrain/mm_projector.bin}"
[ -f "$PROJECTOR" ] || die "no stage-1 projector at $PROJECTOR: download mm_projector.bin of \
liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5 and set LLAVA15_PROJECTOR"
PY="${LLAVA15_PYTHON:-python3}"
MODEL_NAME="${LLAVA15_MODEL_NAME:-llava-v1.5-7b-cbdsl}"
EIGHT="MME MMBench_DEV_EN SEEDBench_IMG POPE GQA_TestDev_Balanced TextVQA_VAL ScienceQA_TEST VizWiz"
BENCHMARKS="${LLAVA15_BENCHMARKS:-$EIGHT}"
CHECKPOINTS="${LLAVA15_CHECKPOINTS:-$WORKDIR/checkpoints}"
# the folder name must contain "llava": LLaVA's builder.py chooses the model class by it
CKPT="$CHECKPOINTS/llava-v1.5-7b-cbdsl-$(date +%Y%m%d%H%M%S)-$$"
command -v deepspeed >/dev/null || die "deepspeed is not on PATH (activate LLaVA's environment)"
command -v "$PY" >/dev/null || die "no Python $PY (set LLAVA15_PYTHON to the Python of LLaVA and VLMEvalKit)"

say "training LLaVA-1.5-7B on $EXPORT ($NGPU GPUs: $GPUS, gradient accumulation $ACCUM) into $CKPT"
mkdir -p "$CHECKPOINTS"
PORT="${LLAVA15_MASTER_PORT:-$((29500 + $$ % 1000))}"
( cd "$LLAVA_DIR" && deepspeed --include "localhost:$GPUS" --master_port "$PORT" \
    llava/train/train_mem.py \
    --deepspeed ./scripts/zero3.json \
    --model_name_or_path "$BASE" \
    --version v1 \
    --data_path "$EXPORT" \
    --image_folder "$IMAGE_FOLDER" \
    --vision_tower "$VISION_TOWER" \
    --pretrain_mm_mlp_adapter "$PROJECTOR" \
    --mm_projector_type mlp2x_gelu \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --image_aspect_ratio pad \
    --group_by_modality_length True \
    --bf16 True \
    --output_dir "$CKPT" \
    --num_train_epochs 1 \
    --per_device_train_batch_size 16 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps "$ACCUM" \
    --evaluation_strategy "no" \
    --save_strategy "steps" \
    --save_steps 50000 \
    --save_total_limit 1 \
    --learning_rate 2e-5 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type "cosine" \
    --logging_steps 1 \
    --tf32 True \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to "${LLAVA15_REPORT_TO:-none}" )
[ -f "$CKPT/config.json" ] || die "training wrote no model at $CKPT (no config.json); see the output above"

say "evaluating $CKPT on: $BENCHMARKS"
CONFIG="$WORKDIR/vlmevalkit.json"
"$PY" - "$CONFIG" "$MODEL_NAME" "$CKPT" $BENCHMARKS <<'EOF'
import json, sys
config, model, checkpoint, *datasets = sys.argv[1:]
# VLMEvalKit's dataset classes (vlmeval/dataset/__init__.py) for the datasets the recipe knows
classes = {"MME": "ImageYORNDataset", "POPE": "ImageYORNDataset", "MMBench_DEV_EN": "ImageMCQDataset",
           "SEEDBench_IMG": "ImageMCQDataset", "ScienceQA_TEST": "ImageMCQDataset", "TextVQA_VAL": "ImageVQADataset",
           "GQA_TestDev_Balanced": "ImageVQADataset", "VizWiz": "VizWiz", "MMVet": "MMVet"}
unknown = [d for d in datasets if d not in classes]
if unknown:
    sys.exit(f"train_eval.sh: LLAVA15_BENCHMARKS names {', '.join(unknown)}; the recipe knows {', '.join(classes)}")
json.dump({"model": {model: {"class": "LLaVA", "model_path": checkpoint}},
           "data": {d: {"class": classes[d], "dataset": d} for d in datasets}}, open(config, "w"), indent=2)
EOF
if [ "$NGPU" -eq 1 ]; then
  LAUNCH=("$PY" run.py)
else
  LAUNCH=("$PY" -m torch.distributed.run --nproc-per-node="$NGPU" run.py)
fi
( cd "$VLMEVALKIT_DIR" && CUDA_VISIBLE_DEVICES="$GPUS" "${LAUNCH[@]}" --config "$CONFIG" --work-dir "$WORKDIR/eval" \
    --judge exact_matching --mode all )

if [ "${LLAVA15_KEEP_CHECKPOINT:-0}" != 1 ]; then
  rm -rf "$CKPT"
  say "removed the checkpoint (LLAVA15_KEEP_CHECKPOINT=1 keeps it)"
fi
say "results in $WORKDIR/eval/$MODEL_NAME"
