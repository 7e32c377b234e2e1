"""A team remote, for real: moto's S3 server on 127.0.0.1 (checking credentials the way AWS
does), the repository pointed at a bucket with the two commands of docs/dvc.md, `make push`,
and a plain `dvc pull` in a clone on "another machine" (another, empty HOME: neither the
folder remote nor the DVC cache of the pushing side exists there). Then what goes wrong: a remote
that does not answer, refused credentials, an output missing on the remote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, planned_jobs
from dvc_repos import (
    DVC_FILE,
    LOCK,
    dry_run,
    make,
    make_pull,
    out_files,
    pushed_repository,
    run,
    tool_env,
)

from dmae.ops.dvc import remote as dvcremote

BUCKET = "dmae-team"
URL = f"s3://{BUCKET}/dmae"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def pushed(tmp_path_factory):
    return pushed_repository(tmp_path_factory)  # one build for test_dvc{,_remote}.py


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3:
    """moto's server, as a team's object store: one IAM user whose keys may do anything on S3;
    any other key is refused."""

    def __init__(self, port: int):
        self.endpoint = f"http://127.0.0.1:{port}"
        admin = self.client("iam", "anything", "anything")
        team = self.user(admin, "team", "Allow")
        self.key_id, self.secret = team["AWS_ACCESS_KEY_ID"], team["AWS_SECRET_ACCESS_KEY"]
        # a key the store knows, whose policy denies it everything on S3
        self.outsider = self.user(admin, "outsider", "Deny")
        self.s3 = self.client("s3", self.key_id, self.secret)
        self.s3.create_bucket(Bucket=BUCKET)

    # The actions __init__ makes before moto starts checking keys: create_user,
    # create_access_key and put_user_policy, twice (the bucket is made with the team's keys).
    UNCHECKED_ACTIONS = 6

    def client(self, service: str, key_id: str, secret: str):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=key_id, aws_secret_access_key=secret)

    @staticmethod
    def user(admin, name: str, effect: str) -> dict:
        """An IAM user whose one policy says ``effect`` for everything on S3; the environment
        that gives its keys."""
        admin.create_user(UserName=name)
        key = admin.create_access_key(UserName=name)["AccessKey"]
        admin.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": effect, "Action": "s3:*", "Resource": "*"}]}))
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def keys(self, bucket: str = BUCKET) -> set[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}

    def env(self) -> dict:
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("moto")
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(S3.UNCHECKED_ACTIONS)}
    for _attempt in range(3):  # another process may take the free port before moto does
        port = free_port()
        with open(log_dir / f"moto-{port}.log", "w") as log:
            server = subprocess.Popen([BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
                                      stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while server.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        if server.poll() is None:
            break
    else:
        pytest.fail(f"moto_server did not start: {log_dir}")
    try:
        yield S3(port)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def cache_objects(repo: Path) -> set[str]:
    """The DVC cache's objects of ``repo`` as remote keys (files/md5/<ab>/<cdef...>)."""
    cache = repo / ".dvc" / "cache"
    return {str(p.relative_to(cache)) for p in (cache / "files").rglob("*") if p.is_file()}


