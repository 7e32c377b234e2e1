"""Code digests (dmae.code_identity): what a rule computes with, blind to what cannot change a
result. The workflow-level checks (Snakemake plans nothing, DVC stays clean after such edits
of every library file) are in test_workflow.py and test_dvc.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO

from dmae import code_identity, pipeline
from dmae.code_identity import SRC, normalised_python

BASE = textwrap.dedent('''\
    """A module."""
    import logging

    log = logging.getLogger(__name__)
    SCALE = 2.0


    def scaled(x, *, factor=SCALE):
        """Scale x."""
        if x < 0:
            raise ValueError(f"x must be >= 0, got {x}")
        assert factor > 0, "factor must be positive"
        log.info("scaling %s by %s", x, factor)
        print("scaling", x)
        for _ in progress_bar([x], desc="scaling"):
            pass
        return {"value": x * factor}


    def parser(argparse):
        p = argparse.ArgumentParser(description="Scale things.")
        p.add_argument("--factor", type=float, default=SCALE, help="the factor")
        return p
    ''')

SAME = {
    "a comment": BASE.replace("SCALE = 2.0", "SCALE = 2.0  # the default"),
    "blank lines and wrapping": BASE.replace('return {"value": x * factor}',
                                             'return {\n        "value": x * factor,\n    }\n'),
    "a docstring": BASE.replace('"""Scale x."""', '"""Scale x by the factor, which must be >0."""'),
    "a docstring removed": BASE.replace('    """Scale x."""\n', ""),
    "a module docstring": BASE.replace('"""A module."""', '"""Another text."""'),
    "an error message": BASE.replace("x must be >= 0, got {x}", "negative x: {x}"),
    "an assert message": BASE.replace("factor must be positive", "bad factor"),
    "a log message": BASE.replace('"scaling %s by %s"', '"x=%s, factor=%s"'),
    "a printed text": BASE.replace('print("scaling", x)', 'print("now scaling", x)'),
    "a help text": BASE.replace('help="the factor"', 'help="what x is multiplied by"'),
    "a description": BASE.replace('"Scale things."', '"Scale numbers."'),
    "a progress bar's label": BASE.replace('desc="scaling"', 'desc="scale"'),
}

DIFFERENT = {
    "a constant": BASE.replace("SCALE = 2.0", "SCALE = 3.0"),
    "an operator": BASE.replace("x * factor", "x + factor"),
    "a comparison": BASE.replace("x < 0", "x <= 0"),
    "a default": BASE.replace("factor=SCALE):", "factor=1.0):"),
    "an output key": BASE.replace('{"value"', '{"scaled"'),
    "an argparse default": BASE.replace("default=SCALE,", "default=1.0,"),
    "a logged value": BASE.replace("x, factor)", "x, SCALE)"),
    "a call inside an f-string statement": BASE.replace(
        '    print("scaling", x)\n', '    print("scaling", x)\n    f"{next(iter([x]))}"\n'),
    "a removed check": BASE.replace("    if x < 0:\n        raise ValueError("
                                    'f"x must be >= 0, got {x}")\n', ""),
}


@pytest.mark.parametrize("edit", sorted(SAME))
def test_edits_that_cannot_change_a_result_keep_the_digest(edit):
    assert SAME[edit] != BASE, f"the edit {edit!r} changed nothing"
    assert normalised_python(SAME[edit]) == normalised_python(BASE), edit


@pytest.mark.parametrize("edit", sorted(DIFFERENT))
def test_edits_of_what_is_computed_change_the_digest(edit):
    assert DIFFERENT[edit] != BASE, f"the edit {edit!r} changed nothing"
    assert normalised_python(DIFFERENT[edit]) != normalised_python(BASE), edit


LIBRARY = sorted(p for p in SRC.rglob("*.py"))


def test_a_comment_and_a_docstring_in_every_library_file_keep_its_digest(tmp_path):
    for path in LIBRARY:
        text = path.read_text()
        edited = tmp_path / path.name
        doc = '"""Edited by a test."""\n' if not text.lstrip().startswith(('"""', "'''")) else ""
        edited.write_text(doc + text + "\n# a comment added by a test\n")
        assert code_identity.normalised(edited) == code_identity.normalised(path), path


