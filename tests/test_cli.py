"""The `dmae` command line: user errors are one clear line, conversions land where the
workflow looks for them."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib import metadata

import torch
import yaml
from conftest import BIN, REPO
from data_fixtures import write_imagenet_fixture
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dmae import config as cfglib
from dmae import layout
from dmae.checkpoint import load_checkpoint
from dmae.data import read_manifest
from dmae.models import build_pretrain_model


def dmae(*args, cwd=None):
    return subprocess.run([str(BIN / "dmae"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_every_stage_has_help():
    for stage in ("prepare", "pretrain", "finetune", "certify", "merge-certify", "report",
                  "reconstruct", "import-checkpoint", "validate-config"):
        proc = dmae(stage, "--help")
        assert proc.returncode == 0 and "--config" in proc.stdout, stage


def test_bad_config_is_one_line_naming_the_key(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["finetune"]["epochs"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = dmae("validate-config", "--config", path)
    assert proc.returncode == 2
    assert "finetune.epochs" in proc.stderr and "Traceback" not in proc.stderr


def test_import_checkpoint_lands_where_the_workflow_looks(tmp_path):
    """A bare MAE-layout state dict, as the authors publish, becomes the pretrained checkpoint."""
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results")}
    config_path = tmp_path / "smoke.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    cfg = cfglib.load(config_path)

    model = build_pretrain_model(cfglib.pretrain_settings(cfg, "micro", "dmae")[0])
    state = model.state_dict()
    state["decoder_extra.weight"] = torch.zeros(3)  # unexpected
    del state["decoder_pred.bias"]  # missing
    torch.save(state, tmp_path / "dmae_micro_sigma_0.25_mask_0.75_1e.pth")

    proc = dmae("import-checkpoint", tmp_path / "dmae_micro_sigma_0.25_mask_0.75_1e.pth",
                "--config", config_path, "--model", "micro")
    assert proc.returncode == 0, proc.stderr
    assert "missing keys: decoder_pred.bias" in proc.stdout
    assert "unexpected keys: decoder_extra.weight" in proc.stdout

    imported, meta = load_checkpoint(layout.imported_stem(cfg, "micro", "dmae"))
    assert torch.equal(imported["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert meta["missing_keys"] == ["decoder_pred.bias"]

    proc = dmae("import-checkpoint", tmp_path / "dmae_micro_sigma_0.25_mask_0.75_1e.pth",
                "--config", config_path, "--model", "micro", "--strict",
                "--out", tmp_path / "strict")
    assert proc.returncode == 2 and "decoder_pred.bias" in proc.stderr


def test_a_diverged_training_is_one_line_and_exit_2(tmp_path):
    """A training that blows up (absurd learning rate) stops with one line naming the cause,
    no traceback, so a workflow log shows why the job failed."""
    from data_fixtures import write_fashion_mnist_fixture

    from dmae.data import prepare_dataset

    spec = write_fashion_mnist_fixture(tmp_path / "source", n_train=40, n_test=20)
    prepare_dataset("fashion-mnist", tmp_path / "data" / "prepared", tmp_path / "raw",
                    val_size=8, source_dir=tmp_path / "source", spec=spec)
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results")}
    cfg["finetune"].update(lr=1.0e+30, batch_size=8, max_steps=3)
    path = tmp_path / "diverge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = dmae("finetune", "--config", path, "--model", "micro", "--method", "rs",
                "--sigma", "0.25", "--threads", "1")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "diverged" in errors[0].lower(), proc.stderr
    assert "Traceback" not in proc.stderr


def imagenet_config(tmp_path, imagenet_dir) -> str:
    cfg = yaml.safe_load((REPO / "config" / "imagenet.yaml").read_text())
    cfg["dataset"].update(imagenet_dir=str(imagenet_dir), val_size=2, expected_classes=3)
    cfg["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results")}
    path = tmp_path / "imagenet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_prepare_imports_neither_torchvision_nor_models_nor_training(tmp_path):
    """Every job pays for its imports: `dmae prepare` (of an ImageNet folder of the 3 classes
    its dataset.expected_classes states) loads none of what only the model stages need."""
    root = write_imagenet_fixture(tmp_path / "ILSVRC2012", ["n01000000", "n02000000", "n03000000"])
    heavy = ("torch", "torchvision", "timm", "scipy", "pandas", "dmae.models", "dmae.train")
    # Of dmae.certify, validating the config reads the certification methods' registry only
    # (certify.method and its settings): no certifier, statistics or dataset driver.
    registry = ("dmae.certify", "dmae.certify.base", "dmae.certify.checks",
                "dmae.certify.methods")
    script = ("import sys; from dmae import cli; rc = cli.main(sys.argv[1:]); "
              f"print(sorted(m for m in sys.modules if m in {heavy!r} or ("
              f"m.startswith('dmae.certify') and m not in {registry!r} "
              "and not m.startswith('dmae.certify.methods.')))); sys.exit(rc)")
    proc = subprocess.run([str(BIN / "python"), "-c", script, "prepare", "--config",
                           imagenet_config(tmp_path, root)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert read_manifest(tmp_path / "data" / "prepared" / "imagenet")["num_classes"] == 3


def test_report_and_merge_jobs_load_no_torch(tmp_path):
    """The report reads TSVs and a merge job joins them: neither loads torch or timm (seconds
    a job), and both still run their command."""
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(cfg))
    script = ("import sys; from dmae import cli; rc = cli.main(sys.argv[1:]); "
              "print(sorted({'torch', 'timm', 'torchvision'} & set(sys.modules))); sys.exit(rc)")

    def run(*args):
        return subprocess.run([str(BIN / "python"), "-c", script, *args, "--config",
                               "smoke.yaml"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)

    report = run("report")
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip() == "[]"
    assert "0 of 4 runs certified" in report.stderr
    assert (tmp_path / "results" / "smoke" / "tables" / "certified_accuracy.csv").is_file()
    merge = run("merge-certify", "a.tsv", "b.tsv", "--out", "merged.tsv")
    assert merge.returncode == 2 and merge.stdout.strip() == "[]", merge.stderr
    assert "manifest.json: not found" in merge.stderr and not (tmp_path / "merged.tsv").exists()


def test_a_data_error_is_one_line_and_exit_2(tmp_path):
    proc = dmae("prepare", "--config", imagenet_config(tmp_path, tmp_path / "nowhere"))
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "ImageNet folder not found" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def _extra(name: str) -> set[str]:
    """The distributions pyproject.toml lists as ``dependencies`` or as the extra ``name``."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] if name == "dependencies" else \
        project["optional-dependencies"][name]
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def _modules_of(distributions: set[str]) -> set[str]:
    return {module for module, dists in metadata.packages_distributions().items()
            if any(canonicalize_name(d) in distributions for d in dists)}


