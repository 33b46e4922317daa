"""Plumbing every stage shares, at the bottom of the import graph: it imports nothing of the project.

atomic: files written under a temporary name and renamed (readers never see half a file);
errors: the one-line reason of an exception; progress: tqdm bars for terminals and logs;
out_folder: which command wrote a folder (no command writes into another's --out); cluster: the Dask cluster
both stages run on and the executor value of their --scheduler/--workers; timing: the per-step lap timer.
"""
