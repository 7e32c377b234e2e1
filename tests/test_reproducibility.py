"""Reruns give the same bytes: the seed reaches every random draw, torch's CPU kernels are
pinned (runtime.cpu_isa), and the packages are the locked ones.

Training stages run as real `dmae` processes (each process of this torch starts its default
generator from a different random seed, so only separate processes show a missed seed).
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO
from data_fixtures import write_fashion_mnist_fixture
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dmae import reproducibility
from dmae.data import prepare_dataset
from dmae.io import sha256_file

VAL_SIZE = 40
OUTPUTS = ("last.safetensors", "last.json", "metrics.csv")


def unpinned_env() -> dict:
    """This environment without the pins (in-process CLI tests may have set them here)."""
    return {k: v for k, v in os.environ.items() if k not in reproducibility.PINS["avx2"]}


def dmae(workdir: Path, *args: str, env: dict | None = None) -> None:
    proc = subprocess.run([str(BIN / "dmae"), *args], cwd=workdir, capture_output=True,
                          text=True, env=env or unpinned_env(), timeout=600)
    assert proc.returncode == 0, f"dmae {' '.join(args)} failed:\n{proc.stderr}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The smoke config with a small Fashion-MNIST-format set prepared, in a scratch folder:
    these tests need a dataset, not Fashion-MNIST's own images."""
    workdir = tmp_path_factory.mktemp("repro")
    spec = write_fashion_mnist_fixture(workdir / "source", n_train=400, n_test=20)
    prepare_dataset("fashion-mnist", workdir / "data" / "prepared", workdir / "raw",
                    val_size=VAL_SIZE, source_dir=workdir / "source", spec=spec)
    write(workdir, "smoke.yaml")
    return workdir


def write(workdir: Path, name: str, **runtime) -> str:
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["dataset"]["val_size"] = VAL_SIZE
    cfg["runtime"].update(runtime)
    (workdir / name).write_text(yaml.safe_dump(cfg))
    return name


def pretrain(workdir: Path, config: str, out: str, env: dict | None = None) -> dict[str, bytes]:
    dmae(workdir, "pretrain", "--config", config, "--model", "micro", "--pretraining", "dmae",
         "--out", out, "--threads", "1", env=env)
    return {name: (workdir / out / name).read_bytes() for name in OUTPUTS}


def test_a_training_stage_run_twice_in_two_processes_writes_the_same_bytes(workdir):
    first = pretrain(workdir, "smoke.yaml", "pre_a")
    assert pretrain(workdir, "smoke.yaml", "pre_b") == first
    # the variant that must differ: another seed is another initialisation and noise stream
    other = pretrain(workdir, write(workdir, "seed1.yaml", seed=1), "pre_seed1")
    assert other["last.safetensors"] != first["last.safetensors"]

    # fine-tuning builds a fresh head on the pretrained encoder: seeded the same way
    def finetune(out: str) -> bytes:
        dmae(workdir, "finetune", "--config", "smoke.yaml", "--model", "micro", "--method",
             "dmae", "--sigma", "0.25", "--pretrained", "pre_a/last", "--out", out,
             "--threads", "1")
        return b"".join((workdir / out / n).read_bytes()
                        for n in ("best.safetensors", "best.json", "metrics.csv"))

    assert finetune("ft_a") == finetune("ft_b")


def test_pinning_reaches_torch_in_a_new_process():
    if reproducibility.machine_isa() not in ("AVX2", "AVX512"):
        pytest.skip("this CPU has no AVX2")
    code = ("from dmae import reproducibility as r; r.pin_cpu_kernels('avx2'); import torch;"
            "print(torch.backends.cpu.get_cpu_capability())")
    out = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True,
                         check=True, env=unpinned_env()).stdout.strip()
    assert out == "AVX2"


