"""Load and validate the YAML configuration.

One JSON schema, written in YAML (``schemas/config.schema.yaml``), describes every key and
holds every default. The CLI and the Snakemake workflow both validate against it, so a typo
stops everything before any job starts, with the key named; then the schema's defaults are
filled in, so code reads ``cfg["certify"]["shards"]`` and never repeats a default.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    """The configuration file is missing, unparsable or has a bad key or value."""


def schema() -> dict:
    text = resources.files("dmae").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the bad key, for humans: 'dataset.val_size: -1 is less than ...'."""
    where = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"{where}.{k}" if where != "<top level>" else k for k in extra)
        return f"unknown key {keys} (allowed here: {', '.join(allowed)})"
    if error.validator == "required":
        return f"{where}: {error.message}"
    return f"{where}: {error.message}"


def validate(cfg: dict, source: str = "config") -> dict:
    """Validate ``cfg`` against the schema (ConfigError listing every bad key), then fill in
    the schema's defaults and write each ``finetune_per_sigma`` key as ``sigma_key`` does.

    ``cfg`` is completed in place (Snakemake's config object is one) and returned.
    """
    rules = schema()
    runtime = cfg.get("runtime")
    if isinstance(runtime, dict) and runtime.get("amp") is False:
        # YAML 1.1 (PyYAML, Snakemake) reads an unquoted `amp: off` as false, as written by
        # a YAML 1.2 tool (DVC's `exp run -S` rewrites the file without its quotes).
        runtime["amp"] = "off"
    validator = jsonschema.Draft202012Validator(rules)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n  ".join(_describe(e) for e in errors)
        raise ConfigError(f"{source}: invalid configuration:\n  {lines}")
    _fill_defaults(cfg, rules, rules)
    cfg["finetune_per_sigma"] = {sigma_key(k): v for k, v in cfg["finetune_per_sigma"].items()}
    _check_references(cfg, source)
    _resolve_adaptive(cfg, source)
    return cfg


def _resolved(node: dict, root: dict) -> dict:
    """``node`` with its local ``$ref`` merged in; sibling ``properties`` add to the target's
    (that is how a resource group gives the shared job-resource keys its own defaults)."""
    if "$ref" not in node:
        return node
    target = root
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    target = _resolved(target, root)
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    props = {**target.get("properties", {})}
    for key, sub in node.get("properties", {}).items():
        props[key] = {**props.get(key, {}), **sub}
    if props:
        merged["properties"] = props
    return merged


def _fill_defaults(value, node: dict, root: dict) -> None:
    """Set every absent key that has a schema ``default``, at any depth."""
    if not isinstance(value, dict):
        return
    node = _resolved(node, root)
    props = node.get("properties", {})
    for key, sub in props.items():
        sub = _resolved(sub, root)
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            _fill_defaults(value[key], sub, root)
    each = node.get("additionalProperties")
    if isinstance(each, dict):
        for key in value.keys() - props.keys():
            _fill_defaults(value[key], each, root)


def _check_references(cfg: dict, source: str) -> None:
    """Cross-key checks a JSON schema cannot express."""
    dataset = cfg["dataset"]
    if dataset["expected_classes"] is not None and dataset["name"] != "imagenet":
        raise ConfigError(f"{source}: dataset.expected_classes: only imagenet's classes can be "
                          f"chosen; {dataset['name']} has a fixed set (leave it null)")
    for name, recipe in cfg["pretrainings"].items():
        if not recipe["train"] and not recipe["init"]:
            raise ConfigError(f"{source}: pretrainings.{name}.train is false, so "
                              f"pretrainings.{name}.init must name a checkpoint")
    for method, spec in cfg["methods"].items():
        pre = spec["pretraining"]
        if pre is not None and pre not in cfg["pretrainings"]:
            raise ConfigError(
                f"{source}: methods.{method}.pretraining: '{pre}' is not one of the "
                f"pretrainings ({', '.join(sorted(cfg['pretrainings'])) or 'none defined'})"
            )
    for group, asked in cfg["resources"].items():
        processes = asked["processes"]
        if processes is None:
            continue
        if processes > 1 and group not in ("pretrain", "finetune"):
            raise ConfigError(f"{source}: resources.{group}.processes: only pretrain and "
                              f"finetune jobs run several processes, got {processes}")
        if asked["gpus"] and processes != asked["gpus"]:
            raise ConfigError(f"{source}: resources.{group}.processes must equal its gpus "
                              f"({asked['gpus']}: one process per GPU) or be null, got "
                              f"{processes}")
    for sigma in cfg["finetune_per_sigma"]:
        if float(sigma) not in [float(s) for s in cfg["sigmas"]]:
            raise ConfigError(
                f"{source}: finetune_per_sigma.{sigma}: {sigma} is not in sigmas {cfg['sigmas']}"
            )


