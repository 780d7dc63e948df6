#!/usr/bin/env bash
# The GPU checks and figures, as run on a lent GPU machine (docs/benchmarks.md, "GPU").
# Expects python3 with torch+CUDA, and in .whl/ the wheels the machine lacks
# (opencv-contrib-python-headless for OpenCV's DualTVL1 reference, pydantic and its needs).
# Writes env.txt, pytest.log, gpu.json and bench.log under $OUT (default: ./gpu-out).
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, cv2, numpy, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| opencv', cv2.__version__, 'optflow', hasattr(cv2, 'optflow'), '| numpy', numpy.__version__, '| onnxruntime', o.get_available_providers())"
  python3 -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1 | tail -1
  nproc
} 2>&1 | tee "$OUT/env.txt"
timeout ${PYTEST_TIMEOUT:-200} python3 -m pytest -q -ra -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/pytest.log" | tail -25
timeout ${BENCH_TIMEOUT:-330} python3 -m streamer.gpu_bench --out "$OUT/gpu.json" "$@" > "$OUT/bench.log" 2>&1
echo "bench exit $?"
grep -E "ERROR|Error" "$OUT/bench.log" | head -20
