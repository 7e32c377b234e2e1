"""What a workflow rule computes with, as one digest: its command line and the library code
that command runs, blind to the edits that cannot change a result.

Snakemake (a ``params`` entry of each rule) and DVC (``params`` from ``IDENTITY_FILE``) both
rerun a rule's jobs when its digest changes, and only then, so the two tools agree after any
edit. Snakemake recomputes the digests every time it reads the workflow and rewrites the file
when they moved; ``python -m dmae.ops.dvc --all`` writes it too, and ``--check`` (a test)
fails while the committed one is stale.

Which code counts for a rule: the part of the CLI its `dmae` subcommand runs (``cli_tree``:
all but the other subcommands' functions and arguments), and every library module that part
can import, following every import statement (inside functions too), the packages that
export lazily (``dmae.lazy_exports``) and the packages whose modules a registry imports by
finding them on disk (``DISCOVERED``: every certification method); plus the data files
those modules read (``DATA_FILES``). Everything else in the library (other stages, the DVC
and browser tooling, ``dmae.pipeline`` with its resources) is no rule's code.

What does not count, because no output depends on it: comments, blank lines and formatting
(the digest is over Python's syntax tree, not the text); docstrings and other bare strings;
text for people, namely the messages of ``raise``, ``assert``, logging calls,
``warnings.warn`` and ``print`` to the terminal, argparse's help texts and tqdm's labels; in
the config schema, its descriptions. A changed value, expression, default or name counts.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
from functools import cache
from pathlib import Path

import yaml

import dmae
from dmae.io import atomic_path

SRC = Path(dmae.__file__).parent  # the library the `dmae` CLI runs
IDENTITY_FILE = "workflow/code-identity.yaml"  # relative to the repository
# Files that library modules read at run time, by the module that reads them.
DATA_FILES = {"dmae.config": ("schemas/config.schema.yaml",),
              "dmae.report.reference": ("reference_results.csv",)}
# Packages that import every module of theirs found on disk, not by an import statement:
# whoever imports the package runs each of them (a certification method added is a file).
DISCOVERED = ("dmae.certify.methods",)
DIGEST_CHARS = 16  # of a sha256: 64 bits, ample to tell versions of one file apart

HEADER = """\
# GENERATED from the library's code by dmae.code_identity, rewritten by every snakemake run
# and by `python -m dmae.ops.dvc --all`. Do not edit.
# rules: the digest of what each workflow rule computes with (its command and the normalised
# source of the code it runs); Snakemake and DVC rerun a rule's jobs when it changes.
# files: each library file's normalised digest, to see which file moved a rule's.
"""


# ---------------------------------------------------------------------- normalised sources

_LOGGERS = {"log", "logger", "logging"}
_LOG_CALLS = {"debug", "info", "warning", "error", "exception", "critical"}
_ARGPARSE_CALLS = {"ArgumentParser", "add_argument", "add_parser", "add_argument_group",
                   "add_mutually_exclusive_group", "add_subparsers"}
_ARGPARSE_TEXT = {"help", "description", "epilog", "metavar", "title", "usage"}
_PLACEHOLDER = "<text>"


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant)
                                               and isinstance(node.value, str))


def _call_name(call: ast.Call) -> tuple[str | None, str | None]:
    """(receiver, name) of ``receiver.name(...)``, or (None, name) of ``name(...)``."""
    func = call.func
    if isinstance(func, ast.Attribute):
        receiver = func.value.id if isinstance(func.value, ast.Name) else None
        return receiver, func.attr
    return None, func.id if isinstance(func, ast.Name) else None


def _prints_to_terminal(call: ast.Call) -> bool:
    for keyword in call.keywords:
        if keyword.arg == "file":
            target = keyword.value
            return (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id == "sys" and target.attr in ("stdout", "stderr"))
    return True


class _Normaliser(ast.NodeTransformer):
    """Drops docstrings and bare strings; replaces text meant only for people."""

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                kept = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(
                    s.value, ast.Constant) and isinstance(s.value.value, str))]
                setattr(node, field, kept or ([ast.Pass()] if field == "body" else []))
        return node

    def visit_Raise(self, node: ast.Raise) -> ast.AST:
        if isinstance(node.exc, ast.Call):
            self._blank_args(node.exc)
        return self.generic_visit(node)

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        node.msg = None
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        receiver, name = _call_name(node)
        if ((receiver in _LOGGERS and name in _LOG_CALLS)
                or (receiver == "warnings" and name == "warn")
                or (receiver is None and name == "print" and _prints_to_terminal(node))
                or (receiver == "parser" and name == "error")):
            self._blank_args(node)
        if name in _ARGPARSE_CALLS:
            self._blank_keywords(node, _ARGPARSE_TEXT)
        if name in ("tqdm", "progress_bar"):
            self._blank_keywords(node, {"desc"})
        return self.generic_visit(node)

    @staticmethod
    def _blank_args(call: ast.Call) -> None:
        call.args = [ast.Constant(_PLACEHOLDER) if _is_text(a) else a for a in call.args]

    @staticmethod
    def _blank_keywords(call: ast.Call, names: set[str]) -> None:
        for keyword in call.keywords:
            if keyword.arg in names and _is_text(keyword.value):
                keyword.value = ast.Constant(_PLACEHOLDER)


def _canonical(node: object) -> str:
    """The tree as text that does not depend on the Python version: fields a newer Python
    adds (empty or None for older syntax) are left out, as are line numbers."""
    if isinstance(node, ast.AST):
        fields = [f"{name}={_canonical(value)}" for name, value in ast.iter_fields(node)
                  if value is not None and value != []]
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return f"[{','.join(map(_canonical, node))}]"
    return repr(node)


def normalised_python(source: str | ast.Module, filename: str = "<source>") -> str:
    tree = ast.parse(source, filename) if isinstance(source, str) else source
    return _canonical(_Normaliser().visit(tree))


_SCHEMA_TEXT = {"description", "title", "$comment", "examples"}


_NAMED = {"properties", "patternProperties", "$defs", "definitions"}  # their keys are names


def _without_text(node: object, names: bool = False) -> object:
    """A JSON schema without its annotations for people; under ``properties`` and the like,
    keys are names (a setting may be called ``title``) and stay."""
    if isinstance(node, dict):
        return {k: _without_text(v, names=not names and k in _NAMED) for k, v in node.items()
                if names or k not in _SCHEMA_TEXT}
    if isinstance(node, list):
        return [_without_text(v) for v in node]
    return node


def normalised(path: Path) -> bytes:
    """What of a library file can change a result: Python's syntax tree without text for
    people, a YAML file's data without descriptions, any other file's bytes."""
    if path.suffix == ".py":
        return normalised_python(path.read_text(), str(path)).encode()
    if path.suffix in (".yaml", ".yml"):
        data = _without_text(yaml.safe_load(path.read_text()))
        return json.dumps(data, ensure_ascii=False).encode()  # in order: defaults fill in it
    return path.read_bytes()


def file_digest(path: Path) -> str:
    return hashlib.sha256(normalised(path)).hexdigest()[:DIGEST_CHARS]


# ------------------------------------------------------------------------- what a rule runs


def module_file(module: str, src: Path = SRC) -> Path | None:
    """The source file of a module of the library (None: not one of its modules)."""
    parts = module.split(".")
    if parts[0] != "dmae":
        return None
    base = src.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _parsed(path: Path) -> ast.Module:
    return _parse(path.read_text(), str(path))


@cache  # by content: a file edited in the same process is parsed again
def _parse(source: str, filename: str) -> ast.Module:
    return ast.parse(source, filename)


def _lazy_exports(package: str, src: Path) -> dict[str, str] | None:
    """Name -> module of a package that exports lazily (its ``_EXPORTS``), else None."""
    init = module_file(package, src)
    if init is None or init.name != "__init__.py":
        return None
    for node in _parsed(init).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "_EXPORTS"):
            exports = ast.literal_eval(node.value)
            return {name: f"{package}.{module}" for module, names in exports.items()
                    for name in names}
    return None


def _with_parents(module: str) -> set[str]:
    """Importing a.b.c runs a and a.b first."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _imported(module: str, nodes: list[ast.AST], src: Path) -> set[str]:
    """The library modules that the import statements among ``nodes`` (of ``module``) load."""
    path = module_file(module, src)
    package = module if path is not None and path.name == "__init__.py" else (
        module.rpartition(".")[0])
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= _with_parents(alias.name)
                lazy = _lazy_exports(alias.name, src)
                found |= set(lazy.values()) if lazy else set()  # any of its names, later
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found |= _with_parents(source)
            lazy = _lazy_exports(source, src)
            for alias in node.names:
                if module_file(f"{source}.{alias.name}", src) is not None:  # a submodule
                    found |= _with_parents(f"{source}.{alias.name}")
                    lazy_inner = _lazy_exports(f"{source}.{alias.name}", src)
                    found |= set(lazy_inner.values()) if lazy_inner else set()
                elif lazy and alias.name in lazy:
                    found.add(lazy[alias.name])
    return {m for m in found if module_file(m, src) is not None}


