"""EvalConfig documents every field with the string literal under it (as trainer/config.py does)."""

from __future__ import annotations

import dataclasses

from evaluation.config import EvalConfig
from trainer.config import field_docs


def test_every_eval_config_field_has_a_docstring():
    docs = field_docs(EvalConfig)
    assert [f.name for f in dataclasses.fields(EvalConfig) if not docs.get(f.name)] == []
