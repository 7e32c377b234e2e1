"""``make pull`` and ``make push``: DVC's pull and push of a config's pipeline, with the
remote asked first.

``pull`` and ``push`` read the default remote from DVC's config, check that it can be reached
(a TCP connection to its endpoint or host; a folder remote must exist on this machine), then
ask ``dvc status --cloud`` for the outputs concerned, and stop with ``RemoteError`` before DVC
changes anything when the remote cannot be reached, refuses the credentials, or lacks an
output. DVC alone would pull what it can, then fail naming neither the remote nor the stage
(``failed to connect to s3 (bucket/files/md5) - Forbidden``), and it retries an absent
endpoint for a while before saying so. A pull ends with ``sync.sync``, as the next
snakemake would.

    python -m dmae.ops.dvc --config config/cifar10.yaml --pull [STAGE ...]    # make pull
    python -m dmae.ops.dvc --config config/cifar10.yaml --push [STAGE ...]    # make push
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from dmae.ops.dvc.stages import dvc_file, posix
from dmae.ops.dvc.sync import entry_paths, inside, sync, tool


class RemoteError(RuntimeError):
    """A pull or push that cannot work, said with the remote and the outputs concerned."""


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    settings: dict[str, str]  # remote.<name>.* from every level of DVC's config (with secrets)
    root: Path

    @property
    def endpoint(self) -> str | None:
        return self.settings.get("endpointurl")

    @property
    def folder(self) -> Path | None:
        """The folder of a remote on this machine's file system (None: a network remote)."""
        if "://" in self.url and not self.url.startswith("file://"):
            return None
        path = Path(os.path.expanduser(self.url.removeprefix("file://")))
        # DVC reads a relative folder from .dvc/, where the config file is.
        return path if path.is_absolute() else (self.root / ".dvc" / path).resolve()

    def __str__(self) -> str:
        where = [self.url] + ([f"endpoint {self.endpoint}"] if self.endpoint else [])
        return f"DVC remote '{self.name}' ({', '.join(where)})"


def default_remote(root: Path | str = ".") -> Remote:
    """The remote that a plain `dvc pull`/`dvc push` in ``root`` uses."""
    proc = subprocess.run([tool("dvc"), "config", "--list"], cwd=root, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RemoteError(f"cannot read DVC's config in {Path(root).resolve()}:\n"
                          f"{_dvc_error(proc.stderr)}")
    config = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    name = config.get("core.remote")
    if not name:
        raise RemoteError("no default DVC remote is set (core.remote in .dvc/config): add one "
                          "with `dvc remote add -d NAME URL` (docs/dvc.md)")
    prefix = f"remote.{name}."
    settings = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
    if "url" not in settings:
        raise RemoteError(f"the default DVC remote '{name}' is not defined in .dvc/config or "
                          ".dvc/config.local (`dvc remote list` shows those that are)")
    return Remote(name, settings["url"], settings, Path(root))


def _unreachable(remote: Remote, pulling: bool) -> str | None:
    """Why ``remote`` cannot be reached from here, when a quick look tells (else None)."""
    if (folder := remote.folder) is not None:
        # A push creates the folder; a pull from a folder that is not there finds nothing.
        if pulling and not folder.is_dir():
            return ("the folder does not exist on this machine (a folder remote serves only "
                    "the machine it is on: docs/dvc.md shows how to set a shared one)")
        return None
    address = urlsplit(remote.endpoint or remote.url)
    default_port = {"http": 80, "https": 443, "ssh": 22}.get(address.scheme)
    if not address.hostname or not (address.port or default_port):
        return None  # a cloud service at its usual address (s3://bucket): DVC will tell
    host, port = address.hostname, address.port or default_port
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or exc})"
    return None


# Words of the storage libraries' errors (botocore, s3fs, paramiko, aiohttp) as DVC passes them
# (HTTP codes in botocore's parentheses: a bare 403 may be part of a hash in a path).
_REFUSED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden",
            "ExpiredToken", "InvalidToken", "InvalidClientTokenId", "Unauthorized",
            "Authentication failed", "(401)", "(403)")
