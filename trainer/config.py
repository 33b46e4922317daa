"""The train stage's configuration: one dataclass per component, with the paper's defaults, and named presets.

Every field has a one-line docstring (the string literal under it) that `describe()` and `aps train --help`
show. A run saves its resolved config as RUN/config.json and inside every checkpoint.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from typing import Any

EXTRACTORS = ("global", "multilevel", "fpn")
PROJECTIONS = ("orthographic", "perspective")
LABEL_MODES = ("binary", "fixed", "adaptive")
LR_SCHEDULES = ("constant", "cosine")
S_SCORES = ("f1", "gain")
PRECISIONS = ("auto", "fp32", "bf16")
"""the network's arithmetic (trainer.models.precision): auto | fp32 | bf16"""
SECTIONS = ("data", "model", "labels", "optim")
BOUNDS_EPOCHS_MAX = 1_000_000
"""optim.epochs' upper bound: the epochs of a time-budgeted run, where the budget decides"""
"""TrainConfig's sections, in the order validate() checks them"""


@dataclass
class DataConfig:
    """What a batch holds and where it comes from."""

    train_split: str = "train"
    """split whose objects are trained on"""
    val_split: str = "val"
    """split whose objects measure F1 (drives s); "" (or a split with no objects): held-out points of the
    training objects, kept out of training"""
    objects: tuple[str, ...] = ()
    """train only on these object ids, of any split (empty: every object of train_split)"""
    views: tuple[int, ...] = ()
    """draw views only from these indices (empty: every stored view)"""
    points_per_sample: int = 2048
    """random points of the object's 10,000 per sample (one sample = one object-view)"""
    image_size: int = 224
    """side of the square image the network sees (stored views are resized to it)"""
    batch_size: int = 32
    """samples (object-views) per optimisation step, per process"""
    repeats: int = 1
    """times each training object is drawn per epoch (each time with a fresh view and point subset)"""
    num_workers: int = 2
    """data-loader worker processes (0: load in the training process)"""
    val_points: int = 10000
    """points per validation object used for F1/IoU (a fixed subset; 10000 = all stored points)"""
    val_views: int = 1
    """views per validation object (fixed, evenly spaced indices)"""
    uniform_share: float = 0.0
    """share of each sample's points drawn from the object's uniform points in the box (the rest from its
    near-surface points); 0: every stored point alike (128 of 10,000 are uniform, so ~1.3%); capped by the
    uniform points stored (preprocess n_uniform). The test IoU is measured on uniform points in the box."""
    val_on: str = "stored"
    """which points score validation (and so drive the adaptive s): stored (a fixed subset of val_points of
    the stored points: 98.7% lie near the surface and about half are inside, so calling every point inside
    already scores F1 ~0.66) | uniform (the uniform points in the box, like the test IoU: the trivial answer
    scores F1 = 2r / (1 + r) with r their inside fraction)"""

    def check(self) -> None:
        """Refuse values the data components cannot run with (trainer.data builds them from this section and calls
        this): each field's type, BOUNDS, CHOICES and data.views, with a one-line reason naming the field."""
        _check_fields(self, "data.")
        views = self.views
        if len(views) > MAX_VIEWS or any(not 0 <= v < MAX_VIEWS for v in views):
            raise ValueError(f"data.views must be at most {MAX_VIEWS} indices in [0, {MAX_VIEWS}), got "
                             f"{len(views)} from {min(views)} to {max(views)}")


