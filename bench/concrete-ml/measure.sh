#!/usr/bin/env bash
# Measures Concrete ML 1.9.0 on this machine, for `hecnn experiment frontier`'s anchors:
# accuracy simulated on the full MNIST test set and latency of really encrypted images, of
# Ishiyama's paper CNN (ReLU, n_bits 6, approximate rounding to 6 bits) and of a 3-bit
# Brevitas QAT CNN; written to bench/concrete-ml/results.json.
#
#   bash bench/concrete-ml/measure.sh            # from the repository root
#   ENCRYPTED=2 EPOCHS=5 bash bench/concrete-ml/measure.sh
#
# Not run by CI (it installs Concrete ML and its PyTorch from PyPI into
# bench/concrete-ml/.venv, about 1.5 GB, and takes 20-40 minutes on 2 cores). Run it on
# an idle machine just before `hecnn experiment frontier`: machines of this kind drift by
# up to 2x from day to day, so the anchors must come from the same run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "concrete-ml==1.9.0"
fi
"$venv/bin/python" "$here/measure.py" \
    --data "${DATA:-$here/../../datasets/data/mnist}" \
    --encrypted "${ENCRYPTED:-2}" \
    --epochs "${EPOCHS:-5}" \
    --output "$here/results.json"
