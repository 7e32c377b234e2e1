"""The dataset driver: TSV format, resume after a kill, shards, and bad input."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dmae.certify import (
    COLUMNS,
    certify_dataset,
    merge_shards,
    meta_path,
    methods,
    partial_path,
    read_certification,
)
from dmae.certify.methods.cohen import Cohen
from dmae.config import schema
from dmae.io import exclusive, read_json

NUM_CLASSES = 4
SETTINGS = {"sigma": 0.25, "n0": 8, "n": 64, "alpha": 0.05, "seed": 3,
            "num_classes": NUM_CLASSES}


def tiny_net(in_channels: int = 3, num_classes: int = NUM_CLASSES) -> torch.nn.Module:
    """Small conv net whose decisions depend on the noise, so runs give varied counts."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, num_classes))
    with torch.no_grad():
        net[0].weight.mul_(4.0)
    return net


class ToyImages:
    """``dataset[i] -> (image in [0,1] as [C,H,W], label)``, like the project's datasets."""

    def __init__(self, count: int = 12, channels: int = 3, size: int = 8):
        g = torch.Generator().manual_seed(1)
        self.images = torch.rand(count, channels, size, size, generator=g)
        self.labels = torch.randint(0, NUM_CLASSES, (count,), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


# Each method's settings beyond SETTINGS: the driver must treat both alike.
METHODS = {"cohen": {},
           "adaptive": {"method": "adaptive",
                        "method_options": {"radii": [0.0, 0.1, 0.2], "first_look": 8}}}


def run(out: Path, indices=range(12), *, dataset=None, model=None, **overrides):
    kwargs = dict(SETTINGS, batch_size=16, progress=False, config={"model": "tiny"})
    kwargs.update(overrides)
    return certify_dataset(model or tiny_net(), dataset or ToyImages(), list(indices),
                           out_tsv=out, **kwargs)


@pytest.fixture(scope="module", params=sorted(METHODS))
def method(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def certify(method):
    """``run`` with the method under test."""
    return functools.partial(run, **METHODS[method])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, certify) -> Path:
    """An uninterrupted, unsharded run."""
    out = tmp_path_factory.mktemp("ref") / "cert.tsv"
    status = certify(out)
    assert status.complete and status.done == status.total == 12
    return out


def test_tsv_has_cohen_columns_and_full_precision(reference, certify, method):
    lines = reference.read_text().splitlines()
    assert lines[0].split("\t") == list(COLUMNS)
    df = read_certification(reference)
    assert list(df["idx"]) == list(range(12))
    assert set(df["predict"]) <= {-1, *range(NUM_CLASSES)}
    assert (df["correct"] == (df["predict"] == df["label"]).astype(int)).all()
    assert (df.loc[df["predict"] == -1, "radius"] == 0.0).all()
    assert (df["n0"] == 8).all() and (df["n"] == 64).all()
    # radius and pA_lower round-trip exactly (written with repr)
    for line in lines[1:]:
        fields = line.split("\t")
        assert repr(float(fields[3])) == fields[3]
        assert repr(float(fields[8])) == fields[8]
    assert (df["radius"] > 0).any()
    meta = read_json(meta_path(reference))
    assert meta["settings"]["sigma"] == 0.25 and meta["settings"]["config"] == {"model": "tiny"}
    assert "batch_size" not in meta["settings"] and meta["info"]["batch_size"] == 16
    assert meta["settings"]["method"]["name"] == method
    assert (df["n_used"] <= 64).all() and (df["n_used"] >= 1).all()
    assert not partial_path(reference).exists()


def test_batch_size_does_not_change_the_result(tmp_path, reference, certify):
    out = tmp_path / "cert.tsv"
    certify(out, batch_size=5)
    assert out.read_bytes() == reference.read_bytes()


def test_interrupted_run_resumes_to_the_same_tsv(tmp_path, reference, certify):
    out = tmp_path / "cert.tsv"
    status = certify(out, max_images=5)
    assert not status.complete and status.done == 5
    assert not out.exists(), "a stopped run must not look complete"
    partial = partial_path(out)
    data = partial.read_bytes()
    partial.write_bytes(data[:-7])  # a kill in the middle of writing the 5th row
    status = certify(out)
    assert status.complete
    assert out.read_bytes() == reference.read_bytes()
    assert not partial.exists() and not meta_path(partial).exists()
    assert read_json(meta_path(out))["settings"] == read_json(meta_path(reference))["settings"]


def test_rerunning_a_complete_run_changes_nothing(reference, certify):
    before = reference.read_bytes()
    status = certify(reference)
    assert status.complete and reference.read_bytes() == before


def test_resume_with_another_sigma_is_an_error(tmp_path):
    out = tmp_path / "cert.tsv"
    run(out, max_images=2)
    with pytest.raises(ValueError, match="sigma: 0.25 in the file, 0.5 now"):
        run(out, sigma=0.5)
    with pytest.raises(ValueError, match="config.model"):
        run(out, config={"model": "other"})


def test_complete_run_with_other_settings_is_an_error(reference, certify):
    with pytest.raises(ValueError, match="seed"):
        certify(reference, seed=4)


def test_merged_shards_equal_the_unsharded_run(tmp_path, reference, certify):
    shards = [tmp_path / f"shard{i}.tsv" for i in range(3)]
    for i, path in enumerate(shards):
        status = certify(path, shard=(i, 3))
        assert status.complete and status.total == 4
        assert len(read_certification(path)) == 4
    merged = merge_shards(shards[::-1], tmp_path / "merged.tsv", range(12))
    assert merged.read_bytes() == reference.read_bytes()
    assert read_json(meta_path(merged))["settings"] == read_json(meta_path(reference))["settings"]

    with pytest.raises(ValueError, match="overlaps"):
        merge_shards([shards[0], shards[0], shards[1], shards[2]], tmp_path / "m2.tsv", range(12))
    with pytest.raises(ValueError, match="do not cover"):
        merge_shards(shards[:2], tmp_path / "m3.tsv", range(12))
    with pytest.raises(ValueError, match="different index list"):
        merge_shards(shards, tmp_path / "m4.tsv", range(13))
    assert not (tmp_path / "m2.tsv").exists()


def test_merge_refuses_incomplete_or_mismatched_shards(tmp_path):
    done = tmp_path / "a.tsv"
    run(done, shard=(0, 2))
    unfinished = tmp_path / "b.tsv"
    run(unfinished, shard=(1, 2), max_images=1)
    with pytest.raises(ValueError, match="incomplete"):
        merge_shards([done, unfinished], tmp_path / "m.tsv", range(12))
    other = tmp_path / "c.tsv"
    run(other, shard=(1, 2), seed=9)
    with pytest.raises(ValueError, match="seed"):
        merge_shards([done, other], tmp_path / "m.tsv", range(12))


def test_a_rerun_writes_the_same_bytes(tmp_path, reference, certify):
    """No wall-clock column or other run-dependent field: TSV and metadata are reproducible."""
    out = tmp_path / "cert.tsv"
    certify(out)
    assert out.read_bytes() == reference.read_bytes()
    assert meta_path(out).read_bytes() == meta_path(reference).read_bytes()


@pytest.mark.parametrize("overrides, message", [
    ({"n0": 0}, "n0"),
    ({"n": 4}, "n must be >= n0"),
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": 1.5}, "alpha"),
    ({"sigma": 0.0}, "sigma"),
    ({"sigma": -1.0}, "sigma"),
    ({"batch_size": 0}, "batch_size"),
    ({"method": "sequential"}, "certify.method: unknown method 'sequential'"),
    ({"method": "adaptive", "method_options": {"radii": []}}, "certify.radii"),
    ({"method": "adaptive", "method_options": {"radii": [0.2, 0.1]}}, "certify.radii"),
    ({"method": "adaptive", "method_options": {"radii": [0.1], "n_max": 4}},
     "certify.n_max must be >= certify.n0"),
    ({"shard": (3, 3)}, "shard"),
    ({"indices": [0, 0]}, "duplicates"),
    ({"indices": [12]}, "out of range"),
])
def test_bad_settings_are_rejected(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(tmp_path / "x.tsv", **overrides)
    assert not partial_path(tmp_path / "x.tsv").exists()


def test_another_method_is_recorded_and_checked_on_resume(tmp_path, monkeypatch):
    class Twin(Cohen):
        name = "twin"

    known = methods.registered()
    monkeypatch.setattr(methods, "registered", lambda: {**known, "twin": Twin})
    out = tmp_path / "cert.tsv"
    run(out, method="twin", max_images=2)
    assert read_json(meta_path(partial_path(out)))["settings"]["method"] == {"name": "twin"}
    with pytest.raises(ValueError, match="method.name: 'twin' in the file, 'cohen' now"):
        run(out)
    # the adaptive method's parameters are settings too
    out = tmp_path / "adaptive.tsv"
    run(out, **METHODS["adaptive"], max_images=2)
    with pytest.raises(ValueError, match=r"method.radii.*\[0.0, 0.1, 0.2\] in the file"):
        run(out, method="adaptive", method_options={"radii": [0.0, 0.1, 0.3]})


def test_model_that_does_not_fit_the_data_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"output \[1, 10\].*logits \[1, 4\]"):
        run(tmp_path / "x.tsv", model=tiny_net(num_classes=10))
    with pytest.raises(ValueError, match=r"input of shape \[1, 1, 8, 8\]"):
        run(tmp_path / "x.tsv", dataset=ToyImages(channels=1))
    images = ToyImages()
    images.images = images.images * 255  # not in [0,1]
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        run(tmp_path / "x.tsv", dataset=images)


def test_partial_without_meta_is_not_trusted(tmp_path):
    out = tmp_path / "cert.tsv"
    run(out, max_images=2)
    meta_path(partial_path(out)).unlink()
    with pytest.raises(ValueError, match="missing: cannot tell which settings"):
        run(out)


def test_tsv_without_meta_is_not_trusted(tmp_path, reference, certify):
    out = tmp_path / "cert.tsv"
    out.write_bytes(reference.read_bytes())
    with pytest.raises(ValueError, match="missing"):
        certify(out)


def test_meta_is_plain_json(reference):
    meta = json.loads(meta_path(reference).read_text())
    assert set(meta) == {"settings", "info", "rows"} and meta["rows"] == 12


def test_precision_is_recorded_and_checked_on_resume(tmp_path, reference):
    meta = read_json(meta_path(reference))
    assert meta["settings"]["precision"] == "fp32" and meta["info"]["compile"] is False
    out = tmp_path / "cert.tsv"
    run(out, amp="bf16", max_images=2)
    assert read_json(meta_path(partial_path(out)))["settings"]["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision: 'bf16' in the file, 'fp32' now"):
        run(out, amp="off")


def test_amp_off_on_the_cpu_is_the_default_run_byte_for_byte(tmp_path, reference, certify):
    out = tmp_path / "cert.tsv"
    certify(out, amp="off")
    assert out.read_bytes() == reference.read_bytes()
    assert meta_path(out).read_bytes() == meta_path(reference).read_bytes()


def test_bf16_certifies_clear_cases_as_fp32(tmp_path):
    """bf16 rounds the logits, so a noisy copy near a decision boundary may vote otherwise;
    an image whose fp32 votes are nearly unanimous keeps its class."""
    fp32, bf16 = tmp_path / "fp32.tsv", tmp_path / "bf16.tsv"
    run(fp32)
    run(bf16, amp="bf16")
    a, b = read_certification(fp32), read_certification(bf16)
    clear = a["nA"] >= 0.9 * a["n"]
    assert clear.sum() >= 4
    assert (a["predict"][clear] == b["predict"][clear]).all()
    assert ((a["nA"] - b["nA"]).abs() <= 0.05 * a["n"]).all()


@pytest.mark.slow  # torch.compile builds C++ kernels: about a minute on 2 cores
def test_compiled_certification_is_recorded_and_agrees(tmp_path):
    eager, compiled = tmp_path / "eager.tsv", tmp_path / "compiled.tsv"
    run(eager)
    run(compiled, compile=True)
    assert read_json(meta_path(compiled))["info"]["compile"] is True
    a, b = read_certification(eager), read_certification(compiled)
    assert (a["predict"] == b["predict"]).all()
    assert ((a["nA"] - b["nA"]).abs() <= 1).all()  # other kernels, same fp32 computation


def test_the_schema_offers_every_method_with_exactly_its_own_settings():
    """certify.method's choices are the registered methods, and the keys of certify the schema
    marks with x-method are each method's own settings, as its class states them (type,
    bounds, default): the settings a config fills in are those the method is built with."""
    certify = schema()["properties"]["certify"]["properties"]
    known = methods.registered()
    assert certify["method"]["enum"] == list(known) == sorted(known)
    assert certify["method"]["default"] == methods.DEFAULT_METHOD
    for name, cls in known.items():
        marked = {key: {k: v for k, v in node.items() if k not in ("x-method", "description")}
                  for key, node in certify.items() if node.get("x-method") == name}
        stated = {key: {k: v for k, v in node.items() if k != "description"}
                  for key, node in cls.settings.items()}
        assert marked == stated, name
        cfg = {"certify": {**{key: certify[key].get("default") for key in certify},
                           "n0": 1, "n": 2, "alpha": 0.1, "method": name}}
        assert methods.method_settings(cfg)[1].keys() == {"n0", "n", "alpha", *cls.settings}


def test_a_second_process_certifying_into_the_same_file_fails_and_writes_nothing(tmp_path):
    out = tmp_path / "cert.tsv"
    lock = out.with_name("cert.tsv.lock")
    # Another process holds the lock: the run fails at once, naming the file, and writes
    # nothing; the holder's lock is intact.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from dmae.io import exclusive\n"
         "with exclusive(sys.argv[1], 'x'):\n print('held', flush=True); time.sleep(600)",
         str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RuntimeError, match=f"{out}: another process is writing it"):
            run(out)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.tsv.lock"]
    finally:
        holder.kill()  # killed, it cannot unlock: the kernel drops its lock with the process
        holder.wait()
    assert lock.exists()
    assert run(out).complete and not lock.exists()
    # In one process too (flock locks each open file, not the process).
    with exclusive(lock, "test"), pytest.raises(RuntimeError, match="another process"):
        run(tmp_path / "cert.tsv")


