"""ILSVRC2012 in class-folder layout (``<split>/<wnid>/*.JPEG``), indexed in place.

Images are not copied: each split becomes a list of (path relative to the ImageNet root,
label), with labels given by the position of the wnid in SORTED order, the order every
published certification subset uses. Augmentation follows the authors' code: DMAE's builds on
MAE's, which uses timm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..progress import progress_bar
from .base import check_task
from .errors import DataError
from .sources import Loaded, Locations

INTERPOLATION = "bicubic"  # MAE: interpolation=3 (PIL bicubic), and 'bicubic' to timm's transforms
# Training crop scale (fraction of the image area) per task:
CROP_SCALE = {
    "pretrain": (0.2, 1.0),  # MAE main_pretrain.py: RandomResizedCrop(scale=(0.2, 1.0))
    "finetune": (0.08, 1.0),  # MAE util/datasets.py: timm create_transform's default scale
    "linprobe": (0.08, 1.0),  # MAE main_linprobe.py: util/crop.py RandomResizedCrop(224)
}
RANDAUGMENT_TASKS = ("finetune",)  # MAE: only main_finetune.py has RandAugment (--aa, via timm)
EVAL_CROP_PCT = 224 / 256  # MAE util/datasets.py: Resize(int(size / crop_pct)) + CenterCrop(size)


@dataclass(frozen=True)
class ImageNetSpec:
    """ILSVRC2012 in class-folder layout, supplied by the user (no download)."""

    name: str = "imagenet"
    train_dir: str = "train"
    test_dir: str = "val"  # the official validation set is our certification test split
    expected_classes: int = 1000
    extensions: tuple[str, ...] = (".jpeg", ".jpg", ".png")

    def source_settings(self, where: Locations) -> dict[str, Any]:
        return {"imagenet_root": str(_root(where))}  # the index points into it

    def load(self, where: Locations) -> Loaded:
        """Index both splits; they must hold the same ``expected_classes`` class folders."""
        root = _root(where)
        train_dir, test_dir = root / self.train_dir, root / self.test_dir
        classes = list_classes(train_dir)
        check_classes(train_dir, classes, self.expected_classes)
        check_classes(test_dir, list_classes(test_dir), self.expected_classes, reference=classes)
        return Loaded(
            train=index_split(root, train_dir, classes, self.extensions,
                              progress=where.progress),
            test=index_split(root, test_dir, classes, self.extensions, progress=where.progress),
            class_names=classes,
            sources=[{"path": str(root), "train_dir": self.train_dir, "test_dir": self.test_dir}],
            extra={"imagenet_root": str(root), "wnids": classes},
        )

    def transform(
        self, train: bool, input_size: int, *, task: str = "finetune",
        randaugment: str | None = None,
    ) -> Callable:
        """PIL image in, tensor out, as the authors' code for ``task``.

        Train: random resized crop (scale ``CROP_SCALE[task]``, bicubic) + horizontal flip,
        + timm's RandAugment when ``randaugment`` is given (fine-tuning only). Eval, for
        every task: bicubic resize to ``input_size / EVAL_CROP_PCT`` + center crop.
        """
        check_task(task)
        if randaugment and task not in RANDAUGMENT_TASKS:
            raise DataError(f"randaugment: only used for fine-tuning, not {task}")
        # Here, not at the top: indexing (preparation) never needs torchvision.
        from torchvision import transforms as T

        from .crop import MaeLinprobeCrop

        bicubic = T.InterpolationMode(INTERPOLATION)
        if train:
            crop = MaeLinprobeCrop if task == "linprobe" else T.RandomResizedCrop
            steps = [
                crop(input_size, scale=CROP_SCALE[task], interpolation=bicubic),
                T.RandomHorizontalFlip(),
            ]
            if randaugment:
                steps.append(_randaugment(randaugment, input_size))
        else:
            # MAE resizes larger inputs to the crop size itself (crop_pct 1).
            resize = int(input_size / EVAL_CROP_PCT) if input_size <= 224 else input_size
            steps = [T.Resize(resize, interpolation=bicubic), T.CenterCrop(input_size)]
        return T.Compose([*steps, T.ToTensor()])


IMAGENET = ImageNetSpec()


def _randaugment(spec: str, input_size: int) -> Callable:
    """timm's RandAugment with the hyperparameters timm's create_transform gives it."""
    # Imported here: timm takes seconds to import and only ImageNet fine-tuning needs it.
    from timm.data import IMAGENET_DEFAULT_MEAN, rand_augment_transform
    from timm.data.transforms import str_to_pil_interp

    hparams = {
        "translate_const": int(input_size * 0.45),  # translations relative to the crop
        "img_mean": tuple(min(255, round(255 * x)) for x in IMAGENET_DEFAULT_MEAN),  # fill
        "interpolation": str_to_pil_interp(INTERPOLATION),  # else timm picks one at random
    }
    try:
        transform = rand_augment_transform(spec, hparams)
    except (ValueError, AssertionError, KeyError) as err:
        raise DataError(f"randaugment: {spec!r} is not a timm RandAugment spec "
                        "(expected e.g. 'rand-m9-mstd0.5-inc1')") from err
    for op in transform.ops:
        if op.name.startswith("Posterize"):
            op.aug_fn = _posterize
    return transform


def _posterize(img, bits_to_keep: int, **_):
    """Keep the ``bits_to_keep`` high bits of each channel, 0 to 8. At the top magnitude
    ("inc1", often reached with mstd) timm asks for 0 bits, which Pillow 13 refuses and older
    Pillow, as the authors ran it, turns into a black image: so here too."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _root(where: Locations) -> Path:
    """The ImageNet folder: ``imagenet_dir``, else ``source_dir``, resolved."""
    folder = where.imagenet_dir if where.imagenet_dir is not None else where.source_dir
    if folder is None:
        raise DataError(
            "imagenet cannot be downloaded: pass imagenet_dir, the ILSVRC2012 folder holding "
            "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"
        )
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"{folder}: ImageNet folder not found")
    return folder