@dataclass
class ModelConfig:
    """The networks (docs/METHOD.md, "The networks")."""

    extractor: str = "fpn"
    """feature_extractor: global (one pooled vector) | multilevel (4 ResNet maps) | fpn (the paper's)"""
    projection: str = "orthographic"
    """how a point finds its pixel: orthographic (paper eq. 5, p' = (a p_x, b p_y)) | perspective (K @ Rt)"""
    point_frame: str = "camera"
    """frame of the p the decoder sees: camera (paper eq. 5: p in the camera's axes, R p, centred on the object;
    a photo of unknown pose needs no pose) | object (the normalised frame: needs the true camera at inference)"""
    fpn_channels: int = 128
    """channels of each FPN map; z has 4x this many for fpn (512, ResNet-18's width, as the planning prototype)"""
    point_embed_dim: int = 256
    """width of the point MLP that embeds p before the decoder (raw p does not learn: docs/METHOD.md)"""
    decoder_hidden: int = 256
    """width of the decoder's hidden linear layers"""
    decoder_layers: int = 5
    """linear layers of the decoder (paper: 5; all but the last followed by Leaky-ReLU + batch norm)"""
    leaky_slope: float = 0.2
    """negative slope of the Leaky-ReLUs"""
    pretrained: bool = False
    """start ResNet-18 from torchvision's ImageNet weights (needs them downloadable or cached)"""

    def check(self) -> None:
        """Refuse values the networks cannot be built with: each field's type, BOUNDS and CHOICES."""
        _check_fields(self, "model.")


@dataclass
class LabelConfig:
    """The label v(d, s) and the schedule of s (docs/METHOD.md, "The label v(d, s)", "The schedule of s")."""

    mode: str = "adaptive"
    """binary (v = inside) | fixed (s = s_fixed throughout) | adaptive (eq. 10-12)"""
    d_star: float = 5 / 256
    """d*: distance (unit-cube units) beyond which v = 0; 5 voxels of a 256^3 grid"""
    lambda_: float = 1.5
    """lambda of eq. 10: s = 1 - lambda * F1"""
    s_fixed: float = 0.5
    """s of the fixed mode"""
    s_min: float = 0.1
    """lower clamp of s (where v is nearly binary)"""
    s_max: float = 0.95
    """upper clamp of s (s must stay below 1 for a non-trivial curriculum)"""
    update_every: int = 10
    """k: s is reconsidered only after every k-th epoch (paper: 10)"""
    score: str = "f1"
    """what eq. 10 reads: f1 (the paper: s = 1 - lambda F1, starting from eq. 12's random-guess F1) | gain (F1's
    gain over the all-inside answer on the same validation points, (F1 - F1_0) / (1 - F1_0) with
    F1_0 = 2r / (1 + r): 0 for the trivial answer, so s starts at s_max and travels down only as the network
    beats it; docs/METHOD.md, "The schedule of s")"""

    def check(self) -> None:
        """Refuse values the label and the s schedule cannot run with (trainer.labels.SSchedule.from_config calls
        this): each field's type, BOUNDS, CHOICES and s_min <= s_max."""
        _check_fields(self, "labels.")
        if self.s_min > self.s_max:
            raise ValueError(f"need labels.s_min <= labels.s_max, got {self.s_min} > {self.s_max}")


@dataclass
class OptimConfig:
    """Optimisation."""

    epochs: int = 50
    """epochs to train (paper: 50)"""
    lr: float = 1e-4
    """Adam learning rate (paper: 1e-4)"""
    encoder_lr_scale: float = 1.0
    """learning rate of the feature extractor relative to optim.lr (the paper: 1, one rate for all)"""
    weight_decay: float = 0.0
    """Adam weight decay"""
    amp: bool = True
    """mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling); ignored on CPU"""
    lr_schedule: str = "constant"
    """constant (the paper) | cosine (from optim.lr down to lr_floor x optim.lr over the run: over
    optim.time_budget_s of wall time when set, else over optim.epochs)"""
    warmup: float = 0.0
    """share of the run (as lr_schedule measures it) over which the learning rate rises linearly from 0"""
    lr_floor: float = 0.02
    """the cosine schedule's last learning rate, relative to optim.lr"""
    time_budget_s: float = 0.0
    """stop at the end of the first epoch (validation included) whose end is this many seconds of wall time
    after the run's start, resumes included; 0: no budget, optim.epochs decides (`aps train --time-budget 60m`)"""
    max_loss: float = 10.0
    """a batch loss above this (BCE; chance is 0.69) or not finite stops the run as diverged"""

    def check(self) -> None:
        """Refuse values the optimisation cannot run with: each field's type and BOUNDS."""
        _check_fields(self, "optim.")