def test_pinned_run_is_what_an_avx2_machine_computes(workdir):
    """On an AVX-512 CPU: the native kernels give other weights; the pinned ones give what a
    machine whose libraries all choose AVX2 by themselves gives (native, AVX2 forced)."""
    if reproducibility.machine_isa() != "AVX512":
        pytest.skip("needs an AVX-512 CPU to compare the two code paths")
    pinned = pretrain(workdir, "smoke.yaml", "pin_avx2")
    native = pretrain(workdir, write(workdir, "native.yaml", cpu_isa="native"), "pin_native")
    assert native["last.safetensors"] != pinned["last.safetensors"]
    avx2_machine = {**unpinned_env(), **reproducibility.PINS["avx2"]}
    assert pretrain(workdir, "native.yaml", "pin_forced", env=avx2_machine) == pinned


def test_every_stage_log_records_the_pin(workdir):
    dmae(workdir, "validate-config", "--config", "smoke.yaml", "--log", "v.log")
    text = (workdir / "v.log").read_text()
    assert "CPU kernels pinned (runtime.cpu_isa avx2)" in text
    assert "ATEN_CPU_CAPABILITY=avx2" in text and "MKL_CBWR=AVX2,STRICT" in text


def test_a_reference_from_another_cpu_vendor_is_named():
    """make check explains hash differences when the lock's run had another vendor's CPU."""
    ours = reproducibility.cpu_vendor()
    assert ours in ("Intel", "AMD")  # every x86-64 machine the suite runs on
    theirs = {"Intel": "AMD", "AMD": "Intel"}[ours]
    note = reproducibility.other_vendor_note({"cpu_vendor": theirs})
    assert f"an {theirs} CPU" in note and f"an {ours} one" in note
    assert reproducibility.other_vendor_note({"cpu_vendor": ours}) == ""
    assert reproducibility.other_vendor_note({}) == ""  # older run_info.json: not recorded


def test_bad_cpu_isa_is_named():
    with pytest.raises(ValueError, match="runtime.cpu_isa: 'avx512'"):
        reproducibility.pin_cpu_kernels("avx512")


# ------------------------------------------------------------------------------ the lock


def locked() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {name: (version, [what needs it])}."""
    pins: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;\\]+)", line)
        if match:
            name = canonicalize_name(match[1])
            assert name not in pins, f"requirements.lock pins {name} twice (one version each)"
            pins[name] = (match[2], [])
        elif name and line.strip().startswith("#"):
            pins[name][1].append(line.strip().lstrip("#").strip().removeprefix("via "))
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in [*project["dependencies"], *sum(extras.values(), [])]]


def test_lock_satisfies_pyproject():
    pins = locked()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"pyproject.toml needs {req}, requirements.lock lacks it: make lock"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"pyproject.toml needs {req}, requirements.lock pins {pins[name][0]}: make lock")
    # and the lock's direct dependencies are exactly pyproject's (none left over)
    direct = {n for n, (_, via) in pins.items() if "dmae (pyproject.toml)" in via}
    assert direct == {canonicalize_name(r.name) for r in declared()}, "make lock"
    assert "--hash=sha256:" in (REPO / "requirements.lock").read_text()


def test_installed_packages_are_the_locked_ones():
    from importlib import metadata

    pins = locked()
    for name in ("torch", "torchvision", "timm", "numpy", "scipy", "snakemake", "dvc"):
        assert metadata.version(name) == pins[name][0], (
            f"{name} {metadata.version(name)} is installed, the lock says {pins[name][0]}: "
            "make venv")


def test_software_record_names_versions_and_the_lock():
    record = reproducibility.software(REPO)
    assert record["versions"]["torch"] == locked()["torch"][0]
    assert set(record["versions"]) == {"python", *reproducibility.RECORDED_PACKAGES}
    assert record["lock_sha256"] == sha256_file(REPO / "requirements.lock")
    assert record["cpu_capability"] in ("DEFAULT", "AVX2", "AVX512", "ZVECTOR", "NO AVX")
