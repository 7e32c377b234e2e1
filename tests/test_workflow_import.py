"""The authors' published checkpoint, imported with `dmae import-checkpoint`, replaces
pretraining in the workflow for good: it lives where no rule writes (dmae.layout.IMPORTED), so
no file time (fresh clone, touched config or data manifest) plans the pretraining over it, and
a run that starts from another run's checkpoint (CIFAR-10 from ImageNet) takes it as `init`.

Two tiny runs stand for the paper's pair: "imagenet" (smoke-sized, model micro) and
"cifar10", whose pretraining recipe starts from imagenet's micro as CIFAR-10's does from ViT-B.
Dry runs only, except the tests marked slow, which really train (seconds).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess

import pytest
import torch
import yaml
from conftest import BIN, REPO, planned_jobs
from safetensors.torch import load_file
from workflow_runs import snakemake, write_config

from dmae import config as cfglib
from dmae import layout, pipeline
from dmae.io import sha256_file
from dmae.models import build_pretrain_model, encoder_state_dict

SMOKE = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
MODEL, PRE = "micro", "dmae"
UPSTREAM_CKPT = f"results/imagenet/pretrain/{MODEL}/{PRE}/last.safetensors"  # the rule's


def upstream_cfg() -> dict:
    """The "ImageNet" run: one pretraining, one fine-tuning, one certification shard."""
    cfg = copy.deepcopy(SMOKE)
    cfg.update(name="imagenet", sigmas=[0.25], methods={"dmae": SMOKE["methods"]["dmae"]})
    cfg["dataset"]["val_size"] = 40  # of the prepared fixture's 200 training images
    cfg["certify"]["shards"] = 1
    return cfg


def downstream_cfg() -> dict:
    """The "CIFAR-10" run: fine-tunes imagenet's micro as it is (train: false), as the
    paper's in1k recipe does."""
    cfg = upstream_cfg()
    cfg["name"] = "cifar10"
    cfg["pretrainings"] = {"in1k": {**SMOKE["pretrainings"][PRE], "init": UPSTREAM_CKPT,
                                    "train": False}}
    cfg["methods"] = {"dmae": {"pretraining": "in1k", "consistency": True}}
    return cfg


def dry_run(workdir, configfile, *targets):
    return snakemake(workdir, configfile, *targets, "-n")


def job_inputs(proc, rule: str) -> list[list[str]]:
    """The input files of each job of ``rule`` that a dry run lists."""
    blocks = re.split(r"\n(?=(?:local)?rule \w+:\n)", proc.stdout)
    return [re.search(r"^    input: (.*)$", b, re.M)[1].split(", ") for b in blocks
            if re.match(rf"(?:local)?rule {rule}:\n", b)]


def import_authors_file(workdir, configfile) -> str:
    """Write a .pth in the authors' layout (a bare MAE state dict) and import it with the CLI,
    as the README says; return the imported weights' path (relative to ``workdir``)."""
    cfg = cfglib.load(configfile)
    torch.manual_seed(123)
    model = build_pretrain_model(cfglib.pretrain_settings(cfg, MODEL, PRE)[0])
    source = workdir / "dmae_micro_sigma_0.25_mask_0.75_1e.pth"
    torch.save(model.state_dict(), source)
    proc = subprocess.run([str(BIN / "dmae"), "import-checkpoint", str(source), "--config",
                           str(configfile), "--model", MODEL], cwd=workdir, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    imported = layout.imported_stem(cfg, MODEL, PRE).with_suffix(".safetensors")
    assert f"wrote {imported}" in proc.stdout
    assert (workdir / imported).is_file()
    return str(imported)


def set_later(*paths, than) -> None:
    """Give ``paths`` a modification time a minute after ``than``'s (what a touch, a fresh
    clone or a regenerated file does to the times)."""
    later = os.stat(than).st_mtime + 60
    for path in paths:
        os.utime(path, (later, later))


@pytest.fixture
def workdir(tmp_path):
    """A scratch working directory with both configs and prepared-looking data (a dry run
    reads only the manifest's time)."""
    manifest = tmp_path / layout.prepared_dir(cfglib.validate(upstream_cfg())) / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}\n")
    write_config(tmp_path / "imagenet.yaml", upstream_cfg())
    write_config(tmp_path / "cifar10.yaml", downstream_cfg())
    return tmp_path


def test_an_imported_checkpoint_is_never_pretrained_over(workdir):
    configfile = workdir / "imagenet.yaml"
    assert planned_jobs(dry_run(workdir, configfile))["pretrain"] == 1  # before the import
    imported = import_authors_file(workdir, configfile)

    proc = dry_run(workdir, configfile)
    assert "pretrain" not in planned_jobs(proc)
    assert [i[1] for i in job_inputs(proc, "finetune")] == [imported]
    assert [i[0] for i in job_inputs(proc, "reconstructions")] == [imported]

    # A fresh clone, an edited config, a regenerated data manifest: newer than the import,
    # and a pretraining's output from before it, older still, beside it.
    manifest = workdir / layout.prepared_dir(cfglib.load(configfile)) / "manifest.json"
    stale = workdir / UPSTREAM_CKPT
    stale.write_bytes(b"")
    set_later(workdir / imported, than=stale)
    set_later(manifest, configfile, than=workdir / imported)
    jobs = planned_jobs(dry_run(workdir, configfile))
    assert "pretrain" not in jobs and jobs["finetune"] == 1, jobs

    # Asked for by name, the pretraining runs (and the import stays what fine-tuning uses).
    proc = dry_run(workdir, configfile, UPSTREAM_CKPT)
    assert planned_jobs(proc) == {"pretrain": 1}

    # Deleting the imported file brings the pretraining back into the run.
    (workdir / imported).unlink()
    proc = dry_run(workdir, configfile)
    assert planned_jobs(proc)["pretrain"] == 1
    assert [i[1] for i in job_inputs(proc, "finetune")] == [UPSTREAM_CKPT]


