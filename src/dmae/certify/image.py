"""CERTIFY or PREDICT one image file (PNG or JPEG) with a fine-tuned classifier.

The file becomes the tensor a dataset run certifies: Pillow decodes it, then, for an array
dataset (Fashion-MNIST, CIFAR-10), its uint8 pixels [H,W,C] turn into a float [C,H,W] tensor
divided by 255 exactly as a prepared split yields them, and the dataset's evaluation transform
is applied; for ImageNet the PIL RGB image goes through that transform (resize, center crop).
So a PNG written from a dataset image gives the very same tensor, and certified with the
config's seed and the image's index in the split (``index``) it gives the same certificate as
that image's row of ``dmae certify``.

Files are read as 8-bit grayscale or RGB: a 1-channel model (Fashion-MNIST) takes grayscale
images, or RGB ones whose three channels are equal; a 3-channel model takes RGB, with
grayscale replicated to three channels. An alpha channel is dropped when fully opaque;
anything else (transparency, 16-bit or other pixel modes, colors for a grayscale model) is a
ValueError naming the file, as is a size the dataset's images do not have.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dmae import config as cfglib
from dmae import devices, layout
from dmae.certify.base import ABSTAIN, MISMATCH, Certificate, Prediction
from dmae.certify.certifier import Certifier
from dmae.certify.methods import from_config
from dmae.certify.run import check_model
from dmae.certify.stage import check_sigma, load_classifier
from dmae.data import DataError, get_dataset, read_manifest
from dmae.data.base import ArrayDataset
from dmae.data.datasets import pixels_to_tensor

IMAGE_FORMATS = ("PNG", "JPEG")
_GRAY, _COLOR = ("1", "L"), ("RGB", "CMYK", "YCbCr")


# ---------------------------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike, cfg: dict, meta: dict) -> torch.Tensor:
    """The image file at ``path`` as the tensor [C,H,W] in [0,1] that the config's dataset
    yields for evaluation by the checkpoint's model (``meta``: its metadata)."""
    path = Path(path)
    name = cfg["dataset"]["name"]
    dataset = get_dataset(name)
    model_cfg = meta["model_cfg"]
    channels = int(model_cfg.get("in_chans", 3))
    transform = dataset.transform(False, model_cfg["img_size"])
    image = read_image(path)
    if isinstance(dataset, ArrayDataset):
        height, width, _ = dataset.image_shape
        if (image.height, image.width) != (height, width):
            raise ValueError(f"{path}: image is {image.width}x{image.height} pixels, but "
                             f"{name} images are {width}x{height}")
    image = to_channels(image, channels, path, name)
    if isinstance(dataset, ArrayDataset):
        expected = (channels, height, width)
        pixels = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
        x = transform(pixels_to_tensor(pixels.copy()))
    else:
        expected = (channels, model_cfg["img_size"], model_cfg["img_size"])
        x = transform(image)
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != expected:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{path}: the {name} evaluation transform gives {shape}, but the "
                         f"model takes images {list(expected)}")
    return x


def read_image(path: Path) -> Image.Image:
    """Decode a PNG or JPEG file (palette expanded, a fully opaque alpha channel dropped)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            found = img.format
            img.load()
            image = img.copy()
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not a readable PNG or JPEG image (not an image format "
                         f"Pillow knows)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: not a readable PNG or JPEG image ({err})") from err
    if found not in IMAGE_FORMATS:
        raise ValueError(f"{path}: a {found} image; expected PNG or JPEG")
    return _opaque(image, path)


def to_channels(image: Image.Image, channels: int, path: Path,
                dataset: str = "the dataset") -> Image.Image:
    """``image`` (from ``path``) in mode L for a 1-channel model or RGB for a 3-channel one."""
    if channels not in (1, 3):
        raise ValueError(f"{path}: the model takes {channels}-channel images; only 1 "
                         f"(grayscale) or 3 (RGB) channels can be read from an image file")
    if image.mode in _GRAY:
        return image.convert("RGB" if channels == 3 else "L")
    if image.mode not in _COLOR:
        raise ValueError(f"{path}: pixel mode {image.mode} is not supported; expected 8-bit "
                         f"grayscale or RGB")
    image = image.convert("RGB")
    if channels == 3:
        return image
    red, green, blue = image.split()
    if not red.tobytes() == green.tobytes() == blue.tobytes():
        raise ValueError(f"{path}: a color image, but the model takes 1-channel (grayscale) "
                         f"{dataset} images; convert it to grayscale first")
    return red


def _opaque(image: Image.Image, path: Path) -> Image.Image:
    """``image`` without its alpha channel (palette images expanded); ValueError when some
    pixel is not fully opaque."""
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if "A" not in image.getbands():
        return image
    if image.getchannel("A").getextrema()[0] < 255:
        raise ValueError(f"{path}: has transparent pixels; expected an opaque image")
    return image.convert("L" if image.mode in ("LA", "La") else "RGB")


# ---------------------------------------------------------------------------------------------
# Certifying
# ---------------------------------------------------------------------------------------------


def with_method(cfg: dict, method: str | None) -> dict:
    """A copy of ``cfg`` whose certify.method is ``method`` (validated again, which fills in
    that method's derived settings, e.g. the adaptive method's radius grid); ``cfg`` itself
    when ``method`` is None."""
    if method is None:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg["certify"]["method"] = method
    return cfglib.validate(cfg, source=f"config with certify.method {method}")


def dataset_classes(cfg: dict) -> tuple[int, list[str] | None]:
    """The config's dataset's number of classes and their names (None when unknown): from the
    prepared folder's manifest when there is one, else from the dataset's spec."""
    manifest = layout.prepared_dir(cfg) / layout.MANIFEST
    if manifest.is_file():
        try:
            found = read_manifest(manifest.parent)
            return int(found["num_classes"]), list(found["class_names"])
        except (DataError, KeyError):
            pass
    spec = get_dataset(cfg["dataset"]["name"], cfg["dataset"]["expected_classes"])
    names = getattr(spec, "class_names", None)
    count = getattr(spec, "num_classes", None) or getattr(spec, "expected_classes", None)
    return int(count or len(names)), list(names) if names else None


def certify_image(cfg: dict, checkpoint: str | os.PathLike, sigma: float,
                  image_path: str | os.PathLike, index: int = 0,
                  label: int | None = None, allow_sigma_mismatch: bool = False) -> Certificate:
    """CERTIFY the image file with the checkpoint's classifier smoothed at ``sigma``, by the
    config's method and settings; its noise is that of image ``index`` of a dataset run
    (certify.seed). ``label`` only matters for certify.stop_on_mismatch."""
    certifier, x = _prepare(cfg, checkpoint, sigma, image_path, index, label,
                            allow_sigma_mismatch)
    return certifier.certify(x, certifier.generator(cfg["certify"]["seed"], index), label=label)


def predict_image(cfg: dict, checkpoint: str | os.PathLike, sigma: float,
                  image_path: str | os.PathLike, index: int = 0,
                  allow_sigma_mismatch: bool = False) -> Prediction:
    """PREDICT the image file's class (or ABSTAIN), as certify_image does CERTIFY."""
    certifier, x = _prepare(cfg, checkpoint, sigma, image_path, index, None,
                            allow_sigma_mismatch)
    return certifier.predict(x, certifier.generator(cfg["certify"]["seed"], index))


