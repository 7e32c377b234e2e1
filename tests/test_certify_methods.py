"""The certification methods' registry (dmae.certify.methods): a method added as one file is
offered by the config schema, certified with, recorded and reported; a module that does not
define a method as the registry needs is refused, naming it."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import BIN, REPO
from data_fixtures import write_fashion_mnist_fixture

from dmae import config as cfglib
from dmae import layout
from dmae.certify import methods
from dmae.certify.base import Ceiling, CertificationMethod
from dmae.certify.methods.cohen import Cohen
from dmae.checkpoint import save_checkpoint
from dmae.code_identity import SRC
from dmae.data import prepare_dataset
from dmae.io import read_json
from dmae.models import build_downstream

# A new certification method, written as a user would: one module in dmae/certify/methods/.
BONFERRONI = textwrap.dedent('''\
    """CERTIFY of Cohen et al. at level alpha / share: share certificates of one image (say,
    at as many noise levels) then hold together with probability 1 - alpha."""

    from __future__ import annotations

    from dmae.certify.base import ABSTAIN, Ceiling, Certificate, CertificationMethod, Prediction
    from dmae.certify.checks import check_positive_int


    class Bonferroni(CertificationMethod):
        name = "bonferroni"
        summary = "Cohen et al.'s CERTIFY at level alpha / share"
        settings = {"share": {"type": "integer", "minimum": 1, "default": 2,
                              "description": "certificates of one image that hold together"}}

        def __init__(self, **settings):
            super().__init__(**settings)
            check_positive_int("certify.share", self.options["share"])
            self.level = self.alpha / self.options["share"]

        def certify(self, certifier, x, generator, label=None):
            from dmae.certify.stats import certify_from_counts

            counts0 = certifier.sample_counts(x, self.n0, generator)
            counts = certifier.sample_counts(x, self.n, generator)
            c_hat, n_a = certifier.selected_votes(counts0, counts)
            certified, p_a_lower, radius = certify_from_counts(n_a, self.n, self.level,
                                                               certifier.sigma)
            if not certified:
                return Certificate(ABSTAIN, 0.0, n_a, p_a_lower, self.n)
            return Certificate(c_hat, float(radius), n_a, p_a_lower, self.n)

        def predict(self, certifier, x, generator):
            from dmae.certify.stats import predict_pvalue

            counts = certifier.sample_counts(x, self.n, generator)
            top, n_top, n_second = certifier.top_two(counts)
            if predict_pvalue(n_top, n_second) > self.level:
                return Prediction(ABSTAIN, self.n)
            return Prediction(top, self.n)

        def ceiling(self, sigma):
            return Ceiling(self.n, self.level)

        def ceiling_text(self, largest_radius):
            return (f"At level alpha / share = {self.level:g} no radius above "
                    f"{largest_radius(1.0):.4f} sigma can be certified.")
    ''')


def library_with(tmp_path: Path, files: dict[str, str]) -> dict[str, str]:
    """A copy of the library with ``files`` added to dmae/certify/methods/, and the
    environment whose `dmae` runs it."""
    site = tmp_path / "site"
    shutil.copytree(SRC, site / "dmae", ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in files.items():
        (site / "dmae" / "certify" / "methods" / name).write_text(text)
    return {**os.environ, "PYTHONPATH": str(site)}


def dmae(env: dict[str, str], *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dmae"), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600)


def test_a_method_added_as_one_file_is_certified_recorded_and_reported(tmp_path, monkeypatch):
    env = library_with(tmp_path, {"bonferroni.py": BONFERRONI})
    installed = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    spec = write_fashion_mnist_fixture(tmp_path / "source", n_train=20, n_test=12)
    prepare_dataset("fashion-mnist", tmp_path / "data" / "prepared", tmp_path / "raw",
                    val_size=4, source_dir=tmp_path / "source", spec=spec)
    raw = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    raw["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results")}
    raw.update(methods={"rs": raw["methods"]["rs"]}, sigmas=[0.25])
    raw["certify"].update(method="bonferroni", share=3, n0=10, n=100, stride=3, shards=1)
    path = tmp_path / "bonferroni.yaml"
    path.write_text(yaml.safe_dump(raw))

    # The installed library knows no such method; the copy with the one file does.
    assert "certify.method: 'bonferroni' is not one of" in dmae(
        installed, "validate-config", "--config", path).stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({**raw, "certify": {**raw["certify"], "shares": 3}}))
    refused = dmae(env, "validate-config", "--config", typo)
    assert refused.returncode == 2 and "unknown key certify.shares" in refused.stderr
    assert "share" in refused.stderr.split("allowed here:")[1]

    # This process's library learns the method as the copy's registry found it, for the paths.
    module: dict = {}
    exec(compile(BONFERRONI, "bonferroni.py", "exec"), module)
    known = methods.registered()
    monkeypatch.setattr(methods, "registered", lambda: {**known, "bonferroni":
                                                        module["Bonferroni"]})
    cfg = cfglib.load(path)
    model_cfg, _ = cfglib.finetune_settings(cfg, "micro", "rs", 0.25)
    torch.manual_seed(0)
    model = build_downstream(model_cfg, 10, "finetune")
    checkpoint = save_checkpoint(tmp_path / "finetuned" / "best", model.state_dict(),
                                 {"model_cfg": model_cfg, "num_classes": 10, "task": "finetune",
                                  "sigma": 0.25})
    tsv = layout.certify_tsv(cfg, "micro", "rs", 0.25)
    assert tsv.parent.parent.parent.name == "certify-bonferroni"
    certified = dmae(env, "certify", "--config", path, "--checkpoint", checkpoint, "--sigma",
                     0.25, "--out", tsv, "--threads", 1)
    assert certified.returncode == 0, certified.stderr
    meta = read_json(layout.meta_path(tsv))
    assert meta["settings"]["method"] == {"name": "bonferroni", "share": 3}
    rows = pd.read_csv(tsv, sep="\t")
    assert list(rows["idx"]) == [0, 3, 6, 9] and (rows["n_used"] == 100).all()

    reported = dmae(env, "report", "--config", path)
    assert reported.returncode == 0, reported.stderr
    tables = layout.results_dir(cfg) / "tables"
    summary = (tables / "summary.md").read_text()
    assert ("- certification: bonferroni (Cohen et al.'s CERTIFY at level alpha / share), "
            "n0 = 10, n = 100, alpha = 0.001;") in summary
    assert "At level alpha / share = 0.000333333 no radius above" in summary
    table = pd.read_csv(tables / "certified_accuracy.csv", dtype=str)
    assert list(table["certification"]) == ["bonferroni"]


def test_a_method_module_must_define_one_method(tmp_path):
    """Two methods in one module (or none) stop every command at its config, naming the
    file; so does a method whose name another module's method has."""
    two = BONFERRONI + textwrap.dedent('''

        class Other(Bonferroni):
            name = "other"
        ''')
    for files, message in (({"bonferroni.py": two}, "found 2: Bonferroni, Other"),
                           ({"empty.py": '"""Nothing yet."""\n'}, "found 0: none"),
                           ({"twin.py": BONFERRONI.replace('"bonferroni"', '"cohen"')},
                            "method 'cohen' is defined by ")):
        env = library_with(tmp_path / message.split(":")[0].replace(" ", "_"), files)
        proc = dmae(env, "validate-config", "--config", REPO / "config" / "smoke.yaml")
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