def test_the_schema_counts_its_values_not_its_descriptions(tmp_path):
    schema = SRC / "schemas" / "config.schema.yaml"
    text = schema.read_text()
    said, default = 'description: "CPU threads of the job, all processes"', "default: best\n"
    assert said in text and default in text
    described = tmp_path / "described.yaml"
    described.write_text(text.replace(said, "description: threads", 1) + "# end\n")
    assert code_identity.normalised(described) == code_identity.normalised(schema)
    defaulted = tmp_path / "defaulted.yaml"
    defaulted.write_text(text.replace(default, "default: last\n", 1))
    assert code_identity.normalised(defaulted) != code_identity.normalised(schema)


def test_a_schema_setting_named_like_an_annotation_counts():
    """Under ``properties`` the keys are setting names: one called ``title`` is a setting,
    not the schema's annotation."""
    schema = {"type": "object", "description": "a report",
              "properties": {"title": {"type": "string", "default": "Results",
                                       "description": "the heading"}}}
    renamed = {**schema, "properties": {"heading": schema["properties"]["title"]}}
    reworded = {**schema, "description": "another text"}
    strip = code_identity._without_text
    assert strip(schema) == strip(reworded)
    assert strip(schema) != strip(renamed)
    assert strip(schema)["properties"]["title"] == {"type": "string", "default": "Results"}


def test_every_data_file_of_the_library_belongs_to_the_module_that_reads_it():
    data = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc")}
    claimed = {name for names in code_identity.DATA_FILES.values() for name in names}
    assert data == claimed
    for module, names in code_identity.DATA_FILES.items():
        source = code_identity.module_file(module).read_text()
        assert all(name.rsplit("/", 1)[-1] in source for name in names), module


def test_every_subcommand_has_its_cmd_function():
    """The digest of a rule follows its subcommand's ``cmd_<name>``: the convention holds."""
    from dmae import cli

    parser = cli.build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subcommands.items():
        # dvc-yaml's own parser (dmae.ops.dvc.stages) runs from main(), through cmd_dvc_yaml
        func = sub.get_default("func") or cli.cmd_dvc_yaml
        assert func.__name__ == "cmd_" + name.replace("-", "_"), name


def test_each_rule_counts_every_library_module_its_command_imports():
    """Static (every import statement, lazy exports followed) must cover what a fresh process
    that runs the command's module actually loads."""
    entries = {"prepare": "dmae.data.stage", "pretrain": "dmae.train.stage",
               "finetune": "dmae.train.stage", "certify": "dmae.certify.stage",
               "merge-certify": "dmae.certify.stage",
               "reconstruct": "dmae.report.reconstructions", "report": "dmae.report.build"}

    def loaded_by(module: str) -> set[str]:  # in a fresh process: nothing imported before
        script = ("import json, sys, dmae.cli, " + module + "; print(json.dumps(sorted("
                  "n for n in sys.modules if n.startswith('dmae'))))")
        return set(json.loads(subprocess.run([sys.executable, "-c", script], check=True,
                                             capture_output=True, text=True).stdout))

    modules = sorted(set(entries.values()))
    with ThreadPoolExecutor(len(modules)) as pool:  # side by side: seconds of imports each
        loaded = dict(zip(modules, pool.map(loaded_by, modules), strict=True))
    for rule, spec in pipeline.RULES.items():
        subcommand = spec.command.split()[1]
        counted = code_identity.modules(subcommand)
        missing = loaded[entries[subcommand]] - counted
        assert not missing, f"{rule} does not count {sorted(missing)}"
        assert entries[subcommand] in counted


def test_a_rule_counts_only_its_own_code():
    """The report never reruns for a model change, nor data preparation for the report's
    wording; the DVC and browser tooling and the rule table's resources count for no rule."""
    report = code_identity.modules("report")
    prepare = code_identity.modules("prepare")
    assert not any(m.startswith("dmae.models") for m in report)
    assert not any(m.startswith(("dmae.report", "dmae.models", "dmae.train")) for m in prepare)
    for subcommand in {r.command.split()[1] for r in pipeline.RULES.values()}:
        mods = code_identity.modules(subcommand)
        assert not {m for m in mods if m.startswith("dmae.ops")}, subcommand
        assert not mods & {"dmae.pipeline", "dmae.code_identity"}, subcommand


