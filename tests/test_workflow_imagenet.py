"""The ImageNet pipeline end to end, on a tiny ILSVRC2012-format folder of real JPEG files.

A config derived from config/imagenet.yaml (only what must shrink is overridden: the folder,
model size, image size, steps, certification budget, resources, CPU) runs through every stage
with the real snakemake: indexing, DMAE pretraining and its reconstruction figure, fine-tuning
at the paper's three sigmas, certification of every 50th ILSVRC validation image in two
shards, the merge, and the report with its comparison to the paper's Table 1. Images are
decoded from the JPEG files by the project's own loader and transforms.

The folder has four real wnids, the number of classes its config's dataset.expected_classes
states (ImageNet's 1000 would only add folders to write and index), with a dozen or so
training JPEGs each, named as the real files are. Its validation folder is the certification
test split: 1250 images, every 50th of which (25) is certified.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import BIN, REPO, planned_jobs
from data_fixtures import imagenet_class_colour, write_imagenet_fixture
from PIL import Image
from workflow_runs import snakemake, write_config

from dmae import config as cfglib
from dmae import layout
from dmae.data import get_dataset, load_split, read_manifest
from dmae.report import registry
from dmae.report.analysis import radius_ceiling
from dmae.report.reference import REFERENCE_RESULTS

# n01440764 comes third: write_imagenet_fixture(odd_modes=True) makes the first validation
# file of the third wnid a CMYK JPEG, and this wnid sorts first, so that file is test image 0,
# the first one certified. The second wnid gets a greyscale JPEG, the fourth a PNG named .JPEG
# (ILSVRC2012 has greyscale and CMYK JPEGs, and a PNG named .JPEG).
WNIDS = ["n01484850", "n01491361", "n01440764", "n01443537"]
# In WNIDS' order; unequal, so that a label mix-up shows in the class counts. 54 training
# images: 20 held out for validation leave 34, two full steps of 16.
TRAIN_PER_CLASS = [14, 12, 13, 15]
VAL_PER_CLASS = [320, 310, 315, 305]
SIZE = (44, 36)  # width, height: neither square nor img_size, so resizing and cropping matter
IMG_SIZE = 32
SIGMAS = ["0.25", "0.5", "1.0"]


def tiny_imagenet_cfg(imagenet_dir: Path) -> dict:
    """config/imagenet.yaml with only what must shrink overridden."""
    cfg = yaml.safe_load((REPO / "config" / "imagenet.yaml").read_text())
    cfg["dataset"].update(imagenet_dir=str(imagenet_dir), val_size=20,
                          expected_classes=len(WNIDS))
    # One model: ViT-B's entry (its fine-tuning blr, layer decay, drop path and its paper
    # name) on the tiny vit_micro at 32 px. ViT-L would run the same chain a second time.
    vit_b = cfg["models"]["vit_b"]
    vit_b.update(arch="vit_micro", img_size=IMG_SIZE, patch_size=8)
    vit_b["pretrain"]["epochs"] = vit_b["finetune"]["epochs"] = 1
    cfg["models"] = {"vit_b": vit_b}
    # One method: DMAE fine-tuning with consistency regularization, mixup, cutmix and
    # RandAugment. Linear probing (dmae_linprobe) would add 12 jobs (3 fine-tunings, 6 shards,
    # 3 merges), each spending 5-10 s of CPU starting torch: about 45 s more on 2 idle cores,
    # which the 2-3 minutes this test may take cannot afford (the chain with it ran by hand).
    cfg["methods"] = {"dmae": cfg["methods"]["dmae"]}
    short = {"epochs": 1, "warmup_epochs": 0, "batch_size": 16, "accum_iter": 1, "max_steps": 2}
    cfg["pretrain"].update(short)
    cfg["finetune"].update(short, eval_noise_samples=2)
    cfg["certify"].update(n0=8, n=32, batch_size=40, shards=2)  # stride 50 stays
    cfg["resources"] = {group: {"gpus": 0, "threads": 1, "mem_mb": 2000, "runtime": 10}
                        for group in cfg["resources"]}
    cfg["runtime"].update(device="cpu", num_workers=0, amp="off", compile=False)
    return cfg


@pytest.fixture(scope="module")
def imagenet_run(tmp_path_factory):
    """The whole chain, run once: (workdir, ImageNet folder, config, snakemake's process)."""
    workdir = tmp_path_factory.mktemp("imagenet")
    root = write_imagenet_fixture(workdir / "ILSVRC2012", WNIDS, TRAIN_PER_CLASS,
                                  VAL_PER_CLASS, size=SIZE, ilsvrc_names=True,
                                  class_colours=True, odd_modes=True)
    path = write_config(workdir / "imagenet.yaml", tiny_imagenet_cfg(root))
    proc = snakemake(workdir, path, "--cores", "2")
    return workdir, root, cfglib.load(path), proc


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ","))


