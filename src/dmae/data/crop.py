"""The crop of MAE's linear probing (its util/crop.py), apart from imagenet.py so that
indexing ImageNet never imports torchvision."""

from __future__ import annotations

import math

import torch
from torchvision import transforms as T
from torchvision.transforms import functional as F


class MaeLinprobeCrop(T.RandomResizedCrop):
    """RandomResizedCrop as MAE's util/crop.py (its linear probing): one draw of area and
    aspect ratio, the box clipped to the image, instead of torchvision's up to 10 tries."""

    @staticmethod
    def get_params(img, scale, ratio):
        width, height = F.get_image_size(img)
        area = width * height * torch.empty(1).uniform_(scale[0], scale[1]).item()
        log_ratio = torch.log(torch.tensor(ratio))
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = min(int(round(math.sqrt(area * aspect))), width)
        h = min(int(round(math.sqrt(area / aspect))), height)
        top = torch.randint(0, height - h + 1, size=(1,)).item()
        left = torch.randint(0, width - w + 1, size=(1,)).item()
        return top, left, h, w
