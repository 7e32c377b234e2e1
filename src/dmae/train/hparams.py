"""Training hyperparameters: one dataclass for pretraining, fine-tuning and linear probing.

``TrainHParams.from_dict`` is the only way configs enter the engine; it rejects unknown keys
and bad values with a ValueError naming the key and what it expects, so a typo in a YAML file
fails before any data is touched.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

TASKS = ("pretrain", "finetune", "linprobe")
AMP_MODES = ("auto", "bf16", "fp16", "off")
OPTIMIZERS = ("adamw", "lars")
MIXUP_MODES = ("batch", "pair", "elem")


@dataclass(frozen=True)
class ConsistencyHParams:
    """Consistency regularization (Jeong & Shin 2020); ``lam`` is the config key ``lambda``."""

    enabled: bool = False
    m: int = 2
    lam: float = 2.0
    eta: float = 0.5

    def to_dict(self) -> dict:
        return {"enabled": self.enabled, "m": self.m, "lambda": self.lam, "eta": self.eta}


@dataclass(frozen=True)
class TrainHParams:
    """Optimisation settings of one run (the paper's values are in config/imagenet.yaml).

    ``betas`` and ``optimizer`` left as None take the task's default: (0.9, 0.95) for
    pretraining and (0.9, 0.999) otherwise; LARS for linear probing and AdamW otherwise.
    """

    task: str = "finetune"
    epochs: int = 1
    warmup_epochs: float = 0.0
    batch_size: int = 64  # per device
    accum_iter: int = 1
    blr: float = 1e-3  # lr = blr * effective batch / 256
    lr: float | None = None  # absolute lr, overrides blr
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] | None = None
    momentum: float = 0.9  # LARS only
    optimizer: str | None = None
    layer_decay: float | None = None
    clip_grad: float | None = None
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    sigma: float = 0.0  # Gaussian noise on [0,1] inputs when fine-tuning / probing
    consistency: ConsistencyHParams = field(default_factory=ConsistencyHParams)
    eval_noise_samples: int = 8
    eval_every: int = 1
    eval_batch_size: int | None = None
    save_every: int = 1
    max_steps: int | None = None
    seed: int = 0
    num_workers: int = 0
    amp: str = "auto"
    compile: str | bool = "auto"

    def __post_init__(self) -> None:
        # Plain containers (as read from YAML/JSON) become their typed forms.
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        if not isinstance(self.consistency, ConsistencyHParams):
            object.__setattr__(self, "consistency", _consistency_from(self.consistency))
        # Task defaults are resolved here so the stored hparams say what was actually used.
        if self.betas is None:
            object.__setattr__(self, "betas",
                               (0.9, 0.95) if self.task == "pretrain" else (0.9, 0.999))
        if self.optimizer is None:
            object.__setattr__(self, "optimizer", "lars" if self.task == "linprobe" else "adamw")
        _validate(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainHParams:
        """Build from a plain dict (a config section); unknown keys and bad values raise."""
        if not isinstance(d, dict):
            raise ValueError(f"hyperparameters: expected a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown hyperparameter; expected one of "
                             f"{', '.join(sorted(names))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict that ``from_dict`` reads back to an equal object."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["betas"] = list(self.betas)
        out["consistency"] = self.consistency.to_dict()
        return out


def _consistency_from(value: Any) -> ConsistencyHParams:
    if not isinstance(value, dict):
        raise ValueError(f"consistency: expected a mapping with enabled/m/lambda/eta, "
                         f"got {value!r}")
    keys = {"enabled", "m", "lambda", "eta"}
    unknown = sorted(set(value) - keys)
    if unknown:
        raise ValueError(f"consistency.{unknown[0]}: unknown key; expected one of "
                         f"{', '.join(sorted(keys))}")
    kwargs = {("lam" if k == "lambda" else k): v for k, v in value.items()}
    return ConsistencyHParams(**kwargs)


# --------------------------------------------------------------------------------------------
# validation


def _bad(key: str, expected: str, value: Any) -> ValueError:
    hint = ""
    if isinstance(value, str):
        try:
            float(value)
            hint = " (YAML 1.1 reads 1e-3 as a string: write 1.0e-3)"
        except ValueError:
            pass
    return ValueError(f"{key}: expected {expected}, got {value!r}{hint}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def _int(key: str, v: Any, lo: int, optional: bool = False) -> None:
    if optional and v is None:
        return
    if not _is_int(v) or v < lo:
        raise _bad(key, f"an integer >= {lo}" + (" or null" if optional else ""), v)


def _num(key: str, v: Any, lo: float, hi: float = math.inf, *, lo_open: bool = False,
         hi_open: bool = False, optional: bool = False) -> None:
    if optional and v is None:
        return
    ok = _is_num(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
        rng = f"a number in {left}{lo}, {hi}{right}" + (" or null" if optional else "")
        raise _bad(key, rng, v)


def _choice(key: str, v: Any, options: tuple[str, ...]) -> None:
    if not isinstance(v, str) or v not in options:
        raise _bad(key, "one of " + ", ".join(repr(o) for o in options), v)


def _validate(hp: TrainHParams) -> None:
    _choice("task", hp.task, TASKS)
    _int("epochs", hp.epochs, 1)
    _num("warmup_epochs", hp.warmup_epochs, 0, hp.epochs if _is_int(hp.epochs) else math.inf)
    _int("batch_size", hp.batch_size, 1)
    _int("accum_iter", hp.accum_iter, 1)
    _num("blr", hp.blr, 0, lo_open=True)
    _num("lr", hp.lr, 0, lo_open=True, optional=True)
    _num("min_lr", hp.min_lr, 0)
    _num("weight_decay", hp.weight_decay, 0)
    if (not isinstance(hp.betas, tuple) or len(hp.betas) != 2
            or not all(_is_num(b) and 0 <= b < 1 for b in hp.betas)):
        raise _bad("betas", "two numbers in [0, 1)", hp.betas)
    _num("momentum", hp.momentum, 0, 1, hi_open=True)
    _choice("optimizer", hp.optimizer, OPTIMIZERS)
    _num("layer_decay", hp.layer_decay, 0, 1, lo_open=True, optional=True)
    _num("clip_grad", hp.clip_grad, 0, lo_open=True, optional=True)
    _num("label_smoothing", hp.label_smoothing, 0, 1, hi_open=True)
    _num("mixup", hp.mixup, 0)
    _num("cutmix", hp.cutmix, 0)
    _num("mixup_prob", hp.mixup_prob, 0, 1)
    _num("mixup_switch_prob", hp.mixup_switch_prob, 0, 1)
    _choice("mixup_mode", hp.mixup_mode, MIXUP_MODES)
    _num("sigma", hp.sigma, 0)
    c = hp.consistency
    if not isinstance(c.enabled, bool):
        raise _bad("consistency.enabled", "true or false", c.enabled)
    _int("consistency.m", c.m, 2)
    _num("consistency.lambda", c.lam, 0)
    _num("consistency.eta", c.eta, 0)
    _int("eval_noise_samples", hp.eval_noise_samples, 0)
    _int("eval_every", hp.eval_every, 1)
    _int("eval_batch_size", hp.eval_batch_size, 1, optional=True)
    _int("save_every", hp.save_every, 1)
    _int("max_steps", hp.max_steps, 1, optional=True)
    _int("seed", hp.seed, 0)
    _int("num_workers", hp.num_workers, 0)
    _choice("amp", hp.amp, AMP_MODES)
    if hp.compile not in ("auto", True, False):
        raise _bad("compile", "'auto', true or false", hp.compile)

    # Settings that make no sense for the task are errors, not silently ignored.
    mixing = hp.mixup > 0 or hp.cutmix > 0
    if hp.task == "pretrain":
        for key, on in (("layer_decay", hp.layer_decay is not None), ("mixup", hp.mixup > 0),
                        ("cutmix", hp.cutmix > 0), ("consistency.enabled", c.enabled),
                        ("label_smoothing", hp.label_smoothing > 0), ("sigma", hp.sigma > 0)):
            if on:
                raise ValueError(f"{key}: not used by task 'pretrain' (noise and masking live "
                                 f"in the model); expected it unset/0")
    if c.enabled and mixing and hp.mixup_mode != "batch":
        # Only batch-mode mixing keeps the m noisy copies of an image mixed the same way.
        raise _bad("mixup_mode", "'batch' when consistency is enabled with mixup/cutmix",
                   hp.mixup_mode)
    if mixing and hp.batch_size % 2:
        raise _bad("batch_size", "an even number when mixup/cutmix is on", hp.batch_size)