def _discovered(module: str, src: Path) -> set[str]:
    """The modules that package ``module`` finds on disk and imports (``DISCOVERED``)."""
    if module not in DISCOVERED:
        return set()
    folder = module_file(module, src).parent
    return {f"{module}.{path.stem}" for path in folder.glob("*.py") if path.stem != "__init__"}


def _import_nodes(tree: ast.AST) -> list[ast.AST]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def _added_subcommand(statement: ast.stmt) -> str | None:
    """The name of the subcommand a ``sub.add_parser("<name>", ...)`` statement adds."""
    value = getattr(statement, "value", None)
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "add_parser" and value.args
            and isinstance(value.args[0], ast.Constant)):
        return value.args[0].value
    return None


def cli_tree(subcommand: str, src: Path = SRC) -> ast.Module:
    """The part of dmae.cli that `dmae <subcommand>` runs: all but the other subcommands'
    ``cmd_*`` functions and their arguments in ``build_parser`` (each subcommand's block
    there starts with its ``sub.add_parser``), so adding or changing another subcommand
    changes no rule's digest."""
    tree = copy.deepcopy(_parsed(module_file("dmae.cli", src)))
    own = "cmd_" + subcommand.replace("-", "_")
    if not any(isinstance(n, ast.FunctionDef) and n.name == own for n in tree.body):
        raise ValueError(f"dmae.cli has no function {own} for the subcommand {subcommand!r} "
                         "(each subcommand's code lives in cmd_<subcommand>)")
    kept = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("cmd_") and (
                node.name != own):
            continue
        if isinstance(node, ast.FunctionDef) and node.name == "build_parser":
            if subcommand not in {_added_subcommand(s) for s in node.body}:
                raise ValueError(f"dmae.cli.build_parser: the block of {subcommand!r} must "
                                 f'start with a statement `sub.add_parser("{subcommand}", '
                                 "...)`, or its arguments cannot be told from another's")
            block, body = None, []  # None: the arguments every subcommand shares
            for statement in node.body:
                block = _added_subcommand(statement) or block
                if isinstance(statement, ast.Return):
                    block = None
                if block in (None, subcommand):
                    body.append(statement)
            node.body = body
        kept.append(node)
    tree.body = kept
    return tree


