"""The one-node SLURM cluster of tests/slurm/cluster.sh: it runs jobs, and reports finished
ones the way snakemake-executor-plugin-slurm reads them (squeue, since it has no slurmdbd)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm


def write_job(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/bash\n{body}\n")
    return path


def job_field(cluster, jobid: str, key: str) -> str:
    out = cluster.run("scontrol", "show", "job", jobid).stdout
    return re.search(rf"\b{key}=(\S+)", out)[1]


def loopback_listeners(port: int) -> set[str]:
    """Local addresses of the sockets listening on TCP ``port`` (IPv4 and IPv6)."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                addresses.add(address)
    return addresses


def test_one_idle_node_on_loopback(slurm_cluster):
    out = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N|%P|%T|%c").stdout.split()
    assert len(out) == 1
    node, partition, state, cpus = out[0].split("|")
    assert partition == "debug*" and state in ("idle", "mixed", "allocated")
    assert int(cpus) >= 1
    for key in ("SlurmctldPort", "SlurmdPort"):
        # 0100007F is 127.0.0.1 as /proc/net/tcp writes it
        assert loopback_listeners(int(slurm_cluster.config(key))) == {"0100007F"}, key


# Runs the session's first jobs: slurmctld schedules nothing in its first ~3 s, and polling
# absorbs that, where sbatch --wait (polls after 2 s, then every 10 s) would wait 10 s.
def test_the_executor_plugin_reads_job_states_with_squeue(slurm_cluster, tmp_path, monkeypatch):
    """The plugin's own status query (as it runs with status_command squeue), on jobs named
    with a run id as it names them; sacct fails here, so workflows must choose squeue."""
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
    monkeypatch.setenv("PATH", slurm_cluster.env["PATH"])
    from snakemake_executor_plugin_slurm.job_status_query import (
        get_min_job_age,
        query_job_status,
        query_job_status_sacct,
        query_job_status_squeue,
        should_recommend_squeue_status_command,
    )

    # The plugin keeps squeue only while MinJobAge >= 3 * init_seconds_before_status_checks.
    assert get_min_job_age() >= 3 * 40
    assert should_recommend_squeue_status_command()

    # Submitted and polled as the plugin does: jobs named with the run id, no --wait.
    run_uuid = str(uuid.uuid4())
    ids = {}
    for name, body in (("ok", "true"), ("fail", "exit 1")):
        script = write_job(tmp_path / f"{name}.sh", body)
        ids[name] = slurm_cluster.run("sbatch", "--parsable", "--job-name", run_uuid, "-o",
                                      str(tmp_path / "%j.log"), str(script)).stdout.strip()
    log = logging.getLogger(__name__)
    query = query_job_status_squeue(run_uuid)
    deadline = time.monotonic() + 60
    while True:
        states, _ = asyncio.run(query_job_status(query, log))
        if set(states.values()) <= {"COMPLETED", "FAILED"} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert states == {ids["ok"]: "COMPLETED", ids["fail"]: "FAILED"}
    # Without slurmdbd, sacct exits 1 ("accounting storage is disabled"): the plugin's
    # query reports a failed attempt, never a state.
    assert asyncio.run(query_job_status(query_job_status_sacct(run_uuid), log)) == (None, None)


def test_sbatch_wait_runs_a_job_reported_completed(slurm_cluster, tmp_path):
    script = write_job(tmp_path / "ok.sh", f"echo done > {tmp_path}/out.txt")
    proc = slurm_cluster.run("sbatch", "--wait", "--parsable", "-o", str(tmp_path / "%j.log"),
                             str(script))
    jobid = proc.stdout.strip().split(";")[0]
    assert (tmp_path / "out.txt").read_text() == "done\n"
    state = slurm_cluster.run("squeue", "--states=all", "-h", "-j", jobid, "-o", "%T").stdout
    assert state.strip() == "COMPLETED"
    assert job_field(slurm_cluster, jobid, "JobState") == "COMPLETED"
    assert job_field(slurm_cluster, jobid, "ExitCode") == "0:0"


def test_a_job_that_exits_1_is_reported_failed(slurm_cluster, tmp_path):
    script = write_job(tmp_path / "fail.sh", "exit 1")
    proc = slurm_cluster.run("sbatch", "--wait", "--parsable", "-o", str(tmp_path / "%j.log"),
                             str(script), check=False)
    assert proc.returncode == 1, proc.stderr  # sbatch --wait passes the job's exit code on
    jobid = proc.stdout.strip().split(";")[0]
    assert job_field(slurm_cluster, jobid, "JobState") == "FAILED"
    assert job_field(slurm_cluster, jobid, "ExitCode") == "1:0"


def test_two_jobs_of_two_cpus_run_side_by_side(slurm_cluster, tmp_path):
    """The node declares at least 8 CPUs, more than a small host has (cluster.sh), so that a
    workflow's independent jobs (2 threads each in the tests) overlap: each of these two
    jobs finishes only once it has seen the other one start."""
    cpus = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%c").stdout
    assert int(cpus) >= 8
    ids = []
    for name, other in (("a", "b"), ("b", "a")):
        script = write_job(tmp_path / f"{name}.sh", f"touch {tmp_path}/{name}.started\n"
                           f"for i in $(seq 600); do [ -e {tmp_path}/{other}.started ] && exit 0; "
                           "sleep 0.1; done\nexit 1")
        ids.append(slurm_cluster.run("sbatch", "--parsable", "--cpus-per-task", "2", "-o",
                                     str(tmp_path / "%j.log"), str(script)).stdout.strip())
    deadline = time.monotonic() + 90
    while True:
        states = [job_field(slurm_cluster, jobid, "JobState") for jobid in ids]
        if not {"PENDING", "RUNNING", "COMPLETING"} & set(states) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert states == ["COMPLETED", "COMPLETED"]