def test_the_config_keeps_the_papers_settings():
    cfg = cfglib.validate(tiny_imagenet_cfg(Path("/nonexistent")))
    paper = cfglib.load(REPO / "config" / "imagenet.yaml")
    assert cfg["sigmas"] == paper["sigmas"] == [0.25, 0.5, 1.0]
    assert cfg["certify"]["stride"] == paper["certify"]["stride"] == 50
    assert cfg["certify"]["split"] == "test" and cfg["report"] == paper["report"]
    assert paper["dataset"]["expected_classes"] is None  # ImageNet's 1000 classes
    assert cfg["finetune_per_sigma"] == paper["finetune_per_sigma"]
    assert (cfg["models"]["vit_b"]["in_chans"], cfg["models"]["vit_b"]["mean"]) == (
        3, paper["models"]["vit_b"]["mean"])


@pytest.mark.slow
def test_every_stage_ran_and_left_its_outputs_and_logs(imagenet_run):
    workdir, _, cfg, proc = imagenet_run
    runs = len(SIGMAS)
    assert planned_jobs(proc) == {"prepare_data": 1, "pretrain": 1, "reconstructions": 1,
                                  "finetune": runs, "certify_shard": 2 * runs,
                                  "merge_certify": runs, "report": 1, "default": 1}
    assert layout.runs(cfg) == [("vit_b", "dmae", s) for s in SIGMAS]
    outputs = [*registry.table_paths(cfg), *registry.figure_paths(cfg),
               layout.reconstruction_figure(cfg, "vit_b", "dmae"),
               layout.pretrain_dir(cfg, "vit_b", "dmae") / "last.safetensors"]
    for sigma in SIGMAS:
        outputs += [layout.finetune_dir(cfg, "vit_b", "dmae", sigma) / "best.safetensors",
                    layout.certify_tsv(cfg, "vit_b", "dmae", sigma),
                    *(layout.certify_shard_tsv(cfg, "vit_b", "dmae", sigma, k) for k in (0, 1))]
    for path in outputs:
        assert (workdir / path).stat().st_size > 0, path
    with Image.open(workdir / layout.reconstruction_figure(cfg, "vit_b", "dmae")) as figure:
        assert figure.format == "PNG"
    for sigma in SIGMAS:  # the merge is its shards' rows, each image once, in image order
        def rows(path):
            header, *lines = (workdir / path).read_text().splitlines()
            return header, lines
        header, merged = rows(layout.certify_tsv(cfg, "vit_b", "dmae", sigma))
        shards = [rows(layout.certify_shard_tsv(cfg, "vit_b", "dmae", sigma, k)) for k in (0, 1)]
        assert all(h == header for h, _ in shards) and all(lines for _, lines in shards)
        expected = sorted((r for _, lines in shards for r in lines),
                          key=lambda r: int(r.split("\t")[0]))
        assert merged == expected
        assert len({r.split("\t")[0] for r in merged}) == len(merged)

    logs = workdir / layout.results_dir(cfg) / "logs"
    expected = {"prepare_imagenet.log": "prepared imagenet",
                "pretrain/vit_b_dmae.log": "pretrain: 1 epochs x",
                "reconstructions/vit_b_dmae.log": "reconstructions ->",
                "report.log": "report of imagenet: 3 of 3 runs certified"}
    for sigma in SIGMAS:
        expected[f"finetune/vit_b_dmae_sigma_{sigma}.log"] = "finetune: 1 epochs x"
        expected[f"certify/vit_b_dmae_sigma_{sigma}_merge.log"] = "merged 2 shards"
        for k in (0, 1):
            expected[f"certify/vit_b_dmae_sigma_{sigma}_shard_{k}.log"] = "certified"
    for name, line in expected.items():
        assert line in (logs / name).read_text(), name