def test_on_a_file_system_without_locks_certification_still_runs(tmp_path, monkeypatch, caplog):
    """Lustre mounted without flock answers flock() with ENOSYS: the run goes on unguarded,
    saying so, and writes what it writes with locks."""
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    reference = run(tmp_path / "locked.tsv")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level("WARNING", logger="dmae.io"):
        status = run(tmp_path / "cert.tsv")
    assert status.complete and "takes no locks" in caplog.text
    assert status.tsv.read_bytes() == reference.tsv.read_bytes()
    assert not (tmp_path / "cert.tsv.lock").exists()


def test_a_partial_made_on_another_kind_of_device_is_set_aside_not_mixed(tmp_path, reference,
                                                                          certify):
    """A partial begun on a GPU (its meta says so, as a CUDA job writes it) and resumed on the
    CPU: CUDA lays out the same seed's noise differently, so its rows are kept aside and the
    CPU starts a new partial, which ends as an uninterrupted CPU run."""
    out = tmp_path / "cert.tsv"
    certify(out, max_images=5)
    partial = partial_path(out)
    meta = read_json(meta_path(partial))
    assert meta["info"]["device"] == "cpu"
    meta["info"]["device"] = "cuda:1 (NVIDIA H100 80GB HBM3)"
    meta_path(partial).write_text(json.dumps(meta))
    rows = partial.read_bytes()

    status = certify(out, max_images=2)
    assert status.done == 2, "the GPU's rows were counted as done"
    aside = partial.with_name(partial.name + ".other-device")
    assert aside.read_bytes() == rows
    assert read_json(meta_path(aside))["info"]["device"].startswith("cuda:1")
    certify(out)
    assert out.read_bytes() == reference.read_bytes()


