#!/usr/bin/env bash
# The GPU checks as one prepared command for a lent GPU machine (torch and torchvision, no Ray):
#   device run, carry [".whl"]:  bash bench/gpu_check.sh
# .whl/ comes from ../shared/tools/device-wheels.sh (pydantic and optuna for towers_check's
# training loop; throughput.py needs torch alone). Results go to $OUT (default: gpu-results/).
# QUICK=1 runs both benchmarks' --quick modes (on CPU: what CI checks).
set -uo pipefail
out="${OUT:-gpu-results}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/cnn-ablate-site .whl/*.whl \
    && export PYTHONPATH="/tmp/cnn-ablate-site${PYTHONPATH:+:$PYTHONPATH}"
fi
quick=(); [ "${QUICK:-0}" = 1 ] && quick=(--quick)
{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; python3 -c \
  "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } \
  | tee "$out/machine.txt"
status=0
# AlexNet first: its number is the target (>= 10,000 images/s at 224 px on one H100).
timeout 300 python3 bench/throughput.py "${quick[@]}" --models alexnet \
  | tee "$out/throughput_alexnet.txt" || status=1
timeout 240 python3 bench/throughput.py "${quick[@]}" --models lenet5 lenet5-1998 zfnet \
  alexnet-one-tower alexnet-torchvision | tee "$out/throughput_rest.txt" || status=1
timeout 120 python3 bench/towers_check.py "${quick[@]}" | tee "$out/towers_check.txt" || status=1
exit $status