@pytest.mark.slow
def test_the_index_lists_every_file_of_each_class(imagenet_run):
    workdir, root, cfg, _ = imagenet_run
    prepared = workdir / layout.prepared_dir(cfg)
    manifest = read_manifest(prepared)
    by_label = sorted(range(len(WNIDS)), key=lambda k: WNIDS[k])  # label -> position in WNIDS
    assert manifest["wnids"] == manifest["class_names"] == sorted(WNIDS)
    assert manifest["imagenet_root"] == str(root.resolve())
    assert manifest["class_counts"]["test"] == [VAL_PER_CLASS[k] for k in by_label]
    train_plus_val = np.add(manifest["class_counts"]["train"], manifest["class_counts"]["val"])
    assert train_plus_val.tolist() == [TRAIN_PER_CLASS[k] for k in by_label]
    assert manifest["counts"] == {"train": sum(TRAIN_PER_CLASS) - 20, "val": 20,
                                  "test": sum(VAL_PER_CLASS)}

    # The index holds exactly the files on disk, each labelled by its folder's sorted position.
    for split, folder, pattern in (("test", "val", "ILSVRC2012_val_????????.JPEG"),
                                   ("train", "train", "n????????_*.JPEG")):
        rows = _rows(prepared / f"{split}.csv")
        if split == "train":
            rows += _rows(prepared / "val.csv")
        on_disk = {p.relative_to(root).as_posix() for p in (root / folder).glob(f"*/{pattern}")}
        assert sorted(r["path"] for r in rows) == sorted(on_disk)
        assert all(int(r["label"]) == sorted(WNIDS).index(r["path"].split("/")[1])
                   for r in rows)
    test_paths = [r["path"] for r in _rows(prepared / "test.csv")]
    assert test_paths == sorted(test_paths)  # ImageFolder's order: wnid, then file name


@pytest.mark.slow
def test_the_certified_images_are_every_50th_validation_image(imagenet_run):
    workdir, _, cfg, _ = imagenet_run
    test = load_split(workdir / layout.prepared_dir(cfg), "test")
    assert len(test) == sum(VAL_PER_CLASS) == 1250
    expected = list(range(0, len(test), 50))
    assert len(expected) == 25
    for sigma in SIGMAS:
        merged = _rows(workdir / layout.certify_tsv(cfg, "vit_b", "dmae", sigma))
        assert [int(r["idx"]) for r in merged] == expected
        assert [int(r["label"]) for r in merged] == [int(test.targets[i]) for i in expected]
        for r in merged:
            assert r["correct"] == str(int(r["predict"] == r["label"]))
            assert (int(r["n0"]), int(r["n"])) == (8, 32)
            assert float(r["radius"]) <= ceiling(sigma) and int(r["predict"]) < len(WNIDS)
        shards = [[int(r["idx"]) for r in _rows(
            workdir / layout.certify_shard_tsv(cfg, "vit_b", "dmae", sigma, k))] for k in (0, 1)]
        assert all(shards) and sorted(shards[0] + shards[1]) == expected


def ceiling(sigma: str) -> float:
    """The largest radius n = 32 samples at alpha = 0.001 can certify (up to rounding: CERTIFY
    computes it another way, which can land one ulp above)."""
    return radius_ceiling(32, 0.001, float(sigma)) * (1 + 1e-12)