_NO_CREDENTIALS = ("Unable to locate credentials", "NoCredentialsError")
_UNREACHABLE = ("Could not connect", "Connection refused", "Connect timeout", "timed out",
                "Cannot connect to host", "Name or service not known", "No route to host",
                "Temporary failure in name resolution", "nodename nor servname")


def _dvc_error(stderr: str) -> str:
    """DVC's error lines, without its prefixes and its support footer; of a botocore error,
    the part that names the refusal (DVC prints its message twice)."""
    lines = [line.removeprefix("ERROR: ").removeprefix("unexpected error - ")
             for line in stderr.splitlines() if line.startswith("ERROR: ")]
    lines = [line[line.index("An error occurred ("):] if ": An error occurred (" in line
             else line for line in lines]
    return "\n".join(lines) or stderr.strip()


def _credentials(remote: Remote) -> str:
    """Where the credentials of an S3 remote were taken from (never their values)."""
    for key in ("access_key_id", "profile", "credentialpath"):
        if key in remote.settings:
            return f"{key} in .dvc/config.local or .dvc/config"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"):
        if os.environ.get(key):
            return f"{key} in the environment"
    return "~/.aws, none being set in DVC's config or the environment"


def _failure(remote: Remote, stderr: str, action: str) -> RemoteError:
    said = _dvc_error(stderr)
    first = said.splitlines()[0] if said else ""
    nothing = f"Nothing was {action}."
    s3 = remote.url.startswith("s3://")
    how = (f"`dvc remote modify --local {remote.name} profile NAME` (or access_key_id and "
           "secret_access_key), or AWS_* environment variables" if s3 else
           f"`dvc remote modify --local {remote.name} ...`")
    if any(word in said for word in _NO_CREDENTIALS):
        return RemoteError(f"no credentials for {remote}: {first}\n{nothing} Give this "
                           f"machine's credentials outside git: {how} (docs/dvc.md).")
    if any(word in said for word in _REFUSED):
        source = f" (taken from {_credentials(remote)})" if s3 else ""
        return RemoteError(f"{remote} refused the credentials{source}: {first}\n{nothing} "
                           f"Give this machine's credentials outside git: {how} (docs/dvc.md).")
    if any(word in said for word in _UNREACHABLE):
        return RemoteError(f"cannot reach {remote}: {first}\n{nothing} Check the URL, the "
                           "endpoint and the network (docs/dvc.md).")
    if "NoSuchBucket" in said or "bucket does not exist" in said:
        return RemoteError(f"{remote}: the bucket does not exist: {first}\n{nothing}")
    return RemoteError(f"dvc failed with {remote}:\n{said}\n{nothing}")


def _targets(dvc_yaml: str, stages: list[str], root: Path | str) -> list[str]:
    if not stages:
        return [dvc_yaml]
    known = yaml.safe_load((Path(root) / dvc_yaml).read_text())["stages"]
    if unknown := [s for s in stages if s not in known]:
        raise RemoteError(f"{dvc_yaml} has no stage {', '.join(unknown)}; its stages: "
                          f"{', '.join(known)}")
    return [f"{dvc_yaml}:{s}" for s in stages]


