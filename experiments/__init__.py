"""Experiment code: it drives the stages only through their public commands (`aps preprocess`, `aps train`,
`aps eval`, run as subprocesses) and reads what they wrote, so that every number comes from the code a user
runs. It sits on top of the tree: it may import evaluation, inference, trainer, pipeline and common; nothing
imports it (the tests aside).
"""
