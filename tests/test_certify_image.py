"""`dmae certify-image` and `dmae predict-image`: an image file, written from a dataset image,
certifies to exactly that image's row of the dataset run; bad files are one line and exit 2.

Real computation throughout: a tiny Fashion-MNIST-format dataset, a randomly initialized
micro ViT saved as a fine-tuned checkpoint (its votes give abstentions, certificates and
adaptive early stops), and the real certification stage. The commands run in-process through
``dmae.cli.main``, so that the dataset run and the command use the same CPU kernels and the
results can be compared exactly; one run goes through the installed ``dmae`` script.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import BIN, REPO
from data_fixtures import write_fashion_mnist_fixture
from PIL import Image

from dmae import cli, layout
from dmae import config as cfglib
from dmae.certify import build_certifier, method_settings
from dmae.certify.image import load_image, with_method
from dmae.certify.stage import certify, load_classifier
from dmae.checkpoint import load_checkpoint, save_checkpoint
from dmae.data import get_dataset, load_split, parse_idx, prepare_dataset
from dmae.models import build_downstream

SIGMA = 0.25
INDICES = [1, 4, 7, 10]  # certify.start 1, stride 3 over 12 test images


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for this module, as for both the dataset runs and the commands (the
    micro model is faster so, and the comparison exact whatever the machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    """Dataset, checkpoints, configs, the dataset runs' TSVs and the raw test images."""
    tmp = tmp_path_factory.mktemp("certify_image")
    spec = write_fashion_mnist_fixture(tmp / "source", n_train=20, n_test=12)
    prepare_dataset("fashion-mnist", tmp / "data" / "prepared", tmp / "raw", val_size=4,
                    source_dir=tmp / "source", spec=spec)
    raw = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    raw["paths"] = {"data": str(tmp / "data"), "results": str(tmp / "results")}
    # cohen by default; the adaptive settings are used when --method adaptive overrides it.
    raw["certify"].update(n0=10, n=100, stride=3, start=1, batch_size=64, first_look=20,
                          radii=[0.0, 0.25, 0.5])
    configs = {"cohen": tmp / "cohen.yaml", "mismatch": tmp / "mismatch.yaml"}
    configs["cohen"].write_text(yaml.safe_dump(raw))
    raw["certify"].update(method="adaptive", stop_on_mismatch=True)
    configs["mismatch"].write_text(yaml.safe_dump(raw))
    cfg = cfglib.load(configs["cohen"])

    model_cfg, _ = cfglib.finetune_settings(cfg, "micro", "rs", SIGMA)
    torch.manual_seed(0)
    checkpoints = {}
    for name, classes in (("ten", 10), ("five", 5)):
        model = build_downstream(model_cfg, classes, "finetune")
        checkpoints[name] = save_checkpoint(
            tmp / name / "best", model.state_dict(),
            {"model_cfg": model_cfg, "num_classes": classes, "task": "finetune"})

    runs = {"cohen": cfg, "adaptive": with_method(cfg, "adaptive"),
            "mismatch": cfglib.load(configs["mismatch"])}
    tsvs = {}
    for name, run_cfg in runs.items():
        certify(run_cfg, checkpoints["ten"], SIGMA, tmp / f"{name}.tsv")
        tsvs[name] = pd.read_csv(tmp / f"{name}.tsv", sep="\t", dtype=str).set_index("idx")

    def raw_array(source):
        return parse_idx(gzip.decompress((tmp / "source" / source.name).read_bytes()))

    images, labels = raw_array(spec.test_images), raw_array(spec.test_labels)
    return {"tmp": tmp, "cfg": cfg, "configs": configs, "checkpoints": checkpoints,
            "tsvs": tsvs, "images": images, "labels": labels}


def write_png(setup, index: int, mode: str = "L"):
    path = setup["tmp"] / f"test_{index}_{mode}.png"
    Image.fromarray(setup["images"][index], mode="L").convert(mode).save(path)
    return path