def lock_objects(repo: Path) -> set[str]:
    """The objects of the cached outputs dvc.lock records (a folder: its listing and its
    files), as remote keys. DVC's cache holds more: the run cache keeps `cache: false` outputs
    too, which git carries and a push leaves out."""
    cached = {out for stage in yaml.safe_load((repo / DVC_FILE).read_text())["stages"].values()
              for out in stage.get("outs", []) if isinstance(out, str)}
    keys = set()
    for stage in yaml.safe_load((repo / LOCK).read_text())["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] in cached:
                key = f"files/md5/{out['md5'][:2]}/{out['md5'][2:]}"
                keys.add(key)
                if key.endswith(".dir"):
                    listing = json.loads((repo / ".dvc" / "cache" / key).read_text())
                    keys |= {f"files/md5/{f['md5'][:2]}/{f['md5'][2:]}" for f in listing}
    return keys


def workspace(repo: Path) -> dict[str, float]:
    """Every file outside .git and .dvc, with its modification time."""
    return {str(p.relative_to(repo)): p.stat().st_mtime for p in repo.rglob("*")
            if p.is_file() and p.relative_to(repo).parts[0] not in (".git", ".dvc")}


@pytest.fixture(scope="module")
def team(pushed, s3):
    """A clone of the repository that ran the pipeline, pointed at the bucket with the two
    commands of docs/dvc.md (committed: every clone uses it), its credentials in
    .dvc/config.local, the run's DVC cache (the machine where it ran), and `make push`ed:
    (scratch root, its HOME, the clone, the seconds the push took)."""
    root, home, origin = pushed
    repo = root / "team"
    run(["git", "clone", "-q", origin, repo], cwd=root)
    env = tool_env(home, repo)
    run([BIN / "dvc", "remote", "add", "-d", "team", URL], cwd=repo, env=env)
    run([BIN / "dvc", "remote", "modify", "team", "endpointurl", s3.endpoint], cwd=repo,
        env=env)
    run(["git", "commit", "-qam", "team remote"], cwd=repo, env=env)
    for key, value in (("access_key_id", s3.key_id), ("secret_access_key", s3.secret)):
        run([BIN / "dvc", "remote", "modify", "--local", "team", key, value], cwd=repo, env=env)
    run([BIN / "dvc", "cache", "dir", "--local", origin / ".dvc" / "cache"], cwd=repo, env=env)
    assert run(["git", "status", "--porcelain"], cwd=repo, env=env).stdout == "", (
        "credentials must stay out of git")

    start = time.monotonic()
    make("push", repo, env)
    seconds = time.monotonic() - start
    # The bucket holds every object of the run, under the remote's path.
    assert s3.keys() == {f"dmae/{key}" for key in lock_objects(origin)}
    return root, home, repo, seconds


def elsewhere(root: Path, source: Path, name: str) -> tuple[Path, dict]:
    """A fresh clone of ``source`` on "another machine": its own empty HOME, no credentials."""
    home, clone = root / f"{name}-home", root / name
    home.mkdir()
    run(["git", "clone", "-q", source, clone], cwd=root)
    return clone, tool_env(home, clone)


def clone_on_bucket(root: Path, source: Path, name: str, s3, url: str) -> tuple[Path, dict]:
    """``elsewhere``, with the store's credentials and its remote pointed at ``url``."""
    clone, env = elsewhere(root, source, name)
    env |= s3.env()
    run([BIN / "dvc", "remote", "modify", "--local", "team", "url", url], cwd=clone, env=env)
    return clone, env


def failed_pull(clone: Path, env: dict):
    """`make pull` that must fail and leave the clone as it was; its process."""
    before = workspace(clone)
    proc = make_pull(clone, env, check=False)
    assert proc.returncode != 0, proc.stdout
    assert_nothing_written(clone, before)
    return proc


def assert_nothing_written(clone: Path, before: dict[str, float]) -> None:
    assert workspace(clone) == before, "the failed pull changed the workspace"
    assert not (clone / ".snakemake").exists(), "the --touch step ran"
    # `dvc status --cloud` may fetch a folder's listing (.dir) to compare its files; no file.
    assert all(key.endswith(".dir") for key in cache_objects(clone)), "a file was fetched"


@pytest.mark.slow
def test_pushed_to_s3_and_pulled_on_another_machine(pushed, s3, team):
    _, _, origin = pushed
    root, _, repo, push_seconds = team
    clone, env = elsewhere(root, repo, "elsewhere")
    env |= s3.env()  # this machine's credentials, the other way DVC takes them

    start = time.monotonic()
    proc = run([BIN / "dvc", "pull"], cwd=clone, env=env)  # plain: no make, no touch step
    pull_seconds = time.monotonic() - start
    assert "No file hash info" not in proc.stdout + proc.stderr
    assert out_files(clone) == out_files(origin)
    assert planned_jobs(dry_run(clone, env)) == {}
    assert run([BIN / "dvc", "status", DVC_FILE], cwd=clone, env=env).stdout.strip() == (
        "Data and pipelines are up to date.")
    # Everything came from the bucket: this machine has no folder remote and no shared cache.
    assert not (Path(env["HOME"]) / ".cache" / "dmae-dvc-remote").exists()
    assert cache_objects(clone) == lock_objects(origin)
    print(f"S3 push {push_seconds:.1f} s, pull into a fresh clone {pull_seconds:.1f} s")


@pytest.mark.slow
def test_another_machine_pulls_nothing_from_the_default_folder_remote(pushed):
    root, _, origin = pushed
    clone, env = elsewhere(root, origin, "folder-remote-elsewhere")
    proc = failed_pull(clone, env)
    folder = Path(env["HOME"]) / ".cache" / "dmae-dvc-remote"
    assert (f"cannot reach DVC remote 'localstore' ({folder}): the folder does not exist on "
            "this machine") in proc.stderr, proc.stderr


@pytest.mark.slow
def test_an_endpoint_that_does_not_answer_is_named(pushed, s3, team):
    root, _, repo, _ = team
    clone, env = elsewhere(root, repo, "unreachable")
    env |= s3.env()
    port = free_port()  # nothing listens there
    run([BIN / "dvc", "remote", "modify", "--local", "team", "endpointurl",
         f"http://127.0.0.1:{port}"], cwd=clone, env=env)
    before = workspace(clone)
    for target, verb in (("pull", "pulled"), ("push", "pushed")):
        proc = make(target, clone, env, check=False)
        assert proc.returncode != 0
        assert (f"cannot reach DVC remote 'team' ({URL}, endpoint http://127.0.0.1:{port}): "
                f"nothing answers at 127.0.0.1:{port}") in proc.stderr, proc.stderr
        assert f"Nothing was {verb}." in proc.stderr
    assert_nothing_written(clone, before)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["environment", "local config", "nowhere"])