def list_classes(split_dir: Path) -> list[str]:
    """Sorted names of the class folders of ``split_dir`` (hidden entries ignored)."""
    if not split_dir.is_dir():
        raise DataError(
            f"{split_dir}: folder not found; expected an ImageNet split in class-folder "
            "layout (<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG)"
        )
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_classes(
    split_dir: Path, found: list[str], expected_count: int, reference: list[str] | None = None
) -> None:
    """Raise DataError unless ``found`` has ``expected_count`` classes (equal to ``reference``)."""
    if len(found) != expected_count:
        raise DataError(
            f"{split_dir}: found {len(found)} class folders, expected {expected_count}"
            + (f" (first: {', '.join(found[:5])})" if found else "")
            + "; a subset such as ImageNet-100 states its number in dataset.expected_classes"
        )
    if reference is not None and found != reference:
        missing = sorted(set(reference) - set(found))
        extra = sorted(set(found) - set(reference))
        raise DataError(
            f"{split_dir}: class folders differ from the training set's: "
            f"missing {_preview(missing)}; extra {_preview(extra)}"
        )


def index_split(
    root: Path, split_dir: Path, classes: list[str], extensions: tuple[str, ...],
    *, progress: bool = True,
) -> list[tuple[str, int]]:
    """(relative path, label) for every image of ``split_dir``, in a deterministic order.

    ``progress`` shows a bar of the class folders listed on stderr: ImageNet's 1.28 million
    training files take minutes to list on a network file system.
    """
    allowed = {e.lower() for e in extensions}
    entries: list[tuple[str, int]] = []
    with progress_bar(classes, desc=f"index {split_dir.name} class folders", unit="class",
                      disable=not progress, dynamic_ncols=True) as bar:
        for label, wnid in enumerate(bar):
            class_dir = split_dir / wnid
            # Not hidden files: a copy made on macOS leaves an AppleDouble "._<name>.JPEG" (no
            # image) beside each file.
            files = sorted(
                p for p in class_dir.iterdir()
                if p.is_file() and p.suffix.lower() in allowed and not p.name.startswith(".")
            )
            if not files:
                raise DataError(f"{class_dir}: no images (expected files ending in "
                                f"{', '.join(sorted(allowed))})")
            entries.extend((p.relative_to(root).as_posix(), label) for p in files)
            bar.set_postfix(images=len(entries), refresh=False)
    return entries


def _preview(names: list[str], limit: int = 10) -> str:
    if not names:
        return "none"
    more = f" ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
