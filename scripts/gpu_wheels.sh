#!/usr/bin/env bash
# The wheels scripts/gpu_table2.sh carries to the GPU machine (docs/TRAINING.md, "Table 2 on the GPU machine"):
# what reading the store and scoring need that the machine lacks (zarr 3 and its needs; trimesh, for sampling
# points on a mesh), for its Python 3.12 on x86-64, into .whl/ (ignored by git; named in the device call's carry).
# The versions are those of this toolkit's environment. typing-extensions is there too, but zarr needs >= 4.12 and
# the machine's version was never read: a newer one is harmless to everything else (it only adds). The other
# needs (numpy >= 2, packaging, pyyaml) are there. Run from anywhere: bash scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
wheels=(zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 trimesh==5.2.0 typing-extensions==4.16.0)
git check-ignore -q .whl/x.whl || echo /.whl/ >> .git/info/exclude
rm -rf .whl && mkdir .whl  # one version of each: two would stop the install there
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${wheels[@]}"
for w in .whl/*.whl; do  # what each needs (the machine must hold it, or it is one of these wheels)
  echo "$(basename "$w"): $(unzip -p "$w" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' \
    | sed 's/Requires-Dist: //' | paste -sd, - | sed 's/,/, /g')"
done
du -ch .whl/*.whl | tail -1
