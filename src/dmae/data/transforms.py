"""Data augmentation per dataset.

No normalisation anywhere: Gaussian noise is added to [0,1] pixels and the models normalise
internally. Array datasets stay at native resolution here; any upsampling happens in the
model, after the noise.
"""

from __future__ import annotations

from collections.abc import Callable

from torchvision import transforms as T

from .errors import DataError
from .specs import FASHION_MNIST

_BICUBIC = T.InterpolationMode.BICUBIC


def build_transform(dataset_name: str, train: bool, input_size: int = 224,
                    randaugment: str | None = None) -> Callable:
    """Transform for ``load_split``.

    ImageNet (PIL in, tensor out): train = RandomResizedCrop(scale 0.2-1, bicubic) + flip
    (+ timm's RandAugment when ``randaugment`` is a spec such as "rand-m9-mstd0.5-inc1", as
    the paper's fine-tuning); eval = Resize(256/224 * input_size, bicubic) + CenterCrop.
    Array datasets (tensor [C,H,W] in and out; ``input_size`` unused): train adds a random
    horizontal flip (cifar10) or a random crop with 2-px padding (fashion-mnist); eval is
    the identity.
    """
    if dataset_name == "imagenet":
        if train:
            steps = [
                T.RandomResizedCrop(input_size, scale=(0.2, 1.0), interpolation=_BICUBIC),
                T.RandomHorizontalFlip(),
            ]
            if randaugment:
                steps.append(_randaugment(randaugment, input_size))
        else:
            steps = [
                T.Resize(int(256 / 224 * input_size), interpolation=_BICUBIC),
                T.CenterCrop(input_size),
            ]
        return T.Compose([*steps, T.ToTensor()])
    if randaugment:
        raise DataError(f"randaugment: only used for imagenet, not {dataset_name}")
    if dataset_name == "cifar10":
        return T.Compose([T.RandomHorizontalFlip()] if train else [])
    if dataset_name == "fashion-mnist":
        size = FASHION_MNIST.image_shape[:2]
        return T.Compose([T.RandomCrop(size, padding=2)] if train else [])
    raise DataError(
        f"unknown dataset {dataset_name!r}; expected imagenet, cifar10 or fashion-mnist"
    )


def _randaugment(spec: str, input_size: int) -> Callable:
    from timm.data.auto_augment import rand_augment_transform

    # timm's ImageNet settings: translations relative to the crop, fill with the mean colour.
    hparams = {"translate_const": int(input_size * 0.45), "img_mean": (124, 116, 104)}
    try:
        return rand_augment_transform(spec, hparams)
    except (ValueError, AssertionError, KeyError) as err:
        raise DataError(f"randaugment: {spec!r} is not a timm RandAugment spec "
                        "(expected e.g. 'rand-m9-mstd0.5-inc1')") from err