def modules(subcommand: str, src: Path = SRC) -> set[str]:
    """Every library module `dmae <subcommand>` can import."""
    seen = {"dmae.cli"}
    todo = list(_imported("dmae.cli", _import_nodes(cli_tree(subcommand, src)), src))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += _imported(module, _import_nodes(_parsed(module_file(module, src))), src)
        todo += _discovered(module, src)
    return seen


def code_files(subcommand: str, src: Path = SRC) -> list[Path]:
    """The library files `dmae <subcommand>` runs: its modules and the data they read."""
    files = set()
    for module in modules(subcommand, src):
        files.add(module_file(module, src))
        files |= {src / name for name in DATA_FILES.get(module, ())}
    return sorted(files)


# ------------------------------------------------------------------------------ the digests


def identity(commands: dict[str, str], src: Path = SRC) -> dict:
    """``{"rules": {rule: digest}, "files": {file: digest}}`` for the rules' command lines
    (``dmae <subcommand> ...``, or ``{params.launcher} <subcommand> ...`` under torchrun)."""
    digests: dict[str, str] = {}
    rules = {}
    for rule, command in commands.items():
        subcommand = command.split()[1]
        lines = [f"command {command}"]
        for path in code_files(subcommand, src):
            name = path.relative_to(src).as_posix()
            if name == "cli.py":  # only its own part of the CLI
                name = f"cli.py ({subcommand})"
                if name not in digests:
                    text = normalised_python(cli_tree(subcommand, src)).encode()
                    digests[name] = hashlib.sha256(text).hexdigest()[:DIGEST_CHARS]
            elif name not in digests:
                digests[name] = file_digest(path)
            lines.append(f"{name} {digests[name]}")
        rules[rule] = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:DIGEST_CHARS]
    return {"rules": rules, "files": dict(sorted(digests.items()))}


def subcommand_digest(subcommand: str, src: Path = SRC) -> str:
    """The digest of what `dmae <subcommand>` computes with, whatever its arguments."""
    return identity({subcommand: f"dmae {subcommand}"}, src)["rules"][subcommand]


def render(ident: dict) -> str:
    return HEADER + yaml.safe_dump(ident, sort_keys=False)


def write(path: Path, ident: dict) -> bool:
    """Write ``ident`` to ``path`` unless it holds it already; True when it was written."""
    text = render(ident)
    if path.is_file() and path.read_text() == text:
        return False
    with atomic_path(path) as tmp:  # never read half-written by DVC or another snakemake
        tmp.write_text(text)
    return True
