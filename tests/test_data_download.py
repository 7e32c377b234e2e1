"""Downloads against a local HTTP server serving fixture files (no network needed)."""

from __future__ import annotations

import functools
import json
import re
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from data_fixtures import image_ids, write_cifar10_fixture, write_fashion_mnist_fixture

from dmae.data import DataError, load_split, prepare_dataset


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest output clean
        pass


@pytest.fixture
def serve(tmp_path):
    """Start a server on 127.0.0.1 for a folder; yield a function returning its base URL."""
    servers = []

    def start(folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _assert_nothing_left(raw, prepared):
    """No .part file in the raw folder, no (temporary) prepared folder."""
    assert not raw.exists() or not list(raw.glob("**/*.part"))
    assert not prepared.exists() or list(prepared.iterdir()) == []


def test_fashion_mnist_download(tmp_path, serve):
    spec = write_fashion_mnist_fixture(tmp_path / "www" / "fashion", n_train=30, n_test=10)
    url = serve(tmp_path / "www") + "fashion"  # base without a trailing slash
    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    out = prepare_dataset("fashion-mnist", prepared, raw, val_size=5, download_url=url, spec=spec)
    assert sorted(p.name for p in raw.iterdir()) == sorted(f.name for f in spec.files)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {s["origin"] for s in manifest["sources"]} == {"download"}
    train, val = load_split(out, "train"), load_split(out, "val")
    assert (len(train), len(val), len(load_split(out, "test"))) == (25, 5, 10)
    # Downloaded files are reused: preparing again (forced) needs no server.
    prepare_dataset(
        "fashion-mnist",
        prepared,
        raw,
        val_size=5,
        download_url="http://127.0.0.1:9/",
        spec=spec,
        force=True,
    )


def test_cifar10_download(tmp_path, serve):
    spec = write_cifar10_fixture(tmp_path / "www", per_batch=4, n_test=6)
    url = serve(tmp_path / "www")
    out = prepare_dataset(
        "cifar10", tmp_path / "prepared", tmp_path / "raw", val_size=4, download_url=url, spec=spec
    )
    assert (tmp_path / "raw" / "cifar-10-binary.tar.gz").is_file()
    images = np.concatenate(
        [np.load(out / f"{s}_images.npy", allow_pickle=False) for s in ("train", "val")]
    )
    assert images.shape == (20, 32, 32, 3)
    assert sorted(image_ids(images).tolist()) == list(range(20))


def test_download_and_extraction_report_progress_unless_disabled(tmp_path, serve, capsys):
    spec = write_cifar10_fixture(tmp_path / "www", per_batch=4, n_test=6)
    url = serve(tmp_path / "www")
    capsys.readouterr()
    shown = prepare_dataset("cifar10", tmp_path / "shown", tmp_path / "raw-shown", val_size=4,
                            download_url=url, spec=spec)
    err = capsys.readouterr().err
    assert re.search(r"download cifar-10-binary\.tar\.gz: 100%\|", err), err
    assert re.search(r"extract cifar-10-binary\.tar\.gz: 100%\|", err), err
    quiet = prepare_dataset("cifar10", tmp_path / "quiet", tmp_path / "raw-quiet", val_size=4,
                            download_url=url, spec=spec, progress=False)
    assert capsys.readouterr().err == ""
    # Bars only write to stderr: the prepared files are the same bytes.
    for path in shown.iterdir():
        assert path.read_bytes() == (quiet / path.name).read_bytes()


def test_http_404_names_url_and_by_hand_path(tmp_path, serve):
    spec = write_cifar10_fixture(tmp_path / "fixture")
    url = serve(tmp_path / "empty_www")  # serves a folder that does not exist: 404
    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    with pytest.raises(DataError) as info:
        prepare_dataset("cifar10", prepared, raw, val_size=2, download_url=url, spec=spec)
    message = str(info.value)
    assert f"{url}cifar-10-binary.tar.gz" in message and "404" in message
    assert str(raw / "cifar-10-binary.tar.gz") in message and spec.archive.md5 in message
    assert not (raw / "cifar-10-binary.tar.gz").exists()
    _assert_nothing_left(raw, prepared)


def test_connection_refused(tmp_path):
    spec = write_fashion_mnist_fixture(tmp_path / "fixture")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    with pytest.raises(DataError, match=rf"127\.0\.0\.1:{port}/train-images.*connection failed"):
        prepare_dataset(
            "fashion-mnist",
            prepared,
            raw,
            val_size=2,
            download_url=f"http://127.0.0.1:{port}/",
            spec=spec,
        )
    _assert_nothing_left(raw, prepared)


def test_downloaded_checksum_mismatch(tmp_path, serve):
    spec = write_fashion_mnist_fixture(tmp_path / "www", n_train=20)
    write_fashion_mnist_fixture(tmp_path / "www", n_train=21)  # the server now has other files
    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    with pytest.raises(DataError) as info:
        prepare_dataset(
            "fashion-mnist",
            prepared,
            raw,
            val_size=2,
            download_url=serve(tmp_path / "www"),
            spec=spec,
        )
    message = str(info.value)
    assert "checksum mismatch" in message and spec.train_images.md5 in message
    assert str(raw / spec.train_images.name) in message
    assert not raw.exists() or not list(raw.iterdir())
    _assert_nothing_left(raw, prepared)