@dataclass
class TrainConfig:
    """A whole training run."""

    data: DataConfig = field(default_factory=DataConfig)
    """the batches: splits, objects, views, points per sample, image size, validation points"""
    model: ModelConfig = field(default_factory=ModelConfig)
    """the networks: feature extractor, projection, point frame, decoder widths"""
    labels: LabelConfig = field(default_factory=LabelConfig)
    """the label v(d, s) and the schedule of s"""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Adam, epochs, mixed precision and the divergence limit"""
    seed: int = 0
    """seed of every random choice (views, point subsets, order, initial weights)"""
    device: str = "auto"
    """auto (cuda when present, else cpu) | cpu | cuda | cuda:N"""
    threads: int = 2
    """torch CPU threads per process"""
    precision: str = "auto"
    """the network's arithmetic: auto (on a CPU, bf16 autocast where it has AVX512-BF16 or AMX and a timed
    training step of this network is faster in it; on CUDA, optim.amp) | fp32 (float32 throughout: the same bits
    on one machine) | bf16 (bfloat16 autocast; refused where the hardware lacks it)"""
    preset: str = "paper"
    """the preset these values started from"""
    pictures_every: int = 5
    """after epoch 1 and every this many epochs, TensorBoard gets a picture of each of pictures_objects fixed
    objects: its input view and two others, stored view | predicted mesh (trainer.snapshots); 0: never"""
    pictures_objects: int = 2
    """the first this many validation objects (training objects when there are none) are pictured"""


# Fields that may differ when a run is resumed: they change how, not what, is trained.
RESUMABLE_FIELDS = ("optim.epochs", "optim.time_budget_s", "data.num_workers", "device", "threads", "precision",
                    "pictures_every", "pictures_objects")


def _paper() -> TrainConfig:
    return TrainConfig()


def _cpu_demo() -> TrainConfig:
    # Sized for ~3 minutes on a 2-core CPU (docs/TRAINING.md has the measurement): small images and maps, a
    # narrower decoder, 960 steps; a 10x faster decoder than encoder learned the demo parts faster (measured);
    # s reconsidered every 2 epochs so the curriculum shows within the run.
    cfg = TrainConfig(preset="cpu-demo")
    cfg.data = DataConfig(image_size=64, points_per_sample=1024, batch_size=8, repeats=40, num_workers=1,
                          val_points=4096, val_views=1)
    cfg.model = ModelConfig(fpn_channels=64, point_embed_dim=128, decoder_hidden=128)
    cfg.optim = OptimConfig(epochs=16, lr=1e-3, encoder_lr_scale=0.1)
    cfg.labels = LabelConfig(update_every=2)
    return cfg


def _cpu() -> TrainConfig:
    # The best the quality-per-CPU-hour study (docs/RESULTS.md, "Quality per CPU-hour") found for an hour of a
    # 2-core CPU, field by field in docs/TRAINING.md ("The cpu preset"). In short: cpu-demo's small network (the
    # image, FPN and decoder sizes the study tried did not beat it at equal wall time), binary labels, a quarter
    # of each sample's points uniform in the box, a cosine learning rate planned over a 60-minute budget, and
    # validation on the uniform points, the test IoU's kind.
    cfg = TrainConfig(preset="cpu")
    cfg.data = DataConfig(image_size=96, points_per_sample=1024, batch_size=8, repeats=24, num_workers=1,
                          val_points=4096, val_views=1, uniform_share=0.25, val_on="uniform")
    cfg.model = ModelConfig(fpn_channels=64, point_embed_dim=128, decoder_hidden=128)
    cfg.optim = OptimConfig(epochs=BOUNDS_EPOCHS_MAX, lr=1e-3, encoder_lr_scale=0.1, lr_schedule="cosine", warmup=0.05,
                            time_budget_s=3600.0)
    cfg.labels = LabelConfig(mode="binary")
    return cfg


def _cpu_test() -> TrainConfig:
    # The smallest sensible network, for tests that only need the code path to run; float32, so that a run is
    # the same bits every time (auto would choose by timing).
    cfg = TrainConfig(preset="cpu-test", precision="fp32")
    cfg.data = DataConfig(image_size=32, points_per_sample=256, batch_size=4, num_workers=0,
                          val_points=1024, val_views=1)
    cfg.model = ModelConfig(fpn_channels=16, point_embed_dim=32, decoder_hidden=32)
    cfg.optim = OptimConfig(epochs=2, lr=1e-3)
    cfg.labels = LabelConfig(update_every=1)
    return cfg


PRESETS = {"paper": _paper, "cpu": _cpu, "cpu-demo": _cpu_demo, "cpu-test": _cpu_test}


def preset(name: str) -> TrainConfig:
    """A fresh config of a named preset: paper (the paper's defaults), cpu (an hour of a 2-core CPU), cpu-demo,
    cpu-test."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as plain JSON-able values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Inverse of to_dict; unknown keys are an error (a config from another version of this code), and every
    value is type- and bounds-checked (apply, then validate) before anything is built from it: a checkpoint's
    config is read through here."""
    if not isinstance(values, dict):
        raise ValueError(f"the config must be a dict of sections, got {type(values).__name__}")
    cfg = TrainConfig()
    flat = {}
    for section, sub in values.items():
        if dataclasses.is_dataclass(getattr(cfg, section, None)):
            if not isinstance(sub, dict):
                raise ValueError(f"config section {section!r} must be a dict of fields, got {type(sub).__name__}")
            flat.update({f"{section}.{key}": value for key, value in sub.items()})
        else:
            flat[section] = sub
    return apply(cfg, flat)


def _field_type(obj: Any, name: str) -> Any:
    hints = {f.name: f.type for f in dataclasses.fields(obj)}
    if name not in hints:
        raise ValueError(f"unknown config field {name!r} in {type(obj).__name__}; "
                         f"fields: {sorted(hints)}")
    return hints[name]


def _leaf(cfg: TrainConfig, key: str) -> tuple[Any, str, str]:
    """(the dataclass holding the dotted key's field, the field's name, its type as annotated, e.g. "int")."""
    parts = key.split(".")
    obj = cfg
    for part in parts[:-1]:
        if not hasattr(obj, part) or not dataclasses.is_dataclass(getattr(obj, part)):
            raise ValueError(f"unknown config section {part!r} in {key!r}")
        obj = getattr(obj, part)
    return obj, parts[-1], str(_field_type(obj, parts[-1]))


def _typed(type_str: str, value: Any, key: str) -> Any:
    """`value` checked against the field's type, never parsed ("5" is no int); an int is a float's number and
    a list a tuple's items (JSON has neither distinction)."""
    if type_str == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"config {key}: expected true/false, got {value!r}")
        return value
    if type_str == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config {key}: expected an integer, got {value!r}")
        return value
    if type_str == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"config {key}: expected a number, got {value!r}")
        return float(value)
    if type_str == "str":
        if not isinstance(value, str):
            raise ValueError(f"config {key}: expected a string, got {value!r}")
        return value
    if type_str.startswith("tuple"):
        inner = int if "int" in type_str else str
        if not isinstance(value, list | tuple) or any(isinstance(v, bool) or not isinstance(v, inner) for v in value):
            raise ValueError(f"config {key}: expected {type_str}, got {value!r}")
        return tuple(value)
    raise ValueError(f"config {key}: unsupported type {type_str}")


