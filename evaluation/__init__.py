"""The eval stage: checkpoint + zarr shards -> meshes, metrics tables, pictures (docs/METHOD.md, "Evaluation").

object_eval: one object's work (predict, score, picture, its error result); executors: where the objects run
(a loop, a local or an existing Dask cluster; the network on the workers or in this process); runner: which
objects, the run, its tables and report. Below them: metrics, render, report, results (each object's record, what
a rerun skips), fields (a checkpoint as a field), config. cli: `aps eval` and `aps compare`.
"""