def _resolve_adaptive(cfg: dict, source: str) -> None:
    """An adaptive certification's radius grid: certify.radii, or report.radii when null
    (filled in, so that the certification jobs' settings hold the grid they settle)."""
    certify = cfg["certify"]
    if certify["method"] != "adaptive":
        return
    key = "certify.radii"
    if certify["radii"] is None:
        certify["radii"] = list(cfg["report"]["radii"])
        key = "report.radii (the grid of certify.radii: null)"
    grid = certify["radii"]
    if any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
        raise ConfigError(f"{source}: {key} must be sorted in increasing order without "
                          f"repeats for certify.method adaptive, got {grid}")
    if certify["n_max"] is not None and certify["n_max"] < certify["n0"]:
        raise ConfigError(f"{source}: certify.n_max must be >= certify.n0, got "
                          f"n_max={certify['n_max']}, n0={certify['n0']}")


def filled_from(cfg: dict, written: dict) -> dict[str, str]:
    """Settings ``validate`` filled in from another key, where the config file as written
    (``written``) leaves them null: {dotted key: the key its value came from}."""
    stated = (written.get("certify") or {}).get("radii")
    if cfg["certify"]["method"] == "adaptive" and stated is None:
        return {"certify.radii": "report.radii"}
    return {}


def load(path: str | os.PathLike) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return validate(cfg, source=str(path))


def deep_merge(base: dict, override: dict | None) -> dict:
    """Return ``base`` with ``override`` merged in recursively (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def yaml_typed(value: object) -> object:
    """``value`` with each text in it read as YAML reads a plain value in a config file
    ("500" -> 500, "0.25" -> 0.25, "true" -> True, "null" -> None; other text stays text).
    Snakemake reads the values inside a `--config key={...}` mapping as text."""
    if isinstance(value, Mapping):
        return {key: yaml_typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [yaml_typed(item) for item in value]
    if isinstance(value, str) and value.strip():
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if parsed is None or isinstance(parsed, bool | int | float):
            return parsed
    return value


def sigma_key(sigma: float | str) -> str:
    """Canonical text of a sigma, as used in file names and ``per_sigma`` keys ('0.25', '1.0')."""
    return repr(float(sigma))


def model_config(cfg: dict, model: str) -> dict:
    """The architecture settings of ``model``, without its training overrides."""
    if model not in cfg["models"]:
        raise ConfigError(f"models.{model}: no such model (have {', '.join(cfg['models'])})")
    return {k: v for k, v in cfg["models"][model].items() if k not in ("pretrain", "finetune")}


def pretrain_settings(cfg: dict, model: str, pretraining: str) -> tuple[dict, dict]:
    """(model config incl. noise/mask settings, training hyperparameters) of one pretraining."""
    if pretraining not in cfg["pretrainings"]:
        raise ConfigError(f"pretrainings.{pretraining}: not defined")
    recipe = {k: v for k, v in cfg["pretrainings"][pretraining].items()
              if k not in ("init", "train", "pretrain")}
    model_cfg = {**model_config(cfg, model), **recipe}
    hp = deep_merge(cfg["pretrain"], cfg["models"][model].get("pretrain"))
    hp = deep_merge(hp, cfg["pretrainings"][pretraining].get("pretrain"))
    hp = {"seed": cfg["runtime"]["seed"], **hp, "task": "pretrain"}
    return model_cfg, _with_runtime(cfg, hp)


def finetune_settings(cfg: dict, model: str, method: str, sigma: float) -> tuple[dict, dict]:
    """(classifier config, training hyperparameters) of one fine-tuning run.

    Precedence, later wins: finetune, models.<model>.finetune, methods.<method>.finetune,
    finetune_per_sigma.<sigma>, and the method's switch for consistency regularization.
    """
    if method not in cfg["methods"]:
        raise ConfigError(f"methods.{method}: not defined (have {', '.join(cfg['methods'])})")
    hp = deep_merge(cfg["finetune"], cfg["models"][model].get("finetune"))
    hp = deep_merge(hp, cfg["methods"][method].get("finetune"))
    hp = deep_merge(hp, cfg["finetune_per_sigma"].get(sigma_key(sigma)))
    hp["consistency"] = {**hp.get("consistency", {}),
                         "enabled": bool(cfg["methods"][method]["consistency"])}
    # Model settings that share the hyperparameter blocks; unset, the model's defaults apply.
    model_cfg = {**model_config(cfg, model),
                 **{key: hp.pop(name) for name, key in (("global_pool", "global_pool"),
                                                         ("drop_path", "drop_path_rate"))
                    if name in hp}}
    task = "linprobe" if cfg["methods"][method]["linprobe"] else "finetune"
    hp = {"seed": cfg["runtime"]["seed"], **hp, "task": task, "sigma": float(sigma)}
    return model_cfg, _with_runtime(cfg, hp)


def _with_runtime(cfg: dict, hp: dict) -> dict:
    runtime = cfg["runtime"]
    return {**hp, "num_workers": runtime["num_workers"], "amp": runtime["amp"],
            "compile": runtime["compile"]}
