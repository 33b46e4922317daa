"""trainer.config's one typed setter: apply takes typed values as they are; override reads --set text by each
field's type and goes through apply."""

from __future__ import annotations

import pytest

from trainer.config import apply, from_dict, override, parse_assignments, preset, to_dict


def test_apply_keeps_typed_values_without_parsing():
    lr = 0.1 + 0.2  # 0.30000000000000004: kept exactly, no text in between
    cfg = apply(preset("cpu-test"), {"optim.lr": lr, "optim.epochs": 5, "model.extractor": "global",
                                      "data.views": [0, 3], "model.pretrained": True, "labels.s_fixed": 1})
    assert cfg.optim.lr == lr and cfg.optim.epochs == 5 and cfg.model.extractor == "global"
    assert cfg.data.views == (0, 3) and cfg.model.pretrained is True
    assert type(cfg.labels.s_fixed) is float and cfg.labels.s_fixed == 1.0  # an int is a float field's number


@pytest.mark.parametrize(("key", "value", "message"), [
    ("optim.epochs", "5", r"config optim.epochs: expected an integer, got '5'"),
    ("optim.epochs", True, r"config optim.epochs: expected an integer, got True"),
    ("optim.lr", "1e-3", r"config optim.lr: expected a number, got '1e-3'"),
    ("model.pretrained", "true", r"config model.pretrained: expected true/false, got 'true'"),
    ("device", 0, r"config device: expected a string, got 0"),
    ("data.views", "0,3", r"config data.views: expected tuple\[int, ...\], got '0,3'"),
    ("data.objects", (1,), r"config data.objects: expected tuple\[str, ...\], got \(1,\)"),
    ("model.nonsense", 1, r"unknown config field 'nonsense' in ModelConfig"),
    ("modle.extractor", "fpn", r"unknown config section 'modle'"),
])
def test_apply_refuses_a_value_of_another_type_naming_the_field(key, value, message):
    with pytest.raises(ValueError, match=message):
        apply(preset("cpu-test"), {key: value})


def test_apply_validates():
    with pytest.raises(ValueError, match="model.extractor must be one of"):
        apply(preset("cpu-test"), {"model.extractor": "vit"})


def test_override_parses_text_by_the_field_type():
    assert parse_assignments(["optim.epochs=5", "optim.lr=1e-3", "model.pretrained=yes", "data.views=0,3",
                              "data.objects=box_a,box_b", "device=cuda:1", "optim.epochs=7"]) == {
        "optim.epochs": 7, "optim.lr": 1e-3, "model.pretrained": True, "data.views": (0, 3),
        "data.objects": ("box_a", "box_b"), "device": "cuda:1"}
    cfg = override(preset("cpu-test"), ["optim.epochs=5", "optim.lr=1", "data.views=2"])
    assert cfg.optim.epochs == 5 and type(cfg.optim.lr) is float and cfg.data.views == (2,)
    with pytest.raises(ValueError, match=r"config optim.epochs: expected an integer, got 5.5"):
        override(preset("cpu-test"), ["optim.epochs=5.5"])
    with pytest.raises(ValueError, match=r"cannot read 'x' as int"):
        override(preset("cpu-test"), ["optim.epochs=x"])
    with pytest.raises(ValueError, match="is not of the form section.field=value"):
        override(preset("cpu-test"), ["optim.epochs"])


def test_from_dict_round_trips_every_preset():
    for name in ("paper", "cpu", "cpu-demo", "cpu-test"):
        cfg = preset(name)
        assert from_dict(to_dict(cfg)) == cfg


def test_every_train_config_field_has_a_docstring():
    import dataclasses

    from trainer.config import DataConfig, LabelConfig, ModelConfig, OptimConfig, TrainConfig, field_docs

    for cls in (DataConfig, ModelConfig, LabelConfig, OptimConfig, TrainConfig):
        docs = field_docs(cls)
        assert [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)] == [], cls.__name__


def test_the_cpu_preset_trains_for_an_hour_unless_told_otherwise():
    cfg = preset("cpu")
    assert cfg.optim.time_budget_s == 3600.0 and cfg.optim.lr_schedule == "cosine"
    assert cfg.data.val_on == "uniform" and 0.0 < cfg.data.uniform_share < 1.0
    assert override(preset("cpu"), ["optim.time_budget_s=600"]).optim.time_budget_s == 600.0
