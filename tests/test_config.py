"""The config schema: every shipped config validates; bad keys are named."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dmae import config as cfglib

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = cfglib.load(path)
    assert cfg["sigmas"], "every config fine-tunes at least one sigma"


def test_the_adaptive_cifar10_config_differs_from_cifar10_only_in_its_method(repo):
    """They share a name, so every fine-tuning setting must agree: otherwise running one would
    retrain the other's classifiers."""
    cohen = yaml.safe_load((repo / "config" / "cifar10.yaml").read_text())
    adaptive = yaml.safe_load((repo / "config" / "cifar10-adaptive.yaml").read_text())
    assert adaptive["certify"].pop("method") == "adaptive"
    assert adaptive["certify"].pop("stop_on_mismatch") is True
    assert adaptive == cohen


@pytest.fixture
def smoke(repo):
    return cfglib.load(repo / "config" / "smoke.yaml")


@pytest.mark.parametrize(
    "mutate, named",
    [
        (lambda c: c["dataset"].update(colour="red"), "dataset.colour"),
        (lambda c: c["certify"].update(n0=0), "certify.n0"),
        (lambda c: c["certify"].update(alpha=1.5), "certify.alpha"),
        (lambda c: c["finetune"].update(lerning_rate=1.0), "finetune.lerning_rate"),
        (lambda c: c["dataset"].update(name="mnist"), "dataset.name"),
        (lambda c: c.update(sigmas=[0.25, -1.0]), "sigmas.1"),
        (lambda c: c["dataset"].pop("val_size"), "val_size"),
        (lambda c: c["methods"]["dmae"].update(pretraining="nope"), "methods.dmae.pretraining"),
        (lambda c: c["methods"]["dmae"].update(models=["vit_x"]), "methods.dmae.models"),
        (lambda c: c["methods"]["dmae"].update(models=[]), "methods.dmae.models"),
        (lambda c: c.update(finetune_per_sigma={"0.3": {"epochs": 2}}), "finetune_per_sigma.0.3"),
        (lambda c: c["resources"]["finetune"].update(processes=0), "resources.finetune.processes"),
        (lambda c: c["resources"]["certify"].update(processes=2), "resources.certify.processes"),
        (lambda c: c["resources"]["pretrain"].update(gpus=4, processes=2),
         "resources.pretrain.processes"),
        (lambda c: c["dataset"].update(expected_classes=0), "dataset.expected_classes"),
        (lambda c: c["dataset"].update(expected_classes="100"), "dataset.expected_classes"),
        # Fashion-MNIST's ten classes are fixed: only ImageNet's folders can be chosen.
        (lambda c: c["dataset"].update(expected_classes=10), "dataset.expected_classes"),
    ],
)
def test_bad_key_is_named(smoke, mutate, named):
    bad = copy.deepcopy(smoke)
    mutate(bad)
    with pytest.raises(cfglib.ConfigError, match=named.replace(".", r"\.")):
        cfglib.validate(bad)