@pytest.mark.slow
def test_the_jpegs_decode_to_their_colours_at_img_size(imagenet_run):
    """The project's loader and evaluation transform give 3 x 32 x 32 tensors whose channels
    are the colours the files were written with (a greyscale or channel-swapped decode fails
    this), CMYK and greyscale JPEGs and a PNG named .JPEG included; the checkpoints were built
    for that size and channel count."""
    workdir, root, cfg, _ = imagenet_run
    prepared = workdir / layout.prepared_dir(cfg)
    imagenet = get_dataset("imagenet")
    test = load_split(prepared, "test", imagenet.transform(False, IMG_SIZE))
    with Image.open(root / test.paths[0]) as first:
        assert first.format == "JPEG" and first.mode == "CMYK"
    for index in range(0, len(test), 50):
        image, label = test[index]
        assert image.shape == (3, IMG_SIZE, IMG_SIZE) and image.dtype == torch.float32
        colour = torch.tensor(imagenet_class_colour(label) / 255.0, dtype=torch.float32)
        assert torch.allclose(image.mean(dim=(1, 2)), colour, atol=0.02), (index, label)

    # The first training file of the second wnid is a greyscale JPEG, of the fourth a PNG.
    evaluated = {split: load_split(prepared, split, imagenet.transform(False, IMG_SIZE))
                 for split in ("train", "val")}
    for wnid, kind in ((WNIDS[1], ("JPEG", "L")), (WNIDS[3], ("PNG", "RGB"))):
        # the first one written: the lowest number (<wnid>_<number>.JPEG), not the first name
        path = min((root / "train" / wnid).iterdir(), key=lambda p: int(p.stem.split("_")[1]))
        with Image.open(path) as raw:
            assert path.suffix == ".JPEG" and (raw.format, raw.mode) == kind
        rel = path.relative_to(root).as_posix()
        data = next(d for d in evaluated.values() if rel in d.paths)
        image, label = data[data.paths.index(rel)]
        assert image.shape == (3, IMG_SIZE, IMG_SIZE) and label == sorted(WNIDS).index(wnid)
        if kind[1] == "L":
            assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
        else:
            colour = torch.tensor(imagenet_class_colour(label) / 255.0, dtype=torch.float32)
            assert torch.allclose(image.mean(dim=(1, 2)), colour, atol=0.02)

    train = load_split(prepared, "train", imagenet.transform(
        True, IMG_SIZE, task="finetune", randaugment=cfg["finetune"]["randaugment"]))
    assert train[0][0].shape == (3, IMG_SIZE, IMG_SIZE)
    for sigma in SIGMAS:
        meta = yaml.safe_load((workdir / layout.finetune_dir(cfg, "vit_b", "dmae", sigma)
                               / "best.json").read_text())
        assert (meta["model_cfg"]["img_size"], meta["model_cfg"]["in_chans"]) == (IMG_SIZE, 3)
        assert meta["num_classes"] == len(WNIDS)  # the prepared manifest's