def _parse(type_str: str, text: str, key: str) -> Any:
    """The value a `--set` text stands for, read by the field's type: a str field takes the text as it is, a
    bool true/false/yes/no/1/0, anything else a Python literal (a tuple also `a,b,c` without brackets, or one
    item alone)."""
    if type_str == "str":
        return text
    if type_str == "bool" and text.lower() in ("true", "false", "1", "0", "yes", "no"):
        return text.lower() in ("true", "1", "yes")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if not type_str.startswith("tuple"):
            raise ValueError(f"config {key}: cannot read {text!r} as {type_str}") from None
        value = tuple(v.strip() for v in text.split(",") if v.strip())
    if type_str.startswith("tuple"):
        items = value if isinstance(value, list | tuple) else (value,)
        inner = int if "int" in type_str else str
        try:
            return tuple(inner(v) for v in items)
        except ValueError:
            raise ValueError(f"config {key}: expected {type_str}, got {value!r}") from None
    return value


def apply(cfg: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """Set dotted fields to typed values in place, e.g. `{"optim.epochs": 5, "model.extractor": "fpn"}`, then
    validate. Each value must already have its field's type (a str for an int field is refused, naming the
    field); nothing is parsed. Returns cfg."""
    for key, value in values.items():
        obj, name, type_str = _leaf(cfg, key)
        setattr(obj, name, _typed(type_str, value, key))
    validate(cfg)
    return cfg


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`section.field=value` texts (`--set`) -> {dotted key: value of the field's type} for apply; a key given
    twice keeps its last value."""
    values: dict[str, Any] = {}
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.field=value")
        key, text = (part.strip() for part in item.split("=", 1))
        values[key] = _parse(_leaf(TrainConfig(), key)[2], text, key)
    return values


def override(cfg: TrainConfig, assignments: list[str]) -> TrainConfig:
    """Apply `section.field=value` texts (e.g. `model.extractor=multilevel`, `data.views=0,3`) in place: each
    text is read by its field's type (parse_assignments), then set through apply."""
    return apply(cfg, parse_assignments(assignments))


# Bounds of every numeric field (inclusive; "(" marks an open lower end): what this code runs in bounded
# memory. validate() checks them for a config given by the user and for the config read from a checkpoint,
# before anything is built, so an edited checkpoint cannot make the network or an image take terabytes
# (decoder_hidden = 1e6 asks 4 TB). The widths allow 8x the paper's values and the image 4.5x its 224 px;
# at every upper bound at once the network has ~0.2 G parameters (0.8 GB in float32). The bounds of the other
# sections only keep them finite and of the right sign: they allocate nothing (lr = 50 is a divergence test).
BOUNDS: dict[str, tuple[float, float, str]] = {
    "data.points_per_sample": (1, 100_000, "["),
    "data.image_size": (32, 1024, "["),  # ResNet-18 downsamples by 32
    "data.batch_size": (2, 4096, "["),  # batch norm needs more than one sample
    "data.repeats": (1, 100_000, "["),
    "data.num_workers": (0, 256, "["),
    "data.val_points": (1, 1_000_000, "["),
    "data.val_views": (1, 1024, "["),
    "model.fpn_channels": (1, 1024, "["),
    "model.point_embed_dim": (1, 2048, "["),
    "model.decoder_hidden": (1, 2048, "["),
    "model.decoder_layers": (2, 32, "["),
    "model.leaky_slope": (0.0, 1.0, "["),
    "labels.d_star": (0.0, 1.0, "("),
    "labels.lambda_": (0.0, 10.0, "["),
    "labels.s_fixed": (0.0, 1.0, "("),
    "labels.s_min": (0.0, 1.0, "("),
    "labels.s_max": (0.0, 1.0, "("),
    "labels.update_every": (1, 1_000_000, "["),
    "optim.epochs": (1, BOUNDS_EPOCHS_MAX, "["),
    "optim.lr": (0.0, 1e6, "("),
    "optim.encoder_lr_scale": (0.0, 1e6, "["),
    "optim.weight_decay": (0.0, 1e6, "["),
    "optim.max_loss": (0.0, 1e30, "("),
    "optim.warmup": (0.0, 1.0, "["),
    "optim.lr_floor": (0.0, 1.0, "["),
    "optim.time_budget_s": (0.0, 1e9, "["),
    "data.uniform_share": (0.0, 1.0, "["),
    "seed": (0, 2**63 - 1, "["),
    "threads": (1, 1024, "["),
    "pictures_every": (0, 1_000_000, "["),
    "pictures_objects": (0, 16, "["),
}
MAX_VIEWS = 1024
"""data.views: at most this many indices, each in [0, MAX_VIEWS)"""
CHOICES: dict[str, tuple[str, ...]] = {
    "model.extractor": EXTRACTORS,
    "model.projection": PROJECTIONS,
    "model.point_frame": ("camera", "object"),
    "data.val_on": ("stored", "uniform"),
    "labels.mode": LABEL_MODES,
    "labels.score": S_SCORES,
    "optim.lr_schedule": LR_SCHEDULES,
    "precision": PRECISIONS,
}


def _check_fields(obj: Any, prefix: str) -> None:
    """The fields of one section (prefix "data.", ...; "" for TrainConfig's own fields): each field's type (a value
    set past apply()), then its BOUNDS and its CHOICES."""
    for f in dataclasses.fields(obj):
        if not dataclasses.is_dataclass(getattr(obj, f.name)):
            _typed(str(f.type), getattr(obj, f.name), prefix + f.name)
    mine = [key for key in (*BOUNDS, *CHOICES) if key.startswith(prefix) and "." not in key[len(prefix):]]
    for key in (k for k in mine if k in BOUNDS):
        low, high, low_end = BOUNDS[key]
        value = getattr(obj, key[len(prefix):])
        if not (low < value <= high if low_end == "(" else low <= value <= high):
            kind = "an integer" if isinstance(value, int) else "a number"
            raise ValueError(f"{key} must be {kind} in {low_end}{low}, {high}], got {value!r}")
    for key in (k for k in mine if k in CHOICES):
        value = getattr(obj, key[len(prefix):])
        if value not in CHOICES[key]:
            raise ValueError(f"{key} must be one of {tuple(CHOICES[key])}, got {value!r}")


def validate(cfg: TrainConfig) -> None:
    """Refuse values the code cannot run with, or that would make it allocate without bound: TrainConfig's own
    fields, then each section's check (the one its component calls when built from it), with a one-line reason
    naming the field."""
    _check_fields(cfg, "")
    for name in SECTIONS:
        getattr(cfg, name).check()


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstring under each field of a config dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, following in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = following.value.value.strip()
    return docs


def describe(cfg: TrainConfig) -> str:
    """Every field as `section.field = value  # doc`, for logs and --help."""
    lines = []
    for name, value in dataclasses.asdict(cfg).items():
        if isinstance(value, dict):
            sub = getattr(cfg, name)
            docs = field_docs(type(sub))
            lines += [f"{name}.{k} = {v!r}  # {docs.get(k, '')}" for k, v in value.items()]
        else:
            lines.append(f"{name} = {value!r}  # {field_docs(TrainConfig).get(name, '')}")
    return "\n".join(lines)


def differences(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = RESUMABLE_FIELDS) -> list[str]:
    """Dotted keys whose values differ between two config dicts (to_dict form), except `ignore`."""
    out = []
    for section in sorted(set(a) | set(b)):
        va, vb = a.get(section), b.get(section)
        if isinstance(va, dict) and isinstance(vb, dict):
            for key in sorted(set(va) | set(vb)):
                dotted = f"{section}.{key}"
                if dotted not in ignore and va.get(key) != vb.get(key):
                    out.append(f"{dotted}: {va.get(key)!r} != {vb.get(key)!r}")
        elif section not in ignore and va != vb:
            out.append(f"{section}: {va!r} != {vb!r}")
    return out
