"""The paper's Table 2 at its own settings (224 px, 50 epochs) in one 10-minute call of the GPU machine, when a
task is lent one: `scripts/gpu_table2.sh` (docs/TRAINING.md, "Table 2 on the GPU machine").

That machine has PyTorch but not this toolkit's geometry libraries (open3d, libigl, pysdf) nor dask, and cannot
install anything; zarr, its needs and trimesh travel as wheels. So everything here runs on torch, numpy, scipy and
scikit-image, reusing the ablation's plan, runs and tables (experiments.ablation) and `aps eval`'s functions.

The rooms, each importing only the ones before it: score (one run scored on every test object: IoU from the
stored reference points, F-score and the other surface metrics of a mesh extracted there), weights (a network as
bf16 parts under 16 MiB, and back to a checkpoint), drive (the trainings side by side under a deadline, the
scorings, the files for OUT), __main__ (the command line: run, score, restore, blocker).
"""