def test_another_runs_import_is_the_init_and_its_absence_says_how_to_make_it(workdir):
    downstream = workdir / "cifar10.yaml"
    proc = snakemake(workdir, downstream, "-n", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert f"pretrainings.in1k.init: neither {UPSTREAM_CKPT} nor imported.safetensors" in text
    assert (f"snakemake {UPSTREAM_CKPT} --cores all --configfile config/imagenet.yaml"
            in text)
    assert f"dmae import-checkpoint <file.pth> --config config/imagenet.yaml --model {MODEL}" \
        in text
    assert "MissingInputException" not in text

    imported = import_authors_file(workdir, workdir / "imagenet.yaml")
    proc = dry_run(workdir, downstream)
    assert [i[1] for i in job_inputs(proc, "pretrain")] == [imported]
    jobs = planned_jobs(proc)
    assert jobs["pretrain"] == 1 and jobs["finetune"] == 1, jobs

    # The upstream run's own pretraining, when there is no import, is the init as configured.
    (workdir / imported).unlink()
    (workdir / UPSTREAM_CKPT).write_bytes(b"")
    proc = dry_run(workdir, downstream)
    assert [i[1] for i in job_inputs(proc, "pretrain")] == [UPSTREAM_CKPT]


def test_paper_cifar10_config_without_the_imagenet_checkpoint_stops_with_the_commands(tmp_path):
    proc = snakemake(tmp_path, REPO / "config" / "cifar10.yaml", "-n", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert ("dmae import-checkpoint <file.pth> --config config/imagenet.yaml --model vit_b"
            in text)
    assert "--configfile config/imagenet.yaml" in text
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


@pytest.fixture
def prepared(workdir):
    """Real prepared data: a few synthetic Fashion-MNIST images, prepared by the library."""
    from data_fixtures import write_fashion_mnist_fixture

    from dmae.data import prepare_dataset

    cfg = cfglib.validate(upstream_cfg())
    spec = write_fashion_mnist_fixture(workdir / "source", n_train=200, n_test=20)
    prepared = workdir / layout.prepared_dir(cfg)
    (prepared / "manifest.json").unlink()
    prepare_dataset("fashion-mnist", prepared.parent, workdir / "raw",
                    val_size=cfg["dataset"]["val_size"], source_dir=workdir / "source", spec=spec)
    return workdir


@pytest.mark.slow
def test_fine_tuning_really_starts_from_the_imported_weights(prepared):
    """One fine-tuning step at a learning rate of 1e-12 leaves the encoder where it started:
    its tensors are the imported ones (and the recorded origin says so)."""
    workdir, configfile = prepared, prepared / "imagenet.yaml"
    raw = upstream_cfg()
    raw["finetune"].update(lr=1e-12, max_steps=1)
    write_config(configfile, raw)
    imported = import_authors_file(workdir, configfile)
    cfg = cfglib.load(configfile)
    finetuned = layout.finetune_dir(cfg, MODEL, "dmae", "0.25")
    figure = layout.reconstruction_figure(cfg, MODEL, PRE)
    snakemake(workdir, configfile, str(finetuned / "best.safetensors"), str(figure),
              "--cores", "1")

    meta = json.loads((workdir / finetuned / "best.json").read_text())
    assert meta["pretrained"] == {"path": imported,
                                  "sha256": sha256_file(workdir / imported)}
    start = encoder_state_dict(load_file(workdir / imported))
    end = load_file(workdir / finetuned / "best.safetensors")
    shared = [k for k in start if k in end]
    assert len(shared) > 10 and any(k.startswith("blocks.") for k in shared)
    for key in shared:
        assert torch.allclose(end[key], start[key], rtol=0, atol=1e-8), key
    assert (workdir / figure).stat().st_size > 0
    assert not (workdir / UPSTREAM_CKPT).exists(), "pretrained although imported"
    assert planned_jobs(dry_run(workdir, configfile, str(finetuned / "best.safetensors"))) == {}


@pytest.mark.slow
def test_continued_pretraining_really_starts_from_another_runs_import(prepared):
    workdir = prepared
    imported = import_authors_file(workdir, workdir / "imagenet.yaml")
    cfg = cfglib.load(workdir / "cifar10.yaml")
    target = layout.pretrain_checkpoint(cfg, MODEL, "in1k")
    snakemake(workdir, workdir / "cifar10.yaml", str(target), "--cores", "1")
    meta = json.loads((workdir / target.with_suffix(".json")).read_text())
    assert meta["init"] == {"path": imported, "sha256": sha256_file(workdir / imported)}


def test_the_help_for_an_init_outside_any_run_names_the_file_and_the_import(tmp_path):
    text = pipeline.missing_init_help("in1k", "checkpoints/mine.safetensors", tmp_path)
    assert text.startswith("pretrainings.in1k.init: checkpoints/mine.safetensors: no such")
    assert "dmae import-checkpoint --out" in text
    # a run's checkpoint whose config the repository lacks: the config is named by its name
    other = pipeline.missing_init_help("in1k", UPSTREAM_CKPT, tmp_path)
    assert "--configfile <the config with name: imagenet>" in other