def test_the_library_and_its_cli_load_no_workflow_tool():
    """The workflow's tools are pyproject's extra `workflow`: `import dmae` and `dmae --help`
    load none of them, so the library installs and runs without them."""
    tools = _modules_of(_extra("workflow"))
    assert {"snakemake", "dvc", "playwright", "vl_convert"} <= tools
    script = ("import sys; import dmae; from dmae import cli\n"
              "try:\n    cli.main(['--help'])\nexcept SystemExit as done:\n"
              "    assert done.code in (0, None), done.code\n"
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(tools)!r})))")
    proc = subprocess.run([str(BIN / "python"), "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_the_library_imports_only_its_dependencies():
    """Every package that the library (all but dmae.ops, the operations around it) imports
    is one of pyproject's `dependencies`, not of an extra."""
    allowed = _modules_of(_extra("dependencies"))
    src = REPO / "src" / "dmae"
    outside = {}
    for path in sorted(src.rglob("*.py")):
        if path.relative_to(src).parts[0] == "ops":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for top in {name.split(".")[0] for name in names}:
                if top not in sys.stdlib_module_names and top not in ("dmae", "__future__") \
                        and top not in allowed:
                    outside.setdefault(top, []).append(str(path.relative_to(REPO)))
    assert not outside, f"imported, not in pyproject's dependencies: {outside}"
