"""Dataset objects and their transforms: the authors' ImageNet settings, read from the real
transform objects; array datasets exactly as the committed results were made."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from dmae.data import DATASET_NAMES, TASKS, DataError, get_dataset

RA = "rand-m9-mstd0.5-inc1"


def test_registry():
    assert DATASET_NAMES == ("fashion-mnist", "cifar10", "imagenet")
    assert all(get_dataset(name).name == name for name in DATASET_NAMES)
    with pytest.raises(DataError, match="unknown dataset 'mnist'; .*fashion-mnist, cifar10, ima"):
        get_dataset("mnist")


@pytest.mark.parametrize(
    ("task", "scale"),
    [("pretrain", (0.2, 1.0)), ("finetune", (0.08, 1.0)), ("linprobe", (0.08, 1.0))],
)
def test_imagenet_train_crop_per_task(task, scale):
    crop, flip, to_tensor = get_dataset("imagenet").transform(True, 32, task=task).transforms
    assert isinstance(crop, T.RandomResizedCrop) and crop.size == (32, 32)
    assert crop.scale == scale and crop.ratio == (3 / 4, 4 / 3)
    assert crop.interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(flip, T.RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(to_tensor, T.ToTensor)


def test_imagenet_linprobe_crop_draws_once_as_mae():
    """MAE's util/crop.py: one draw, clipped to the image; torchvision would fall back to a
    5-pixel-high center crop of this thin image."""
    crop = get_dataset("imagenet").transform(True, 4, task="linprobe").transforms[0]
    torch.manual_seed(0)
    for _ in range(20):
        top, left, h, w = crop.get_params(Image.new("RGB", (4, 100)), (1.0, 1.0), crop.ratio)
        assert w == 4 and 17 <= h <= 23 and 0 <= top <= 100 - h and left == 0


def test_imagenet_randaugment_as_timm_create_transform():
    steps = get_dataset("imagenet").transform(True, 32, randaugment=RA).transforms
    assert [type(s).__name__ for s in steps] == [
        "RandomResizedCrop", "RandomHorizontalFlip", "RandAugment", "ToTensor"
    ]
    ops = steps[2].ops
    assert ops and all(op.kwargs["resample"] == Image.BICUBIC for op in ops)
    assert all(op.hparams["interpolation"] == Image.BICUBIC for op in ops)
    assert ops[0].kwargs["fillcolor"] == (124, 116, 104)  # timm's ImageNet mean, 0-255
    assert ops[0].hparams["translate_const"] == int(32 * 0.45)
    image = Image.new("RGB", (40, 50), (200, 10, 10))
    assert steps[2](image).size == (40, 50)


@pytest.mark.parametrize(("magnitude", "black"), [(10, True), (9, False)])
def test_randaugment_at_its_top_magnitude_posterizes_to_black_instead_of_failing(magnitude,
                                                                                  black):
    """The ImageNet recipe's magnitude 9 with std 0.5 reaches 10 for about 2% of the draws,
    where "inc1" posterizes to 0 bits: Pillow 13 raises there (a fine-tuning job would die in
    its first epoch), older Pillow, which the authors ran, returned a black image."""
    steps = get_dataset("imagenet").transform(True, 32, randaugment=RA).transforms
    op = next(op for op in steps[2].ops if op.name == "PosterizeIncreasing")
    op.prob, op.magnitude, op.magnitude_std = 1.0, magnitude, 0.0  # this draw, every time
    image = Image.new("RGB", (8, 8), (200, 100, 30))
    out = op(image)
    assert out.size == image.size and out.mode == image.mode
    assert (out.getextrema() == ((0, 0),) * 3) is black
    if not black:  # 4 - int(9 / 10 * 4) = 1 bit kept
        assert out.getpixel((0, 0)) == (128, 0, 0)


@pytest.mark.parametrize(("size", "resize"), [(224, 256), (16, 18), (384, 384)])
def test_imagenet_eval_is_the_same_for_every_task(size, resize):
    for task in TASKS:
        resize_step, crop, _ = get_dataset("imagenet").transform(False, size, task=task).transforms
        assert resize_step.size == resize and crop.size == (size, size)
        assert resize_step.interpolation == T.InterpolationMode.BICUBIC


@pytest.mark.parametrize(
    ("name", "task", "randaugment", "message"),
    [
        ("imagenet", "pretrain", RA, "only used for fine-tuning, not pretrain"),
        ("imagenet", "linprobe", RA, "only used for fine-tuning, not linprobe"),
        ("imagenet", "finetune", "augmix-m5", "not a timm RandAugment spec"),
        ("cifar10", "finetune", RA, "only used for imagenet, not cifar10"),
        ("fashion-mnist", "pretrain", None, None),
        ("imagenet", "fine-tune", None, "task: 'fine-tune' is not one of pretrain, finetune"),
        ("cifar10", "probe", None, "task: 'probe'"),
    ],
)
def test_bad_requests(name, task, randaugment, message):
    if message is None:
        get_dataset(name).transform(True, 28, task=task, randaugment=randaugment)
        return
    with pytest.raises(DataError, match=message):
        get_dataset(name).transform(True, 28, task=task, randaugment=randaugment)


@pytest.mark.parametrize(
    ("name", "shape", "reference"),
    [
        ("fashion-mnist", (1, 28, 28), T.Compose([T.RandomCrop((28, 28), padding=2)])),
        ("cifar10", (3, 32, 32), T.Compose([T.RandomHorizontalFlip()])),
    ],
)
def test_array_transforms_unchanged(name, shape, reference):
    """The committed results' augmentation: same ops and same random draws for every task
    and input size; evaluation is the identity."""
    image = torch.rand(shape)
    dataset = get_dataset(name)
    for task in TASKS:
        transform = dataset.transform(True, 224, task=task)
        assert repr(transform) == repr(reference)
        torch.manual_seed(1)
        expected = [reference(image) for _ in range(8)]
        torch.manual_seed(1)
        assert all(torch.equal(transform(image), e) for e in expected)
        assert dataset.transform(False, 224, task=task).transforms == []