def test_a_partial_of_the_same_kind_of_device_resumes(tmp_path, certify):
    out = tmp_path / "cert.tsv"
    certify(out, max_images=5)
    assert certify(out, max_images=2).done == 7
    assert not partial_path(out).with_name(partial_path(out).name + ".other-device").exists()


def test_a_mismatch_row_has_its_own_status_and_an_older_file_is_read_with_it(tmp_path):
    """An image stopped after selection on a mismatch is MISMATCH (-2), misclassified and not
    abstained; earlier versions wrote it as ABSTAIN with no estimation sample, which is read
    as MISMATCH when the file's method stopped on mismatches (only then)."""
    from dmae.certify import MISMATCH
    from dmae.report.analysis import counts, mismatches

    out = tmp_path / "stopping.tsv"
    options = {"radii": [0.0, 0.1], "first_look": 8, "stop_on_mismatch": True}
    assert run(out, method="adaptive", method_options=options).complete
    df = read_certification(out)
    stopped = df[df["predict"] == MISMATCH]
    assert 0 < len(stopped) < len(df)
    assert (stopped["correct"] == 0).all()
    assert (stopped["n_used"] == 0).all() and (stopped["radius"] == 0.0).all()
    assert counts(df)["abstained"] == int((df["predict"] == -1).sum())
    assert mismatches(df) == len(stopped)

    meta = read_json(meta_path(out))
    for stops, expected in ((True, MISMATCH), (False, -1)):
        old = tmp_path / f"format3-{stops}.tsv"
        old.write_text(out.read_text().replace("\t-2\t", "\t-1\t"))
        settings = dict(meta["settings"],
                        method=dict(meta["settings"]["method"], stop_on_mismatch=stops))
        meta_path(old).write_text(json.dumps({**meta, "settings": settings}))
        read = read_certification(old)
        assert (read.loc[stopped.index, "predict"] == expected).all()
        assert (read.drop(index=stopped.index)["predict"]
                == df.drop(index=stopped.index)["predict"]).all()