def test_imagenet_can_expect_another_number_of_classes(repo):
    """dataset.expected_classes: null (ImageNet's 1000) unless a subset is stated."""
    written = yaml.safe_load((repo / "config" / "imagenet.yaml").read_text())
    assert cfglib.validate(copy.deepcopy(written))["dataset"]["expected_classes"] is None
    written["dataset"]["expected_classes"] = 100
    assert cfglib.validate(written)["dataset"]["expected_classes"] == 100


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(cfglib.ConfigError, match="not found"):
        cfglib.load(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(cfglib.ConfigError, match="broken.yaml: not valid YAML"):
        cfglib.load(broken)


def test_finetune_settings_precedence(smoke):
    cfg = copy.deepcopy(smoke)
    cfg["models"]["micro"]["finetune"] = {"epochs": 3}
    cfg["methods"]["rs"]["finetune"] = {"epochs": 4, "layer_decay": None}
    cfg["finetune_per_sigma"] = {"0.5": {"epochs": 7, "consistency": {"eta": 0.1}}}
    cfglib.validate(cfg)

    _, hp25 = cfglib.finetune_settings(cfg, "micro", "dmae", 0.25)
    model_cfg, hp50 = cfglib.finetune_settings(cfg, "micro", "dmae", 0.5)
    _, hp_rs = cfglib.finetune_settings(cfg, "micro", "rs", 0.5)

    assert hp25["epochs"] == 3  # model override over the shared section
    assert hp50["epochs"] == 7  # per-sigma override over the model's
    assert hp50["consistency"] == {"m": 2, "lambda": 2.0, "eta": 0.1, "enabled": True}
    assert hp25["consistency"]["eta"] == 0.5
    assert hp_rs["consistency"]["enabled"] is False  # RS: plain Gaussian training
    assert hp_rs["layer_decay"] is None and hp_rs["epochs"] == 7  # method, then per-sigma
    assert cfglib.finetune_settings(cfg, "micro", "rs", 0.25)[1]["epochs"] == 4
    assert hp50["sigma"] == 0.5 and hp50["task"] == "finetune"
    assert model_cfg["arch"] == "vit_micro" and "finetune" not in model_cfg


def test_pretrain_settings_carry_noise_and_mask(smoke):
    model_cfg, hp = cfglib.pretrain_settings(smoke, "micro", "dmae")
    assert model_cfg["sigma"] == 0.25 and model_cfg["loss_on"] == "all"
    assert hp["task"] == "pretrain" and hp["betas"] == [0.9, 0.95]
    with pytest.raises(cfglib.ConfigError, match="pretrainings.nope"):
        cfglib.pretrain_settings(smoke, "micro", "nope")


def test_a_recipe_can_override_pretraining_settings(smoke):
    cfg = copy.deepcopy(smoke)
    cfg["models"]["micro"]["pretrain"] = {"epochs": 3, "warmup_epochs": 1}
    cfg["pretrainings"]["long"] = {**cfg["pretrainings"]["dmae"], "pretrain": {"epochs": 9}}
    cfglib.validate(cfg)
    model_cfg, hp = cfglib.pretrain_settings(cfg, "micro", "long")
    assert hp["epochs"] == 9 and hp["warmup_epochs"] == 1  # recipe over model over shared
    assert cfglib.pretrain_settings(cfg, "micro", "dmae")[1]["epochs"] == 3
    assert "pretrain" not in model_cfg


def test_a_training_can_have_its_own_seed(smoke):
    cfg = copy.deepcopy(smoke)
    cfg["methods"]["rs"]["finetune"] = {"seed": 3}
    cfglib.validate(cfg)
    assert cfglib.finetune_settings(cfg, "micro", "rs", 0.25)[1]["seed"] == 3
    assert cfglib.finetune_settings(cfg, "micro", "dmae", 0.25)[1]["seed"] == \
        cfg["runtime"]["seed"]


def test_sigma_key_is_canonical():
    assert cfglib.sigma_key(1) == cfglib.sigma_key("1.0") == "1.0"
    assert cfglib.sigma_key(0.25) == "0.25"


def test_ablation_config_is_the_default_plus_the_ablation(repo):
    """The ablation copies the default value for value; only its name and one method differ."""
    default = cfglib.load(repo / "config" / "default.yaml")
    ablation = cfglib.load(repo / "config" / "fashion-mnist-ablation.yaml")
    extra = {k: v for k, v in ablation["methods"].items() if k not in default["methods"]}
    assert extra == {"dmae_nocr": {**ablation["methods"]["dmae_nocr"], "consistency": False}}
    assert extra["dmae_nocr"]["pretraining"] == "dmae"
    rest = lambda cfg: {k: v for k, v in cfg.items() if k not in ("name", "methods")}  # noqa: E731
    assert rest(ablation) == rest(default)
    assert {k: ablation["methods"][k] for k in default["methods"]} == default["methods"]


def test_configs_of_one_dataset_share_its_prepared_folder_unchanged(repo):
    """Configs of a dataset write one prepared folder (data/prepared/<dataset>), so they must
    agree on every setting of its preparation: otherwise running one (the smoke config, say)
    prepares it anew and makes every other config's results out of date."""
    from dmae import layout, pipeline

    by_folder: dict = {}
    for path in CONFIGS:
        cfg = cfglib.load(path)
        by_folder.setdefault(layout.prepared_dir(cfg), {})[path.name] = \
            pipeline.settings(cfg, "prepare_data")
    assert len(by_folder[Path("data/prepared/fashion-mnist")]) > 2
    for folder, configs in by_folder.items():
        distinct = {str(s) for s in configs.values()}
        assert len(distinct) == 1, (folder, configs)


def test_sigma1_study_changes_one_thing_per_method(repo):
    """The validation study records the default of its time (its own rs and dmae); each
    variant differs from those in one place, and it certifies validation images only."""
    default = cfglib.load(repo / "config" / "default.yaml")
    study = cfglib.load(repo / "config" / "fashion-mnist-sigma1-study.yaml")
    assert study["certify"]["split"] == "val"
    assert study["certify"]["stride"] * 500 == 5000 == study["dataset"]["val_size"]
    assert study["sigmas"] == [1.0]
    for key in ("dataset", "models"):
        assert study[key] == default[key]
    base_recipe = study["pretrainings"]["dmae"]
    for name, recipe in study["pretrainings"].items():
        changed = {k for k in {*recipe, *base_recipe} if recipe.get(k) != base_recipe.get(k)}
        assert len(changed) == (name != "dmae"), (name, changed)
    for name, method in study["methods"].items():
        base = study["methods"]["rs" if method["pretraining"] is None else "dmae"]
        changed = {k for k in {*method, *base} if k != "label" and method.get(k) != base.get(k)}
        assert len(changed) == (name not in ("rs", "dmae")), (name, changed)
    assert study["methods"]["rs_seed1"]["finetune"] == {"layer_decay": None, "seed": 1}


def _defaults(node: dict, root: dict, path: str = ""):
    """Every (dotted key, default) the schema states, through $refs and sibling properties."""
    node = cfglib._resolved(node, root)
    for key, sub in node.get("properties", {}).items():
        sub = cfglib._resolved(sub, root)
        if "default" in sub:
            yield f"{path}{key}", sub["default"]
        yield from _defaults(sub, root, f"{path}{key}.")


def test_the_schema_fills_every_default_once(repo):
    """A config that leaves out every optional key gets each schema default, and the completed
    config is valid; the defaults the code relies on are there."""
    cfg = yaml.safe_load((repo / "config" / "smoke.yaml").read_text())
    for key in ("resources", "finetune_per_sigma"):
        cfg.pop(key, None)
    for key in ("shards", "seed"):
        cfg["certify"].pop(key)
    cfg["dataset"].pop("split_seed")
    filled = cfglib.validate(copy.deepcopy(cfg))
    schema = cfglib.schema()
    stated = dict(_defaults(schema, schema))
    assert len(stated) > 20
    # another certification method's settings are dropped, defaults and all
    foreign = {f"certify.{key}" for key, sub in schema["properties"]["certify"]["properties"]
               .items() if sub.get("x-method", "cohen") != "cohen"}
    assert foreign and not {f"certify.{key}" for key in filled["certify"]} & foreign
    for key, default in stated.items():  # smoke.yaml states no other value for these keys
        if key in foreign:
            continue
        node = filled
        for part in key.split("."):
            node = node[part]
        assert node == default or (default == {} and isinstance(node, dict)), key
    assert filled["certify"]["shards"] == 1 and filled["certify"]["checkpoint"] == "best"
    assert filled["certify"]["method"] == "cohen" and filled["certify"]["split"] == "test"
    assert filled["resources"]["prepare"] == {"gpus": 0, "threads": 1, "mem_mb": 4000,
                                              "runtime": 60, "processes": None}
    assert filled["resources"]["certify"]["threads"] == 2
    assert filled["methods"]["rs"]["linprobe"] is False
    assert filled["pretrainings"]["dmae"]["train"] is True
    assert cfglib.validate(copy.deepcopy(filled)) == filled  # defaults are valid, and stable


def test_a_stated_value_wins_over_the_default(smoke):
    cfg = copy.deepcopy(smoke)
    cfg["resources"] = {"certify": {"gpus": 1}}
    cfg["certify"]["shards"] = 3
    cfg = cfglib.validate(cfg)
    assert cfg["resources"]["certify"] == {"gpus": 1, "threads": 2, "mem_mb": 4000,
                                           "runtime": 120, "processes": None}
    assert cfg["certify"]["shards"] == 3


def test_per_sigma_keys_are_written_one_way(smoke):
    cfg = copy.deepcopy(smoke)
    cfg["finetune_per_sigma"] = {"0.50": {"epochs": 3}}
    cfg = cfglib.validate(cfg)
    assert list(cfg["finetune_per_sigma"]) == [cfglib.sigma_key(0.5)]
    assert cfglib.finetune_settings(cfg, "micro", "rs", 0.5)[1]["epochs"] == 3


def test_imagenet_linear_probing_has_the_authors_settings(repo):
    """The paper's third downstream setting (MAE's linear probing) is a method of the
    ImageNet config: LARS, blr 0.1, batch 16384 on 8 GPUs, 90 epochs (10 warmup), no weight
    decay, no mixing, RandAugment or layer decay, a frozen encoder with a BatchNorm head."""
    from dmae.models import build_linear_probe
    from dmae.train import TrainHParams, effective_batch

    cfg = cfglib.load(repo / "config" / "imagenet.yaml")
    model_cfg, hp = cfglib.finetune_settings(cfg, "vit_b", "dmae_linprobe", 0.25)
    assert hp.pop("randaugment") is None
    hp = TrainHParams.from_dict(hp)
    assert (hp.task, hp.optimizer, hp.blr, hp.epochs, hp.warmup_epochs) == (
        "linprobe", "lars", 0.1, 90, 10)
    assert effective_batch(hp, world_size=cfg["resources"]["finetune"]["gpus"]) == 16384
    assert hp.weight_decay == 0 and hp.layer_decay is None and not hp.consistency.enabled
    assert hp.mixup == hp.cutmix == hp.label_smoothing == 0
    probe = build_linear_probe({**model_cfg, "depth": 1, "embed_dim": 24, "num_heads": 2}, 10)
    assert not probe.head[0].affine
    assert not any(p.requires_grad for p in probe.encoder.parameters())


def test_the_imagenet_ablations_run_on_vit_b_only(repo):
    """DMAE against plain MAE (the same recipe at sigma 0, loss on masked patches), each by
    fine-tuning with consistency regularization and by linear probing, and DMAE fine-tuned
    with cross-entropy only: on ViT-B, the paper's ablation model; ViT-L runs DMAE alone."""
    from dmae import layout

    cfg = cfglib.load(repo / "config" / "imagenet.yaml")
    mae, dmae = cfg["pretrainings"]["mae"], cfg["pretrainings"]["dmae"]
    assert (mae["sigma"], mae["loss_on"], dmae["sigma"], dmae["loss_on"]) == (
        0.0, "masked", 0.25, "all")
    assert mae["mask_ratio"] == dmae["mask_ratio"]
    assert layout.used_pretrainings(cfg) == [("vit_b", "dmae"), ("vit_b", "mae"),
                                             ("vit_l", "dmae")]
    pairs = {(model, method) for model, method, _ in layout.runs(cfg)}
    assert pairs == {("vit_b", m) for m in ("dmae", "dmae_linprobe", "dmae_ce", "mae",
                                            "mae_linprobe")} | {("vit_l", "dmae")}
    # each ablation differs from its DMAE counterpart in the pretraining alone
    for mae_method, dmae_method in (("mae", "dmae"), ("mae_linprobe", "dmae_linprobe")):
        for sigma in cfg["sigmas"]:
            assert (cfglib.finetune_settings(cfg, "vit_b", mae_method, sigma)
                    == cfglib.finetune_settings(cfg, "vit_b", dmae_method, sigma))
    ce = cfglib.finetune_settings(cfg, "vit_b", "dmae_ce", 0.25)[1]
    cr = cfglib.finetune_settings(cfg, "vit_b", "dmae", 0.25)[1]
    assert not ce["consistency"]["enabled"] and cr["consistency"]["enabled"]
    assert {k: v for k, v in ce.items() if k != "consistency"} == {
        k: v for k, v in cr.items() if k != "consistency"}


@pytest.mark.parametrize("text, value", [
    ("500", 500), ("0.25", 0.25), ("1.0e-3", 0.001), ("true", True), ("null", None),
    ("fashion-mnist", "fashion-mnist"), ("avx2", "avx2"), ("2026-12-07", "2026-12-07"), ("", ""),
])
def test_override_values_are_read_as_yaml_reads_a_config_file(text, value):
    """Snakemake reads the values inside `--config key={...}` as text (its YAML BaseLoader)."""
    typed = cfglib.yaml_typed({"certify": {"n": text}, "sigmas": [text]})
    assert typed == {"certify": {"n": value}, "sigmas": [value]}
    assert type(typed["certify"]["n"]) is type(value)


def test_an_unquoted_amp_off_read_as_false_means_off(repo):
    """A YAML 1.2 tool (DVC's `exp run -S`) writes `amp: off` without quotes, which YAML 1.1
    readers (PyYAML, Snakemake) take for false."""
    raw = yaml.safe_load((repo / "config" / "smoke.yaml").read_text())
    raw["runtime"]["amp"] = yaml.safe_load("off")
    assert raw["runtime"]["amp"] is False
    assert cfglib.validate(raw)["runtime"]["amp"] == "off"
    raw["runtime"]["amp"] = True
    with pytest.raises(cfglib.ConfigError, match="runtime.amp"):
        cfglib.validate(raw)


def test_the_schemas_datasets_are_the_registrys():
    """dataset.name's choices are written in the schema: the data registry imports numpy
    (its datasets' parsers), too heavy for every config validation to load."""
    from dmae.data import DATASET_NAMES

    named = cfglib.schema()["properties"]["dataset"]["properties"]["name"]["enum"]
    assert tuple(named) == DATASET_NAMES


def test_a_registry_generates_its_property_and_settings_in_place(monkeypatch):
    """A property marked x-registry becomes the properties its registry makes, in its place
    (the order in which defaults fill in); a generated key also written by hand is refused."""
    import types

    registry = types.ModuleType("registry_for_a_test")
    registry.schema_properties = lambda key, node: {
        key: {"enum": ["a", "b"], "default": "a"}, "a_setting": {"type": "integer", "default": 3}}
    monkeypatch.setitem(sys.modules, registry.__name__, registry)
    rules = {"properties": {"first": {}, "choice": {"x-registry": registry.__name__},
                            "last": {}}}
    found: list = []
    cfglib._generate(rules, found)
    assert list(rules["properties"]) == ["first", "choice", "a_setting", "last"]
    assert rules["properties"]["choice"] == {"enum": ["a", "b"], "default": "a"}
    assert found == [registry]
    written = {"properties": {"choice": {"x-registry": registry.__name__}, "a_setting": {}}}
    with pytest.raises(cfglib.ConfigError, match="'a_setting' is written in the schema and "
                                                 "generated by registry_for_a_test too"):
        cfglib._generate(written, [])


def test_the_method_registry_checks_a_config_without_loading_torch(repo):
    """Validating a config asks dmae.certify.methods for certify.method: a light registry."""
    script = ("import sys; from dmae import config; config.load(sys.argv[1]); "
              "print(sorted({'torch', 'scipy', 'numpy'} & set(sys.modules)), "
              "'dmae.certify.methods.adaptive' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script, str(repo / "config" / "smoke.yaml")],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "True"]
