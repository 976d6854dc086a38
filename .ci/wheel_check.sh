#!/usr/bin/env bash
# Install as a user does: build the wheel, install it (not editable) into a fresh venv whose
# dependencies come from the package index, then from an empty directory run
# `distnet --version` and a ready job by name on a small CIFAR-10 tarball made here.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python -m pip wheel -qq --disable-pip-version-check --no-deps -w "$work/dist" .
python -m venv "$work/venv"
start=$SECONDS
"$work/venv/bin/pip" install -qq --disable-pip-version-check "$work"/dist/*.whl
echo "wheel_check: installed $(basename "$work"/dist/*.whl) with its dependencies in $((SECONDS - start)) s"

python - "$work/cifar.tar.gz" <<'EOF'
import sys
sys.path.insert(0, "tests")
from datagen import make_cifar_tarball, md5_of
print(md5_of(make_cifar_tarball(sys.argv[1])), file=open(sys.argv[1] + ".md5", "w"))
EOF

mkdir "$work/empty"
cd "$work/empty"
export DISTNET_CACHE="$work/cache"
distnet() { "$work/venv/bin/distnet" "$@"; }
distnet --version
"$work/venv/bin/python" -c '
import distnet, sys, importlib.metadata as m
assert distnet.__file__.startswith(sys.prefix), distnet.__file__
meta = m.metadata("distnet-ray")
assert meta["License-Expression"] == "MIT" and "LICENSE" in meta.get_all("License-File"), meta
'
# Every ready job is in the wheel.
diff <(distnet train --list | cut -d' ' -f1) <(cd "$repo/jobs" && ls *.toml | sed 's/\.toml$//')
distnet train two_layer --source "$work/cifar.tar.gz" --md5 "$(cat "$work/cifar.tar.gz.md5")" \
    --set data.num_val=60 --set train.num_epochs=1 --set train.max_steps=4 --set train.batch_size=50
ls checkpoints/two_layer/ckpt-*.npz runs/two_layer/events.out.tfevents.* >/dev/null
echo "wheel_check: ok"