def _prepare(cfg: dict, checkpoint, sigma: float, image_path, index: int,
             label: int | None, allow_sigma_mismatch: bool) -> tuple[Certifier, torch.Tensor]:
    """The certifier of the config's method and the image, every input checked first."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index: expected the image's position in the {cfg['certify']['split']}"
                         f" split (an integer >= 0, it seeds the noise), got {index!r}")
    device = torch.device(devices.compute_device(cfg, job=f"{checkpoint} on {image_path}"))
    model, meta = load_classifier(checkpoint)
    check_sigma(checkpoint, meta, sigma, allow_sigma_mismatch)
    num_classes, _ = dataset_classes(cfg)
    name = cfg["dataset"]["name"]
    if meta["num_classes"] != num_classes:
        raise ValueError(f"{checkpoint}: a {meta['num_classes']}-class model cannot classify "
                         f"{name} images ({num_classes} classes)")
    stored = getattr(get_dataset(name), "image_shape", None)
    if stored is not None and meta["model_cfg"].get("in_chans", 3) != stored[2]:
        raise ValueError(f"{checkpoint}: the model takes {meta['model_cfg'].get('in_chans', 3)}"
                         f"-channel images, {name} images have {stored[2]}")
    if label is not None and not 0 <= label < num_classes:
        raise ValueError(f"label: expected a class 0..{num_classes - 1} of {name}, got {label}")
    x = load_image(image_path, cfg, meta)
    model = model.to(device).eval()
    check_model(model, x, meta["num_classes"], device)
    certifier = Certifier(from_config(cfg), model, meta["num_classes"], sigma,
                          batch_size=cfg["certify"]["batch_size"], device=device,
                          amp=cfg["runtime"]["amp"], compile=cfg["runtime"]["compile"])
    return certifier, x


# ---------------------------------------------------------------------------------------------
# What the command line prints
# ---------------------------------------------------------------------------------------------


def describe_certificate(cert: Certificate, cfg: dict, label: int | None = None,
                         class_names: list[str] | None = None) -> list[str]:
    """Lines ``field: value`` of a certificate; radius and pA_lower at full precision (repr),
    as the dataset run's TSV writes them."""
    method = from_config(cfg)
    lines = [f"class: {_class(cert.prediction, class_names)}",
             f"radius: {float(cert.radius)!r}",
             f"pA_lower: {float(cert.p_a_lower)!r}",
             f"nA: {cert.n_a}",
             f"samples: n0 = {_selection(cert, method.n0)}, "
             f"estimation = {method.estimation_text(cert.n_used)}"]
    if label is not None:
        verdict = "yes" if cert.prediction == label else "no"
        name = f", {class_names[label]}" if class_names and 0 <= label < len(class_names) else ""
        lines.append(f"correct: {verdict} (label {label}{name})")
    return lines


def describe_prediction(prediction: Prediction, cfg: dict,
                        class_names: list[str] | None = None) -> list[str]:
    """Lines ``field: value`` of a PREDICT outcome."""
    samples = from_config(cfg).estimation_text(prediction.n_used)
    return [f"class: {_class(prediction.prediction, class_names)}", f"samples: {samples}"]


def _selection(cert: Certificate, n0: int) -> str:
    if cert.n0_used is None or cert.n0_used == n0:
        return f"{n0}"
    return f"{cert.n0_used} of {n0} (unanimous)"


def _class(prediction: int, class_names: list[str] | None) -> str:
    if prediction == ABSTAIN:
        return "abstain"
    if prediction == MISMATCH:
        return "none: the selected class is not the label, no certificate attempted"
    if class_names and 0 <= prediction < len(class_names):
        return f"{prediction} ({class_names[prediction]})"
    return str(prediction)