def test_refused_credentials_are_named(pushed, s3, team, where):
    root, _, repo, _ = team
    clone, env = elsewhere(root, repo, f"refused-{where.replace(' ', '-')}")
    refused = f"DVC remote 'team' ({URL}, endpoint {s3.endpoint}) refused the credentials"
    if where == "environment":  # a key the store does not know
        env |= {"AWS_ACCESS_KEY_ID": "AKIANOTAKEYOFTHETEAM", "AWS_SECRET_ACCESS_KEY": "x" * 40}
        said = (f"{refused} (taken from AWS_ACCESS_KEY_ID in the environment): An error "
                "occurred (InvalidAccessKeyId)")
    elif where == "local config":  # the team's key with a wrong secret
        for key, value in (("access_key_id", s3.key_id), ("secret_access_key", "x" * 40)):
            run([BIN / "dvc", "remote", "modify", "--local", "team", key, value], cwd=clone,
                env=env)
        said = (f"{refused} (taken from access_key_id in .dvc/config.local or .dvc/config): "
                "An error occurred (SignatureDoesNotMatch)")
    else:  # none at all: an empty HOME, no AWS_* variables
        said = (f"no credentials for DVC remote 'team' ({URL}, endpoint {s3.endpoint}): "
                "Unable to locate credentials")
    proc = failed_pull(clone, env)
    assert f"error: {said}" in proc.stderr, proc.stderr
    assert "Nothing was pulled." in proc.stderr


