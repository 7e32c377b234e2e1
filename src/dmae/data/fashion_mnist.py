"""Fashion-MNIST: four gzip'd IDX files, found in a source folder, Debian's package or online."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from . import idx
from .base import ArrayDataset
from .sources import Loaded, Locations, SourceFile, check_arrays, locate, source_record


@dataclass(frozen=True)
class FashionMnistSpec(ArrayDataset):
    """Fashion-MNIST.

    MD5s as Zalando Research publishes them (the fashion-mnist README); ``content_sha256``
    is that of the decompressed published files.
    """

    name: str = "fashion-mnist"
    base_url: str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    train_images: SourceFile = SourceFile(
        "train-images-idx3-ubyte.gz",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    )
    train_labels: SourceFile = SourceFile(
        "train-labels-idx1-ubyte.gz",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    )
    test_images: SourceFile = SourceFile(
        "t10k-images-idx3-ubyte.gz",
        "bef4ecab320f06d8554ea6380940ec79",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    )
    test_labels: SourceFile = SourceFile(
        "t10k-labels-idx1-ubyte.gz",
        "bb300cfdad3c16e7a12a480ee83cd310",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    )
    # Folders searched (after the user's source_dir) before downloading: Debian's package.
    system_dirs: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)
    image_shape: tuple[int, int, int] = (28, 28, 1)  # H, W, C as stored
    class_names: tuple[str, ...] = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip
    train_count: int = 60_000
    test_count: int = 10_000

    @property
    def files(self) -> tuple[SourceFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    def train_augmentation(self) -> list[Callable]:
        from torchvision import transforms as T  # here: preparing data never needs it

        # Random crop of the stored size after 2-px padding: the committed results use it.
        return [T.RandomCrop(self.image_shape[:2], padding=2)]

    def load(self, where: Locations) -> Loaded:
        """Read the four files; a recompressed copy (Debian's) passes on its content sha256."""
        contents, sources = {}, []
        names = ", ".join(f.name for f in self.files)
        base_url = where.download_url or self.base_url
        for source in self.files:
            path, origin, (content, sums) = locate(
                source,
                where,
                base_url,
                functools.partial(idx.read_verified_gz, expected=source),
                system_dirs=self.system_dirs,
                must_hold=names,
            )
            contents[source.name] = (path, content)
            sources.append(source_record(source.name, origin, path, **sums))

        def arrays(images_file: SourceFile, labels_file: SourceFile, count: int):
            images_path, images_bytes = contents[images_file.name]
            labels_path, labels_bytes = contents[labels_file.name]
            images = idx.read_idx_images(images_bytes, str(images_path))[..., None]  # N,H,W,1
            labels = idx.read_idx_labels(labels_bytes, str(labels_path))
            check_arrays(images, labels, self.image_shape, count, len(self.class_names),
                         images_path, labels_path)
            return images, labels

        return Loaded(
            train=arrays(self.train_images, self.train_labels, self.train_count),
            test=arrays(self.test_images, self.test_labels, self.test_count),
            class_names=list(self.class_names),
            sources=sources,
        )


FASHION_MNIST = FashionMnistSpec()