@pytest.mark.slow
def test_the_cmyk_jpeg_certifies_as_its_row(imagenet_run):
    """`dmae certify-image` on test image 0's file (the CMYK JPEG) gives that image's row of
    the workflow's certification: the row is that file, decoded as the file is."""
    workdir, root, cfg, _ = imagenet_run
    test = load_split(workdir / layout.prepared_dir(cfg), "test")
    row = _rows(workdir / layout.certify_tsv(cfg, "vit_b", "dmae", "0.5"))[0]
    checkpoint = layout.finetune_dir(cfg, "vit_b", "dmae", "0.5") / "best.safetensors"
    proc = subprocess.run(
        [str(BIN / "dmae"), "certify-image", "--config",
         str(layout.results_dir(cfg) / "config.yaml"), "--checkpoint", str(checkpoint),
         "--sigma", "0.5", "--image", str(root / test.paths[0]), "--index", "0",
         "--label", str(int(test.targets[0])), "--threads", "1"],
        cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    predicted = -1 if got["class"] == "abstain" else int(got["class"].split()[0])
    assert (predicted, got["radius"], got["pA_lower"], got["nA"]) == (
        int(row["predict"]), row["radius"], row["pA_lower"], row["nA"])


@pytest.mark.slow
def test_the_paper_comparison_names_table_1_and_this_run(imagenet_run):
    workdir, _, cfg, _ = imagenet_run
    tables = workdir / layout.results_dir(cfg) / "tables"
    table = pd.read_csv(tables / "paper_comparison.csv", dtype={"paper %": str, "this run %": str})
    reference = pd.read_csv(REFERENCE_RESULTS)
    reference = reference[(reference["dataset"] == "imagenet") & (reference["sigma"] == "best")]
    imagenet = table[table["dataset"] == "imagenet"]
    published = imagenet[imagenet["paper %"] != "—"]
    assert list(dict.fromkeys(published["method"])) == list(dict.fromkeys(reference["method"]))
    assert {"RS (Cohen et al.)", "DMAE ViT-B", "DMAE ViT-L"} <= set(published["method"])
    assert sorted(zip(published["method"], published["radius"],
                      published["paper %"].astype(float), strict=True)) == sorted(
        zip(reference["method"], reference["radius"], reference["certified_accuracy_pct"],
            strict=True))

    # This run is the paper's DMAE ViT-B; its numbers are the best over sigma of its TSVs.
    ours = published[published["method"] == "DMAE ViT-B"]
    assert set(ours["run"]) == {"DMAE"} and ours["radius"].tolist() == [0.5, 1.0, 1.5, 2.0, 3.0]
    tsvs = [pd.read_csv(workdir / layout.certify_tsv(cfg, "vit_b", "dmae", s), sep="\t")
            for s in SIGMAS]
    for radius, value in zip(ours["radius"], ours["this run %"], strict=True):
        best = max(100 * ((df["correct"] == 1) & (df["radius"] >= radius)).mean() for df in tsvs)
        assert float(value) == pytest.approx(best, abs=0.05)
    assert set(published.loc[published["method"] == "DMAE ViT-L", "this run %"]) == {"not run"}

    per_sigma = pd.read_csv(tables / "certified_accuracy.csv")
    assert sorted(per_sigma["sigma"]) == [0.25, 0.5, 1.0]
    assert (per_sigma["images"] == 25).all()
    assert "one test image in 50" in (tables / "summary.md").read_text()


def tiny_ablation_cfg(imagenet_dir: Path) -> dict:
    """config/imagenet.yaml's ablations on the tiny ViT-B: every ViT-B method (DMAE and MAE,
    each fine-tuned with consistency regularization and probed; DMAE with cross-entropy only)
    at one sigma, one shard each."""
    cfg = tiny_imagenet_cfg(imagenet_dir)
    paper = yaml.safe_load((REPO / "config" / "imagenet.yaml").read_text())
    cfg["methods"] = {name: spec for name, spec in paper["methods"].items()
                      if "vit_b" in spec.get("models", ["vit_b"])}
    cfg["pretrainings"] = paper["pretrainings"]
    for spec in cfg["methods"].values():
        if "finetune" in spec:  # the probe's 90 epochs, batch 512: the tiny run's instead
            spec["finetune"].update(epochs=1, warmup_epochs=0, batch_size=16, accum_iter=1,
                                    max_steps=2)
    cfg["sigmas"] = [0.5]
    cfg["finetune_per_sigma"] = {}  # its sigma 1.0 entry: not run here
    cfg["certify"]["shards"] = 1
    return cfg


@pytest.mark.slow
def test_the_ablation_chain_runs_and_the_report_compares_dmae_with_mae(tmp_path):
    root = write_imagenet_fixture(tmp_path / "ILSVRC2012", WNIDS, TRAIN_PER_CLASS,
                                  VAL_PER_CLASS, size=SIZE, ilsvrc_names=True,
                                  class_colours=True)
    path = write_config(tmp_path / "imagenet-ablation.yaml", tiny_ablation_cfg(root))
    proc = snakemake(tmp_path, path, "--cores", "2")
    cfg = cfglib.load(path)
    methods = ["dmae", "dmae_linprobe", "dmae_ce", "mae", "mae_linprobe"]
    assert set(cfg["methods"]) == set(methods)
    assert planned_jobs(proc) == {"prepare_data": 1, "pretrain": 2, "reconstructions": 2,
                                  "finetune": 5, "certify_shard": 5, "merge_certify": 5,
                                  "report": 1, "default": 1}
    tables = tmp_path / layout.results_dir(cfg) / "tables"
    ablation = pd.read_csv(tables / "pretraining_ablation.csv")
    assert list(zip(ablation["downstream"], ablation["method"], strict=True)) == [
        ("fine-tuning + CR", "DMAE"), ("fine-tuning + CR", "MAE"),
        ("linear probe", "DMAE (linear probe)"), ("linear probe", "MAE (linear probe)")]
    assert (ablation["images"] == 25).all()
    paper = pd.read_csv(tables / "paper_table.csv", dtype=str)
    ours = paper[paper["source"] == "this run"]
    assert sorted(ours["method"]) == sorted(cfg["methods"][m]["label"] for m in methods)
    assert set(ours["#params"]) == {"87M"} and set(ours["extra data"]) == {"no"}
    per_sigma = pd.read_csv(tables / "paper_per_sigma.csv", dtype=str)
    assert per_sigma["method"].iloc[0] == "RS (Cohen et al.)" and set(per_sigma["sigma"]) == {
        "0.5"}