def test_a_changed_command_line_changes_only_its_rules_digest():
    commands = {rule: r.command for rule, r in pipeline.RULES.items()}
    before = code_identity.identity(commands)["rules"]
    commands["report"] += " --verbose"
    after = code_identity.identity(commands)["rules"]
    assert {r for r in before if before[r] != after[r]} == {"report"}


def test_the_committed_digests_are_current():
    committed = (REPO / code_identity.IDENTITY_FILE).read_text()
    assert committed == code_identity.render(pipeline.code_digests()), (
        f"{code_identity.IDENTITY_FILE} is stale: run `python -m dmae.ops.dvc --all` (any "
        "snakemake run rewrites it too)")


def library_copy(tmp_path) -> Path:
    copy = tmp_path / "dmae"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_a_rule_counts_only_its_own_subcommand_of_the_cli(tmp_path):
    """Another subcommand, added or changed, moves no rule's digest (all are in cli.py); a
    default of the rule's own arguments moves its own."""
    before = pipeline.code_digests()["rules"]
    src = library_copy(tmp_path)
    cli = src / "cli.py"
    text = cli.read_text()
    added = text.replace(
        "def build_parser() -> argparse.ArgumentParser:",
        "def cmd_hello(args, cfg):\n    from dmae.ops import pages\n\n"
        "    return pages.main([])\n\n\n"
        "def build_parser() -> argparse.ArgumentParser:").replace(
        "    return parser\n",
        '    p = sub.add_parser("hello", parents=[common])\n'
        '    p.add_argument("--loud", type=int, default=3)\n'
        "    p.set_defaults(func=cmd_hello)\n    return parser\n", 1)
    assert added.count("cmd_hello") == 2
    cli.write_text(added)
    assert pipeline.code_digests(src)["rules"] == before
    own = 'p.add_argument("--images", type=int, default=8,'
    assert own in text
    cli.write_text(text.replace(own, own.replace("default=8", "default=9")))
    after = pipeline.code_digests(src)["rules"]
    assert {r for r in before if before[r] != after[r]} == {"reconstructions"}


CERTIFYING = ("certify", "merge-certify", "report")  # the rules that read certify.method


def test_a_method_module_found_on_disk_counts_for_the_rules_that_certify(tmp_path):
    """No import statement names a method module (the registry finds them in its package),
    yet an edit of one's code moves the digests of the rules that certify, merge and report,
    and a comment or docstring does not; neither moves another rule's. A method added, one
    file, counts as well."""
    src = library_copy(tmp_path)
    digests = {s: code_identity.subcommand_digest(s, src) for s in (*CERTIFYING, "finetune")}
    module = src / "certify" / "methods" / "cohen.py"
    text = module.read_text()
    code = "return Ceiling(self.n, self.alpha)"
    assert code in text
    module.write_text(text.replace('"""CERTIFY and PREDICT', '"""The CERTIFY and PREDICT')
                      + "# a comment\n")
    assert {s: code_identity.subcommand_digest(s, src) for s in digests} == digests
    module.write_text(text.replace(code, "return Ceiling(self.n, self.alpha / 2)"))
    edited = {s: code_identity.subcommand_digest(s, src) for s in digests}
    assert {s for s in digests if edited[s] != digests[s]} == set(CERTIFYING)
    module.write_text(text)
    (src / "certify" / "methods" / "twin.py").write_text(
        "from dmae.certify.methods.cohen import Cohen\n\n\n"
        "class Twin(Cohen):\n    name = 'twin'\n")
    added = {s: code_identity.subcommand_digest(s, src) for s in digests}
    assert {s for s in digests if added[s] != digests[s]} == set(CERTIFYING)


def test_what_the_method_registry_loads_counts_for_the_rules_that_certify():
    """A fresh process that finds every method loads only modules those rules count."""
    script = ("import json, sys; from dmae.certify import methods; methods.registered(); "
              "print(json.dumps(sorted(n for n in sys.modules if n.startswith('dmae'))))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", script], check=True,
                                           capture_output=True, text=True).stdout))
    assert "dmae.certify.methods.adaptive" in loaded
    for subcommand in CERTIFYING:
        assert loaded <= code_identity.modules(subcommand), subcommand
