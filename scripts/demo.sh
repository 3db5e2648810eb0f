#!/usr/bin/env bash
# The main job: install what is needed, then train, evaluate and infer one bundle on its phantom data
# through `python -m monai.bundle run`, and print the paper's measures and where the outputs are.
#   bash scripts/demo.sh [bundle_name]     (default: abdominal_ct_multiorgan_segmentation)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup_env.sh"
cd "$root"
bundle="${1:-abdominal_ct_multiorgan_segmentation}"
b="bundles/$bundle"
c="$b/configs"
[ -f "$c/demo.json" ] || { echo "error: $c/demo.json not found; bundles: $(ls bundles | tr '\n' ' ')" >&2; exit 1; }
t0=$(date +%s)
echo "== [1/3] train on phantom data ($b)"
python -m monai.bundle run --config_file "['$c/train.json','$c/demo.json']" --logging_file "$c/logging.conf"
t1=$(date +%s)
echo "== [2/3] evaluate on held-out phantom cases"
# the report (metric names, prefix, folder) is read back from these same configs by common.report below
eval_configs="['$c/train.json','$c/evaluate.json','$c/demo.json']"
python -m monai.bundle run --config_file "$eval_configs" --logging_file "$c/logging.conf"
t2=$(date +%s)
echo "== [3/3] infer (label maps in the input's geometry)"
python -m monai.bundle run --config_file "['$c/inference.json','$c/demo.json']" --logging_file "$c/logging.conf"
t3=$(date +%s)
# the paper's table(s) for the evaluated cases, the times, and where the model, reports, PNGs and label maps are
python -m common.report "$b" --config_files "$eval_configs" \
    --train_seconds $((t1 - t0)) --eval_seconds $((t2 - t1)) --infer_seconds $((t3 - t2))