@pytest.mark.slow
def test_an_output_missing_on_the_remote_is_named_and_nothing_is_pulled(pushed, s3, team):
    _, _, origin = pushed
    root, _, repo, _ = team
    # A bucket with every object of the run but the pretrained checkpoint.
    lock = yaml.safe_load((origin / LOCK).read_text())["stages"]
    checkpoint = next(o for o in lock["pretrain-micro-dmae"]["outs"]
                      if o["path"].endswith(".safetensors"))
    lost = f"dmae/files/md5/{checkpoint['md5'][:2]}/{checkpoint['md5'][2:]}"
    s3.s3.create_bucket(Bucket="dmae-partial")
    for key in s3.keys() - {lost}:
        s3.s3.copy_object(Bucket="dmae-partial", Key=key,
                          CopySource={"Bucket": BUCKET, "Key": key})

    clone, env = clone_on_bucket(root, repo, "missing", s3, "s3://dmae-partial/dmae")
    proc = failed_pull(clone, env)
    assert (f"1 output(s) of {DVC_FILE} are neither on DVC remote 'team' "
            f"(s3://dmae-partial/dmae, endpoint {s3.endpoint}) nor in this repository's cache:"
            f"\n  {checkpoint['path']} (stage pretrain-micro-dmae)\nNothing was pulled."
            ) in proc.stderr, proc.stderr
    assert not (clone / checkpoint["path"]).exists()

    # What the remote does hold can still be pulled, as the message says.
    proc = make_pull(clone, env, stages="prepare")
    assert "1 of 6 stages as dvc.lock records them, marked done for Snakemake: prepare" in (
        proc.stdout)
    assert out_files(clone, ["prepare"]) == out_files(origin, ["prepare"])


@pytest.mark.slow
def test_a_bucket_that_does_not_exist_is_named(pushed, s3, team):
    root, _, repo, _ = team
    clone, env = clone_on_bucket(root, repo, "no-bucket", s3, "s3://no-such-bucket/dmae")
    proc = failed_pull(clone, env)
    assert (f"error: DVC remote 'team' (s3://no-such-bucket/dmae, endpoint {s3.endpoint}): "
            "the bucket does not exist") in proc.stderr, proc.stderr
    assert "Nothing was pulled." in proc.stderr


@pytest.mark.slow
def test_credentials_a_policy_denies_are_named(pushed, s3, team):
    """A key the store knows, whose policy denies reading the bucket: refused, by name."""
    root, _, repo, _ = team
    clone, env = elsewhere(root, repo, "denied")
    env |= s3.outsider
    proc = failed_pull(clone, env)
    assert (f"error: DVC remote 'team' ({URL}, endpoint {s3.endpoint}) refused the "
            "credentials (taken from AWS_ACCESS_KEY_ID in the environment)") in proc.stderr, (
        proc.stderr)
    assert "Nothing was pulled." in proc.stderr


# ------------------------------------------------------------ the messages, without a remote


@pytest.mark.parametrize(("stderr", "told"), [
    # What dvc 3.67 printed against moto's server where no live test reaches it (an endpoint
    # that takes the connection but does not speak S3; an error of no known kind). A missing
    # bucket, refused and denied credentials and none at all are the live tests above.
    ("ERROR: unexpected error - Could not connect to the endpoint URL: \"http://127.0.0.1:5999/"
     "b?list-type=2\"\n\nHaving any troubles? Hit us up at https://dvc.org/support\n",
     "error: cannot reach DVC remote 'team' (s3://b/dmae, endpoint http://127.0.0.1:5999): "
     "Could not connect to the endpoint URL"),
    ("ERROR: unexpected error - Unable to locate credentials\n",
     "error: no credentials for DVC remote 'team'"),
    ("ERROR: something else\n", "error: dvc failed with DVC remote 'team' (s3://b/dmae, "
     "endpoint http://127.0.0.1:5999):\nsomething else\nNothing was pulled."),
])
def test_dvc_errors_are_told_with_the_remote_and_what_went_wrong(stderr, told, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    remote = dvcremote.Remote("team", "s3://b/dmae", {"url": "s3://b/dmae",
                                                      "endpointurl": "http://127.0.0.1:5999"},
                              Path("."))
    assert told in f"error: {dvcremote._failure(remote, stderr, 'pulled')}"


def test_a_folder_remote_missing_here_cannot_be_pulled_from(tmp_path):
    for url in (str(tmp_path / "absent"), "../absent"):  # relative: to .dvc/, as DVC reads it
        remote = dvcremote.Remote("localstore", url, {"url": url}, tmp_path)
        assert remote.folder == tmp_path / "absent"
        assert "the folder does not exist on this machine" in dvcremote._unreachable(remote, True)
        assert dvcremote._unreachable(remote, pulling=False) is None  # a push creates it
    (tmp_path / "absent").mkdir()
    assert dvcremote._unreachable(remote, pulling=True) is None
