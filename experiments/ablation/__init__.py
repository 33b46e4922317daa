"""The paper's ablation (Table 2), the fixed-s sweep (Fig. 6) and the training-speed claim, as real runs.

Every run is made through the public commands (`aps train`, `aps eval`; `aps preprocess` when the store is
missing) and then read back (the runs' metrics.csv, the evals' metrics.csv and meshes); no training or
evaluation code lives here. Finished runs are skipped, so an interrupted ablation resumes. Outputs in OUT:

- table2.md|csv: one row per variant, each metric as mean ± sample std over seeds, where one seed's value is
  the mean over the test objects (as `aps eval --compare`); table2_runs.md|csv: one row per (variant, seed);
  table2_failures.md|csv: empty meshes, edge-free meshes and medians behind those means.
- learning_curves.png: validation IoU against epoch, one line per variant (mean over seeds, seeds faint),
  and s against epoch for the label modes that have one.
- speed.md|csv: epochs (and training seconds) for fpn+binary and fpn+adaptive to first reach 95% of
  fpn+binary's final validation IoU, per seed.
- sweep.md|csv (and sweep_failures) and sweep.png: fpn with s fixed at each sweep value (paper Fig. 6),
  metrics and pictures of the same test objects from the same view.
- plan.json (the settings, checked on a rerun), summary.json, runs/, eval/, logs/.

The rooms, each importing only the ones listed before it: plan (variants, seeds, settings, where each run
lives), tables (Table-2 style tables, the speed table), figures (learning curves, sweep picture), run (the
subprocesses, the reports, the summary), __main__ (the CLI).

Run: `python -m experiments.ablation --manifest manifests/industrial-parts.toml --data data/industrial-parts
--out reports/ablation [--full]` (`make ablation`). docs/RESULTS.md has the measured results.
"""