def _cloud_status(remote: Remote, dvc_yaml: str, targets: list[str], root: Path | str,
                  action: str) -> dict[str, list[str]]:
    """Cached outputs of ``targets`` and the stages they need, by their state against the
    remote (DVC's words: "new" only here, "deleted" only there, "missing" in neither place),
    each as "<path> (stage <name>)"."""
    proc = subprocess.run([tool("dvc"), "status", "--cloud", "--json", "--with-deps",
                           *targets], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise _failure(remote, proc.stderr, action)
    stages = yaml.safe_load((Path(root) / dvc_yaml).read_text())["stages"]
    outs = {name: entry_paths(stage.get("outs")) for name, stage in stages.items()}
    states: dict[str, list[str]] = {}
    for path, state in json.loads(proc.stdout or "{}").items():
        owner = next((name for name, o in outs.items() if inside(posix(path), o)), None)
        states.setdefault(state, []).append(f"{path} (stage {owner})" if owner else path)
    return states


def _run_dvc(remote: Remote, args: list[str], root: Path | str, action: str) -> None:
    print("+ dvc " + shlex.join(args), flush=True)
    proc = subprocess.run([tool("dvc"), *args], cwd=root, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise _failure(remote, proc.stderr, action)


def _ask_remote(configfile: str, stages, root: Path | str, dvc_yaml: str | None, action: str
                ) -> tuple[str, list[str], Remote, list[str]]:
    """The pipeline file, DVC targets, default remote and the outputs the remote cannot
    serve for a pull or push (``action``: "pulled" or "pushed"); ``RemoteError`` when the
    remote cannot be reached."""
    dvc_yaml = dvc_yaml or dvc_file(configfile)
    targets = _targets(dvc_yaml, list(stages), root)
    remote = default_remote(root)
    if why := _unreachable(remote, pulling=action == "pulled"):
        raise RemoteError(f"cannot reach {remote}: {why}\nNothing was {action}.")
    missing = _cloud_status(remote, dvc_yaml, targets, root, action).get("missing")
    return dvc_yaml, targets, remote, missing or []


def pull(configfile: str, stages: tuple[str, ...] | list[str] = (), root: Path | str = ".",
         dvc_yaml: str | None = None) -> list[str]:
    """``make pull``: fetch the cached outputs of ``stages`` of the pipeline of ``configfile``
    (all when empty) and of the stages they depend on from the default remote, then
    marks what dvc.lock vouches for as done for Snakemake (``sync.sync``); return those
    stages. Raise ``RemoteError`` before DVC
    writes anything when the remote cannot be reached, refuses the credentials, or lacks one
    of those outputs."""
    dvc_yaml, targets, remote, missing = _ask_remote(configfile, stages, root, dvc_yaml,
                                                     "pulled")
    if missing:
        raise RemoteError(
            f"{len(missing)} output(s) of {dvc_yaml} are neither on {remote} nor in this "
            f"repository's cache:\n  " + "\n  ".join(sorted(missing)) + "\nNothing was "
            f"pulled. Push them from where they were made (make push CONFIG={configfile}), "
            "or pull only stages that do not need them (STAGES=...).")
    _run_dvc(remote, ["pull", "--with-deps", *targets], root, "pulled")
    marked = sync(root, dvc_yaml)
    total = len(yaml.safe_load((Path(root) / dvc_yaml).read_text())["stages"])
    print(f"{dvc_yaml}: {len(marked)} of {total} stages as dvc.lock records them, marked done "
          f"for Snakemake: {', '.join(marked) or 'none'}", flush=True)
    return marked


def push(configfile: str, stages: tuple[str, ...] | list[str] = (), root: Path | str = ".",
         dvc_yaml: str | None = None) -> None:
    """``make push``: upload the cached outputs of ``stages`` (all when empty) and of the
    stages they depend on to the default remote; ``RemoteError`` as for ``pull``, or when an
    output recorded in dvc.lock is in neither this repository's cache nor the remote."""
    dvc_yaml, targets, remote, missing = _ask_remote(configfile, stages, root, dvc_yaml,
                                                     "pushed")
    if missing:
        raise RemoteError(
            f"{len(missing)} output(s) recorded in the lock of {dvc_yaml} are neither in this "
            f"repository's cache nor on {remote}:\n  " + "\n  ".join(sorted(missing))
            + f"\nNothing was pushed. Run their stages (dvc repro {dvc_yaml}), or record the "
            f"outputs of a Snakemake run (dvc commit -f {dvc_yaml}; docs/dvc.md).")
    _run_dvc(remote, ["push", "--with-deps", *targets], root, "pushed")