class Named(Cohen):
    name = "named"


@pytest.mark.parametrize("attributes, message", [
    ({"name": "Bad Name"}, r"Named.name must be a lower-case name"),
    ({"summary": ""}, r"Named.summary must say what named does"),
    ({"settings": {"radii": {"default": None, "description": "x"}}},
     r"certify.radii is a setting of adaptive already"),
    ({"settings": {"k": {"type": "integer"}}}, r"must be a JSON schema with a default"),
    ({"derived": {"k": "report.radii"}}, r"Named.derived names 'k', which is not one of its"),
])
def test_a_method_is_checked_when_registered(attributes, message):
    cls = type("Named", (Named,), attributes)
    with pytest.raises(methods.MethodError, match=message):
        methods._check(cls, "named.py", methods.registered())


def test_a_setting_of_another_method_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"certify.radii: not a setting of certify.method "
                                         r"cohen \(its own: none\)"):
        Cohen(n0=1, n=2, alpha=0.1, radii=[0.5])


def test_a_method_without_its_text_cannot_be_built():
    """What the report says of a method (its ceiling) is part of the method: a class that
    leaves it out is abstract, and the registry passes over it."""
    class Untold(CertificationMethod):
        name = "untold"
        summary = "certifies"

        def certify(self, certifier, x, generator, label=None):
            raise NotImplementedError

        def predict(self, certifier, x, generator):
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract"):
        Untold(n0=1, n=2, alpha=0.1)
    assert Cohen(n0=1, n=2, alpha=0.1).ceiling(0.5) == Ceiling(2, 0.1)
