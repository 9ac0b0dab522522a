#!/usr/bin/env bash
# Every GPU figure of BENCHMARKS.md, for a GPU machine lent through the `device` tool.
#
# That machine has PyTorch, pandas, scikit-learn and pytest but not torchattacks or pydantic, and
# cannot download: those travel as wheels (ray and optuna are not needed: the trainer and these
# benchmarks never import them). Three device calls, each meant to end within the 10-minute limit:
#
#   bash benchmarks/gpu_suite.sh wheels                    # here, once per checkout: fills .whl/
#   run: bash benchmarks/gpu_suite.sh part1   (carry .whl) # tests on the GPU; epoch time against the bound
#   run: bash benchmarks/gpu_suite.sh part2   (carry .whl) # 4 trials sharing the GPU; mask overhead
#   run: bash benchmarks/gpu_suite.sh part3   (carry .whl) # against the papers' loop; peak memory
#
# Logs and JSON lines land in $OUT (the device tool brings them back), else in runs/gpu_suite.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_suite}
mkdir -p "$out"

install_wheels() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
    export PYTHONUNBUFFERED=1
}

case "${1:-}" in
wheels)
    # Versions from uv.lock; Python 3.12 is the GPU image's.
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        torchattacks==3.5.1 pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
    ls .whl
    ;;
part1)
    install_wheels
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
      python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } | tee "$out/device.txt"
    # The fast-path tests, CUDA ones included (--noconftest: the suite's conftest starts Ray searches).
    # A failing test is in tests.log; the benchmarks still run.
    python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_fastpath.py tests/test_batchnorm_folding.py \
        2>&1 | tee "$out/tests.log" || true
    for attack in pgd10 fgsm-rs; do
        python3 benchmarks/gpu_epoch_bound.py --attack "$attack" | tee -a "$out/epoch_bound.jsonl"
    done
    ;;
part2)
    install_wheels
    for attack in pgd10 fgsm-rs; do
        python3 benchmarks/gpu_epoch_bound.py --attack "$attack" --trials 4 | tee -a "$out/epoch_bound_4.jsonl"
    done
    python3 benchmarks/mask_overhead.py --device cuda --attack pgd10 --examples 4096 | tee "$out/mask_overhead.json"
    ;;
part3)
    install_wheels
    # Against the papers' loop on the same GPU (fp32, CPU DataLoader with 4 workers): the 3x target.
    for arch in resnet20 preact_resnet18; do
        for attack in pgd10 fgsm-rs; do
            python3 benchmarks/adv_train_throughput.py --device cuda --arch "$arch" --attack "$attack" --examples 2048 \
                | tee -a "$out/throughput.jsonl"
        done
    done
    python3 benchmarks/peak_memory.py --device cuda | tee "$out/peak_memory.jsonl"
    ;;
*)
    echo "usage: bash benchmarks/gpu_suite.sh wheels|part1|part2|part3" >&2
    exit 2
    ;;
esac
