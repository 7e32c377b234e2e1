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


def build_transform(dataset_name: str, train: bool, input_size: int = 224) -> Callable:
    """Transform for ``load_split``.

    ImageNet (PIL in, tensor out): train = RandomResizedCrop(scale 0.2-1, bicubic) + flip;
    eval = Resize(256/224 * input_size, bicubic) + CenterCrop(input_size).
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
        else:
            steps = [
                T.Resize(int(256 / 224 * input_size), interpolation=_BICUBIC),
                T.CenterCrop(input_size),
            ]
        return T.Compose([*steps, T.ToTensor()])
    if dataset_name == "cifar10":
        return T.Compose([T.RandomHorizontalFlip()] if train else [])
    if dataset_name == "fashion-mnist":
        size = FASHION_MNIST.image_shape[:2]
        return T.Compose([T.RandomCrop(size, padding=2)] if train else [])
    raise DataError(
        f"unknown dataset {dataset_name!r}; expected imagenet, cifar10 or fashion-mnist"
    )