@pytest.fixture
def dmae(capsys):
    """Run ``dmae ARGS`` in this process: (exit code, stdout, stderr). Logging and the
    environment the CLI sets up are put back afterwards."""
    root = logging.getLogger()
    handlers, level, environ = root.handlers[:], root.level, dict(os.environ)

    def run(*args):
        capsys.readouterr()
        code = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    root.handlers[:] = handlers
    root.setLevel(level)
    for key in set(os.environ) - set(environ):
        del os.environ[key]
    os.environ.update(environ)


def fields(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.splitlines())


def test_the_file_gives_the_tensor_the_dataset_run_certifies(setup):
    _, meta = load_classifier(setup["checkpoints"]["ten"])
    cfg = setup["cfg"]
    split = load_split(layout.prepared_dir(cfg), "test",
                       get_dataset("fashion-mnist").transform(False, 28))
    for index in INDICES:
        expected = split[index][0]
        assert torch.equal(load_image(write_png(setup, index), cfg, meta), expected)
        # An RGB file whose channels are equal is the same grayscale image.
        assert torch.equal(load_image(write_png(setup, index, "RGB"), cfg, meta), expected)


def test_rgb_datasets_read_the_file_as_their_splits_do(tmp_path):
    """CIFAR-10: pixels / 255 as a prepared split (grayscale replicated); ImageNet: the PIL RGB
    image through its evaluation transform, as ImageIndexSplit does."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "cifar.png")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "gray.png")
    rgb = {"model_cfg": {"img_size": 224, "in_chans": 3}}
    cifar = {"dataset": {"name": "cifar10"}}
    expected = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255.0)
    assert torch.equal(load_image(tmp_path / "cifar.png", cifar, rgb), expected)
    assert torch.equal(load_image(tmp_path / "gray.png", cifar, rgb),
                       expected[:1].expand(3, -1, -1))
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "in.jpg")
    with Image.open(tmp_path / "in.jpg") as img:
        expected = get_dataset("imagenet").transform(False, 224)(img.convert("RGB"))
    got = load_image(tmp_path / "in.jpg", {"dataset": {"name": "imagenet"}}, rgb)
    assert got.shape == (3, 224, 224) and torch.equal(got, expected)


@pytest.mark.parametrize("method", ["cohen", "adaptive"])
def test_certify_image_equals_the_dataset_runs_row(setup, dmae, method):
    """Every certified image, both methods: class, radius, pA_lower (full precision), nA, the
    samples and correctness equal the TSV row of that index."""
    rows = setup["tsvs"][method]
    seen = set()
    for index in INDICES:
        row = rows.loc[str(index)]
        label = int(setup["labels"][index])
        assert int(row["label"]) == label
        code, out, err = dmae("certify-image", "--config", setup["configs"]["cohen"],
                              "--checkpoint", setup["checkpoints"]["ten"], "--sigma", SIGMA,
                              "--image", write_png(setup, index), "--index", index,
                              "--label", label, "--method", method)
        assert code == 0, err
        got = fields(out)
        predicted = -1 if got["class"] == "abstain" else int(got["class"].split()[0])
        assert predicted == int(row["predict"])
        assert got["radius"] == row["radius"] and got["pA_lower"] == row["pA_lower"]
        assert got["nA"] == row["nA"]
        bound = "100 (cohen)" if method == "cohen" else "of at most 100 (adaptive)"
        assert got["samples"].startswith(f"n0 = 10, estimation = {row['n_used']} ")
        assert got["samples"].endswith(bound)
        assert got["correct"].startswith("yes" if row["correct"] == "1" else "no")
        seen.add(("abstain" if predicted == -1 else "class", int(row["n_used"]) < 100))
    if method == "adaptive":  # the fixture exercises both outcomes and an early stop
        assert {kind for kind, _ in seen} == {"abstain", "class"}
        assert any(early for _, early in seen)


def test_stop_on_mismatch_needs_the_label_and_then_matches_the_row(setup, dmae):
    rows = setup["tsvs"]["mismatch"]
    stopped = [i for i in INDICES if rows.loc[str(i), "n_used"] == "0"]
    assert stopped, "the fixture should have a misclassified image"
    index = stopped[0]
    args = ("certify-image", "--config", setup["configs"]["mismatch"], "--checkpoint",
            setup["checkpoints"]["ten"], "--sigma", SIGMA, "--image", write_png(setup, index),
            "--index", index)
    assert rows.loc[str(index), "predict"] == "-2"  # its own status, not ABSTAIN
    code, out, _ = dmae(*args, "--label", setup["labels"][index])
    got = fields(out)
    assert code == 0 and got["pA_lower"] == "0.0"
    assert got["class"] == "none: the selected class is not the label, no certificate attempted"
    assert got["samples"] == ("n0 = 10, estimation = 0 of at most 100 (adaptive, stopped "
                              "after selection: the selected class is not the label)")
    assert got["correct"].startswith("no")
    code, out, _ = dmae(*args)  # without a label nothing stops it
    assert code == 0 and int(fields(out)["samples"].split("estimation = ")[1].split()[0]) > 0


@pytest.mark.parametrize("method", ["cohen", "adaptive"])
def test_predict_image_is_predict_on_the_dataset_image(setup, dmae, method):
    cfg = with_method(setup["cfg"], method)
    model, meta = load_classifier(setup["checkpoints"]["ten"])
    split = load_split(layout.prepared_dir(cfg), "test",
                       get_dataset("fashion-mnist").transform(False, 28))
    name, sampling = method_settings(cfg)
    certifier = build_certifier(name, model, 10, SIGMA, batch_size=64, device="cpu", **sampling)
    for index in INDICES[:2]:
        expected = certifier.predict(split[index][0], certifier.generator(0, index))
        code, out, err = dmae("predict-image", "--config", setup["configs"]["cohen"],
                              "--checkpoint", setup["checkpoints"]["ten"], "--sigma", SIGMA,
                              "--image", write_png(setup, index), "--index", index,
                              "--method", method)
        assert code == 0, err
        got = fields(out)
        assert set(got) == {"class", "samples"}
        assert got["class"].split()[0] == ("abstain" if expected.prediction == -1
                                           else str(expected.prediction))
        assert got["samples"] == (f"{expected.n_used} (cohen)" if method == "cohen" else
                                  f"{expected.n_used} of at most 100 (adaptive)")


def test_the_installed_command_predicts_a_jpeg(setup):
    """JPEG is lossy, so the dataset's image is not the reference: the console script answers
    what PREDICT answers on the file as the library reads it (noise of image 0)."""
    path = setup["tmp"] / "test_4.jpg"
    Image.fromarray(setup["images"][4], mode="L").save(path, quality=90)
    proc = subprocess.run(
        [str(BIN / "dmae"), "predict-image", "--config", str(setup["configs"]["cohen"]),
         "--checkpoint", str(setup["checkpoints"]["ten"]), "--sigma", str(SIGMA),
         "--image", str(path), "--threads", "1"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    model, meta = load_classifier(setup["checkpoints"]["ten"])
    name, sampling = method_settings(setup["cfg"])
    certifier = build_certifier(name, model, 10, SIGMA, batch_size=64, device="cpu", **sampling)
    expected = certifier.predict(load_image(path, setup["cfg"], meta), certifier.generator(0, 0))
    got = fields(proc.stdout)
    assert got["class"].split()[0] == ("abstain" if expected.prediction == -1
                                       else str(expected.prediction))
    assert got["samples"] == "100 (cohen)"


def bad_inputs(setup):
    tmp = setup["tmp"]
    (tmp / "notes.png").write_text("not an image\n")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp / "big.png")
    Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(tmp / "color.png")
    rgba = np.dstack([setup["images"][1]] * 3 + [np.full((28, 28), 7, dtype=np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp / "clear.png")
    Image.fromarray(setup["images"][1], mode="L").save(tmp / "test.bmp")
    png = write_png(setup, 1)
    ten, five = setup["checkpoints"]["ten"], setup["checkpoints"]["five"]
    return {  # case: (image, checkpoint, extra arguments, what the one line names)
        "missing": (tmp / "absent.png", ten, (), ["absent.png", "not found"]),
        "text": (tmp / "notes.png", ten, (), ["notes.png", "not a readable PNG or JPEG"]),
        "size": (tmp / "big.png", ten, (), ["big.png", "32x32", "28x28"]),
        "color": (tmp / "color.png", ten, (), ["color.png", "grayscale"]),
        "transparent": (tmp / "clear.png", ten, (), ["clear.png", "transparent"]),
        "format": (tmp / "test.bmp", ten, (), ["test.bmp", "BMP", "PNG or JPEG"]),
        "classes": (png, five, (), [str(five), "5-class", "10 classes"]),
        "label": (png, ten, ("--label", "10"), ["label", "0..9", "10"]),
        "index": (png, ten, ("--index", "-1"), ["index", ">= 0"]),
    }


@pytest.mark.parametrize("case", ["missing", "text", "size", "color", "transparent", "format",
                                  "classes", "label", "index"])
def test_bad_input_is_one_line_and_exit_2(setup, dmae, case):
    image, checkpoint, extra, named = bad_inputs(setup)[case]
    code, out, err = dmae("certify-image", "--config", setup["configs"]["cohen"],
                          "--checkpoint", checkpoint, "--sigma", SIGMA, "--image", image,
                          *extra)
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(errors) == 1 and all(word in errors[0] for word in named), err


@pytest.mark.parametrize(("expected_classes", "count"), [(None, 1000), (100, 100)])
def test_without_a_prepared_folder_the_class_count_is_the_configs(tmp_path, expected_classes,
                                                                   count):
    """Before ImageNet is prepared, a subset's class count comes from dataset.expected_classes
    (ImageNet's 1000 when it is null), not from the full dataset's spec."""
    from dmae.certify.image import dataset_classes

    raw = yaml.safe_load((REPO / "config" / "imagenet.yaml").read_text())
    raw["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results")}
    raw["dataset"]["expected_classes"] = expected_classes
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert dataset_classes(cfglib.load(tmp_path / "c.yaml")) == (count, None)


def test_a_sigma_other_than_the_fine_tuning_one_is_refused_unless_allowed(setup, dmae):
    """A classifier fine-tuned at sigma 0.5, smoothed at 0.25: refused by every command that
    certifies, naming both; allowed by the flag, and then recorded beside the results."""
    tmp, cfg = setup["tmp"], setup["cfg"]
    state, meta = load_checkpoint(setup["checkpoints"]["ten"])
    at_half = save_checkpoint(tmp / "half" / "best", state, {**meta, "sigma": 0.5})
    with pytest.raises(ValueError, match=r"fine-tuned at sigma 0.5, asked to certify at sigma "
                                         r"0.25.*--allow-sigma-mismatch"):
        certify(cfg, at_half, SIGMA, tmp / "refused.tsv")
    assert not (tmp / "refused.tsv").exists()
    png = write_png(setup, 4)
    for command in ("certify-image", "predict-image"):
        code, _, err = dmae(command, "--config", setup["configs"]["cohen"], "--checkpoint",
                            at_half, "--sigma", SIGMA, "--image", png, "--index", 4)
        assert code == 2 and "fine-tuned at sigma 0.5" in err, err

    certify(cfg, at_half, SIGMA, tmp / "allowed.tsv", allow_sigma_mismatch=True)
    recorded = json.loads((tmp / "allowed.tsv.meta.json").read_text())["settings"]
    assert recorded["sigma"] == SIGMA and recorded["config"]["checkpoint_sigma"] == 0.5
    # the same weights and noise: the rows are those of the classifier certified at 0.25
    assert (pd.read_csv(tmp / "allowed.tsv", sep="\t", dtype=str).set_index("idx")
            .equals(setup["tsvs"]["cohen"]))
    code, out, _ = dmae("certify-image", "--config", setup["configs"]["cohen"], "--checkpoint",
                        at_half, "--sigma", SIGMA, "--image", png, "--index", 4,
                        "--allow-sigma-mismatch")
    assert code == 0 and out
