"""Fingerprint what the three stages produce, to show that a refactor changed no behaviour.

    python benchmarks/behaviour_fingerprint.py OUT [--manifest manifests/industrial-demo.toml]

runs, with the tree this file is in, `aps preprocess` of the manifest into OUT/store (serial), a fixed-seed
`aps train --preset cpu-test --epochs 2` into OUT/run, and `aps eval` of OUT/run/last.ckpt at 64^3 (serial,
pictures off), then prints one JSON document and writes it to OUT/fingerprint.json: sha256 of every array of
every object as `open_store(...).load` returns it, of every tensor of the checkpoint's model and optimiser
state, and of eval's metrics.csv without its `seconds` column. Run it from the old tree and the new one
(`git worktree add /tmp/old <rev>`) into two folders and compare the two files: equal documents mean
byte-identical arrays, a bit-identical checkpoint and identical metrics.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _aps(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    subprocess.run([sys.executable, "-m", "aps", *args], cwd=HERE, env=env, check=True)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(out: Path) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    from pipeline.schema import open_store

    store = open_store(out / "store")
    arrays = {}
    for oid in store.object_ids:
        obj = store.load(oid)
        for name in sorted(obj):
            value = obj[name]
            if isinstance(value, np.ndarray):
                arrays[f"{oid}/{name}"] = _sha(value.tobytes()) + f" {value.dtype} {value.shape}"
            else:
                arrays[f"{oid}/{name}"] = repr(value)
    payload = torch.load(out / "run" / "last.ckpt", map_location="cpu", weights_only=True)
    tensors = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            tensors[prefix] = _sha(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                walk(f"{prefix}/{k}", value[k])
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(f"{prefix}/{i}", v)

    for key in ("model", "optimizer"):
        walk(key, payload.get(key))
    with open(out / "report" / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
    return {"arrays": arrays, "checkpoint": tensors, "epochs": payload.get("epoch"),
            "metrics": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--manifest", default="manifests/industrial-demo.toml")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    _aps("preprocess", "--manifest", args.manifest, "--out", str(out / "store"), "--scheduler", "serial")
    if not (out / "run" / "last.ckpt").exists():  # a rerun only fingerprints again
        _aps("train", "--data", str(out / "store"), "--out", str(out / "run"), "--preset", "cpu-test", "--epochs",
             "2", "--seed", "0", "--device", "cpu")
    if not (out / "report" / "eval.json").exists():
        _aps("eval", "--checkpoint", str(out / "run" / "last.ckpt"), "--data", str(out / "store"), "--out",
             str(out / "report"), "--scheduler", "serial", "--resolution", "64", "--coarse", "16", "--no-pictures")
    doc = fingerprint(out)
    text = json.dumps(doc, indent=1, sort_keys=True, allow_nan=False)
    (out / "fingerprint.json").write_text(text + "\n")
    print(f"{len(doc['arrays'])} arrays, {len(doc['checkpoint'])} tensors, {len(doc['metrics'])} metric rows: "
          f"{out / 'fingerprint.json'} (sha256 {_sha(text.encode())})")


if __name__ == "__main__":
    main()
