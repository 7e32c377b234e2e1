"""Projected wall time and peak memory of ``snakemake --cores 2 --configfile <config>``.

The target: the embedded default (``make reproduce``) within 60 minutes on a 2-core, 24 GiB
machine with no GPU, peak memory under 4 GiB. This script measures what every job
of the workflow costs on THIS machine with short timed runs of the real library calls on the
real prepared data, then projects the whole run:

- per pretraining epoch: ``dmae.train.train`` on the config's model and recipe, two short
  epochs over a slice of the prepared training split (the second, warm one is timed), and
  the validation pass on a slice of the validation split;
- per fine-tuning epoch, with and without consistency regularization: the same, for the
  config's methods (the validation pass includes the ``eval_noise_samples`` noisy votes);
- per certified image: ``dmae.certify.certify_dataset`` on test images with the config's n0,
  n, alpha and batch size;
- per job: the start-up of a ``dmae`` process (Python, torch, timm), the data preparation
  (into a temporary folder) and the Snakemake DAG build (a dry run).

It runs those probes in worker processes three ways: one worker with 1 thread, two workers
with 1 thread each AT THE SAME TIME (what ``resources: {<stage>: {threads: 1}}`` gives with
``--cores 2``), and one worker with 2 threads (``threads: 2``, jobs one at a time). Each
projection schedules the workflow's jobs (pretraining, reconstructions, fine-tuning per
method x sigma, certification shards, merges, report, with their dependencies) on the
available slots with two greedy orders and reports the slower one. Peak memory is the
Snakemake process plus, per running job, the worker's peak RSS and the pages of the prepared
arrays a full epoch touches.

Timings on a machine shared with other work are inflated: the script prints the load average
and, per probe, CPU time beside wall time (a single-threaded probe whose CPU time is well
below its wall time was waiting for a core). Take the best of a few runs. Example::

    python benchmarks/reproduce_budget.py --config config/default.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STARTUP_IMPORTS = "import torch, timm, dmae.cli, dmae.train, dmae.certify, dmae.data"
REPORT_IMPORTS = STARTUP_IMPORTS + ", dmae.report, matplotlib.pyplot, pandas"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config" / "default.yaml"))
    ap.add_argument("--cores", type=int, default=2, help="snakemake --cores of the projection")
    ap.add_argument("--steps", type=int, default=25,
                    help="optimizer steps per timed epoch of each training probe")
    ap.add_argument("--val-images", type=int, default=400,
                    help="validation images per timed evaluation")
    ap.add_argument("--cert-images", type=int, default=4, help="test images certified per probe")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run every worker configuration this many times and keep the fastest")
    ap.add_argument("--modes", default="solo1,pair1,solo2",
                    help="worker configurations to measure: solo1 (one 1-thread worker), pair1 "
                         "(two 1-thread workers at once), solo2 (one worker, --cores threads)")
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    # internal: the worker process
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Worker: the probes, run in a fresh process with a fixed number of threads
# ---------------------------------------------------------------------------------------------


def _train_probe(cfg: dict, kind: str, model_name: str, name: str, sigma: float | None,
                 steps: int, val_images: int, out: Path) -> dict:
    """Two short epochs of the real engine on slices of the prepared train/val splits."""
    from torch.utils.data import Subset

    from dmae import config as cfglib
    from dmae import layout
    from dmae.data import read_manifest
    from dmae.models import build_downstream, build_pretrain_model
    from dmae.train import TrainHParams, read_metrics, train
    from dmae.train.stage import splits

    if kind == "pretrain":
        model_cfg, hp = cfglib.pretrain_settings(cfg, model_name, name)
        model = build_pretrain_model(model_cfg)
    else:
        model_cfg, hp = cfglib.finetune_settings(cfg, model_name, name, sigma)
        classes = read_manifest(layout.prepared_dir(cfg))["num_classes"]
        model = build_downstream(model_cfg, classes, hp["task"])
    train_set, val_set = splits(cfg, model_cfg["img_size"], hp)
    batch = hp["batch_size"] * hp.get("accum_iter", 1)
    full = {"epochs": hp["epochs"], "eval_every": hp.get("eval_every", 1),
            "max_steps": hp.get("max_steps"),
            "steps_per_epoch": len(train_set) // batch, "batch": batch,
            "train_images": len(train_set), "val_images": len(val_set)}
    # epoch 1 warms up (allocator, oneDNN primitives); epoch 2 is timed and ends with the
    # validation pass, as a real run's epochs do
    probe_hp = {**hp, "epochs": 2, "warmup_epochs": 1, "eval_every": 2, "max_steps": None}
    n_val = min(val_images, len(val_set))
    wall, cpu = time.perf_counter(), time.process_time()
    train(model, Subset(train_set, range(steps * batch)), Subset(val_set, range(n_val)),
          TrainHParams.from_dict(probe_hp), out, device="cpu", progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows = read_metrics(out / layout.TIMING_CSV)
    warm = rows[-1]
    ips = float(warm["images_per_s"])
    train_s = steps * batch / ips
    eval_s = max(0.0, float(warm["epoch_time_s"]) - train_s)
    epochs_s = sum(float(r["epoch_time_s"]) for r in rows)
    return {**full, "kind": kind, "name": name, "sigma": sigma, "images_per_s": ips,
            "eval_s_per_val_image": eval_s / n_val,
            # model/optimizer/loader set-up and checkpoint writing, per epoch (conservative)
            "overhead_s_per_epoch": max(0.0, wall - epochs_s) / 2,
            "probe_wall_s": wall, "probe_cpu_s": cpu}


def _certify_probe(cfg: dict, model_name: str, images: int, out: Path) -> dict:
    from dmae import config as cfglib
    from dmae import layout
    from dmae.certify import certify_dataset
    from dmae.certify.stage import certify_indices
    from dmae.data import get_dataset, load_split, read_manifest
    from dmae.models import build_classifier

    method = next(iter(cfg["methods"]))
    sigma = float(sorted(cfg["sigmas"])[len(cfg["sigmas"]) // 2])
    model_cfg, _ = cfglib.finetune_settings(cfg, model_name, method, sigma)
    classes = read_manifest(layout.prepared_dir(cfg))["num_classes"]
    model = build_classifier(model_cfg, classes)
    test = load_split(layout.prepared_dir(cfg), "test",
                      get_dataset(cfg["dataset"]["name"]).transform(False, model_cfg["img_size"]))
    c = cfg["certify"]
    stride_indices = certify_indices({**cfg, "certify": {**c, "max_images": None}}, len(test))
    kwargs = {"sigma": sigma, "n0": c["n0"], "n": c["n"], "alpha": c["alpha"],
              "batch_size": c["batch_size"], "seed": c["seed"], "num_classes": classes,
              "device": "cpu", "progress": False, "method": c["method"]}
    certify_dataset(model, test, stride_indices[:1], out_tsv=out / "warm.tsv", **kwargs)
    wall, cpu = time.perf_counter(), time.process_time()
    certify_dataset(model, test, stride_indices[1:1 + images], out_tsv=out / "timed.tsv",
                    **kwargs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"kind": "certify", "s_per_image": wall / images, "cpu_s_per_image": cpu / images,
            "forwards_per_image": c["n0"] + c["n"], "images_total": len(stride_indices),
            "shards": c["shards"], "probe_wall_s": wall, "probe_cpu_s": cpu}


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from dmae import config as cfglib

    cfg = cfglib.load(args.config)
    tmp = args.tmp
    results: dict = {"threads": torch.get_num_threads(), "models": {}}
    for model_name in cfg["models"]:
        probes = []
        used = sorted({s["pretraining"] for s in cfg["methods"].values()
                       if s["pretraining"] is not None})
        for pre in used:
            probes.append(_train_probe(cfg, "pretrain", model_name, pre, None, args.steps,
                                       args.val_images, tmp / f"pre_{model_name}_{pre}"))
        # one probe per kind of fine-tuning step the config's methods use
        sigma = float(sorted(cfg["sigmas"])[len(cfg["sigmas"]) // 2])
        kinds: dict[tuple, str] = {}
        for method in cfg["methods"]:
            kinds.setdefault(_step_kind(cfg, method), method)
        for method in kinds.values():
            probes.append(_train_probe(cfg, "finetune", model_name, method, sigma, args.steps,
                                       args.val_images, tmp / f"ft_{model_name}_{method}"))
        probes.append(_certify_probe(cfg, model_name, args.cert_images,
                                     tmp / f"cert_{model_name}"))
        results["models"][model_name] = probes
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(results), flush=True)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _run_workers(args: argparse.Namespace, threads: int, copies: int) -> list[dict]:
    """Start ``copies`` workers at once, each with ``threads`` threads; their results."""
    procs = []
    tmps = []
    for _ in range(copies):
        tmp = Path(tempfile.mkdtemp(prefix="dmae_budget_"))
        tmps.append(tmp)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, __file__, "--worker", "--config", args.config, "--threads",
               str(threads), "--tmp", str(tmp), "--steps", str(args.steps),
               "--val-images", str(args.val_images), "--cert-images", str(args.cert_images)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True,
                                      cwd=REPO))
    out = []
    try:
        for proc in procs:
            stdout, _ = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"worker failed (exit {proc.returncode})")
            line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
            out.append(json.loads(line.removeprefix("RESULT ")))
    finally:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _merge(runs: list[dict]) -> dict:
    """Several workers' results as one: the mean of each figure (they ran the same probes)."""
    base = json.loads(json.dumps(runs[0]))
    for model, probes in base["models"].items():
        for i, probe in enumerate(probes):
            for key, value in probe.items():
                if isinstance(value, float):
                    probe[key] = sum(r["models"][model][i][key] for r in runs) / len(runs)
    base["max_rss_mb"] = max(r["max_rss_mb"] for r in runs)
    return base


def _fastest(candidates: list[dict]) -> dict:
    def total(r: dict) -> float:
        return sum(p["probe_wall_s"] for ps in r["models"].values() for p in ps)
    return min(candidates, key=total)


def _time_command(cmd: list[str], repeats: int = 3, env: dict | None = None
                  ) -> tuple[float, float, float]:
    """Best wall seconds, best CPU seconds and peak RSS (MiB, polled) of a command."""
    import psutil

    best, best_cpu, peak = float("inf"), float("inf"), 0.0
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = psutil.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, proc.memory_info().rss / 2**20)
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode})")
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        best, best_cpu = min(best, wall), min(best_cpu, cpu)
    return best, best_cpu, peak


def _prepare_seconds(cfg: dict) -> float | None:
    """Wall time of preparing the dataset into a temporary folder (None if it cannot)."""
    from dmae.data import prepare_dataset

    ds = cfg["dataset"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            prepare_dataset(ds["name"], Path(tmp) / "prepared", Path(tmp) / "raw",
                            val_size=ds["val_size"], split_seed=ds.get("split_seed", 0),
                            source_dir=Path(ds["source_dir"]) if ds.get("source_dir") else None,
                            download_url=ds.get("download_url"),
                            imagenet_dir=Path(ds["imagenet_dir"]) if ds.get("imagenet_dir")
                            else None, progress=False)
        except Exception as err:  # noqa: BLE001 - a projection without it is still useful
            print(f"  (data preparation not timed: {err})")
            return None
        return time.perf_counter() - t0


def _snakemake_dry_run(cfg: dict) -> tuple[float, float] | None:
    """DAG build time and RSS of Snakemake for this config (results in a temporary folder)."""
    import yaml

    exe = Path(sys.executable).parent / "snakemake"
    if not exe.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        conf = {**cfg, "paths": {**cfg["paths"], "results": tmp,
                                 "data": str((REPO / cfg["paths"]["data"]).resolve())}}
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(conf))
        env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        wall, _, rss = _time_command([str(exe), "--dry-run", "--nolock", "--cores", "2",
                                      "--quiet", "--configfile", str(path)], repeats=1, env=env)
        return wall, rss


@dataclass(order=True)
class Job:
    order: int
    name: str = field(compare=False)
    seconds: float = field(compare=False)
    deps: list[str] = field(default_factory=list, compare=False)


def build_jobs(cfg: dict, measured: dict, startup: float, report_startup: float,
               prepare_s: float, dag_s: float, cpu: bool = False) -> list[Job]:
    """Every job of the workflow for ``cfg`` (``dmae.pipeline.jobs``) with its projected
    duration and the jobs whose outputs it reads.

    ``cpu``: durations scaled to the probes' CPU time (single-threaded probes only)."""
    from dmae import config as cfglib
    from dmae import pipeline

    def seconds(rule: str, job: dict) -> float:
        probes = measured["models"].get(job.get("model"), [])
        if rule == "prepare_data":
            return dag_s + startup + prepare_s
        if rule == "pretrain":
            probe = next(p for p in probes if p["kind"] == "pretrain"
                         and p["name"] == job["pretraining"])
            return startup + _train_seconds(probe, cpu)
        if rule == "finetune":
            # the fine-tuning probe of this kind of step (consistency or not, probe or not)
            probe = next(p for p in probes if p["kind"] == "finetune"
                         and _step_kind(cfg, p["name"]) == _step_kind(cfg, job["method"]))
            _, hp = cfglib.finetune_settings(cfg, job["model"], job["method"],
                                             float(job["sigma"]))
            probe = dict(probe, epochs=hp["epochs"], eval_every=hp.get("eval_every", 1))
            return startup + _train_seconds(probe, cpu)
        if rule == "certify_shard":
            cert = next(p for p in probes if p["kind"] == "certify")
            per_shard = -(-cert["images_total"] // cfg["certify"]["shards"])
            return startup + per_shard * cert["s_per_image"] * (_cpu_ratio(cert) if cpu else 1)
        if rule == "merge_certify":
            return startup
        return report_startup + (1.0 if rule == "reconstructions" else 2.0)

    jobs: list[Job] = []
    made_by: dict[Path, str] = {}
    for rule, job in pipeline.jobs(cfg):
        name = " ".join([rule, *job.values()])
        for path in pipeline.files(pipeline.outputs(cfg, rule, **job)):
            made_by[path] = name
        reads = pipeline.files(pipeline.inputs(cfg, rule, **job))
        deps = list(dict.fromkeys(made_by[path] for path in reads if path in made_by))
        jobs.append(Job(len(jobs), name, seconds(rule, job), deps))
    return jobs


def _step_kind(cfg: dict, method: str) -> tuple[bool, bool]:
    spec = cfg["methods"][method]
    return bool(spec["consistency"]), bool(spec.get("linprobe"))


def _train_seconds(p: dict, cpu: bool = False) -> float:
    """Projected seconds of a whole training run from its probe (``cpu``: scaled to the
    probe's CPU time, i.e. what the same probe would take without competing processes)."""
    steps = p["epochs"] * p["steps_per_epoch"]
    if p.get("max_steps"):
        steps = min(steps, p["max_steps"])
    epochs = -(-steps // p["steps_per_epoch"])
    evals = sum(1 for e in range(1, epochs + 1) if e % p["eval_every"] == 0 or e == epochs)
    train = steps * p["batch"] / p["images_per_s"]
    seconds = (train + evals * p["val_images"] * p["eval_s_per_val_image"]
               + epochs * p["overhead_s_per_epoch"])
    return seconds * _cpu_ratio(p) if cpu else seconds


def _cpu_ratio(p: dict) -> float:
    return min(1.0, p["probe_cpu_s"] / p["probe_wall_s"])


def simulate(jobs: list[Job], slots: int, policy: str) -> float:
    """Makespan of greedy list scheduling on ``slots`` identical slots."""
    done: set[str] = set()
    pending = {j.name: j for j in jobs}
    running: list[tuple[float, str]] = []
    now = 0.0
    while pending or running:
        ready = [j for j in pending.values() if all(d in done for d in j.deps)]
        ready.sort(key=(lambda j: -j.seconds) if policy == "longest" else (lambda j: j.order))
        while ready and len(running) < slots:
            job = ready.pop(0)
            del pending[job.name]
            heapq.heappush(running, (now + job.seconds, job.name))
        if not running:
            raise RuntimeError(f"unsatisfiable dependencies: {sorted(pending)}")
        now, name = heapq.heappop(running)
        done.add(name)
    return now


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:5.1f} min"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    from dmae import config as cfglib
    from dmae import layout

    cfg = cfglib.load(args.config)
    if not layout.manifest(cfg).is_file():
        print(f"{layout.prepared_dir(cfg)}: not prepared; run `dmae prepare --config "
              f"{args.config}` first", file=sys.stderr)
        return 2
    print(f"config {args.config}; {os.cpu_count()} CPUs; load average before "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    startup, startup_cpu, rss_startup = _time_command([sys.executable, "-c", STARTUP_IMPORTS])
    report_startup, report_cpu, _ = _time_command([sys.executable, "-c", REPORT_IMPORTS],
                                                  repeats=2)
    prepare_s = _prepare_seconds(cfg)
    dry = _snakemake_dry_run(cfg)
    dag_s, snakemake_rss = dry if dry else (10.0, 250.0)
    prep = f"{prepare_s:.1f} s" if prepare_s is not None else "not timed (10 s assumed)"
    print(f"job start-up (python + torch + dmae imports) {startup:.1f} s (CPU "
          f"{startup_cpu:.1f} s), report start-up {report_startup:.1f} s (CPU {report_cpu:.1f} s),"
          f" data preparation {prep}, "
          f"snakemake DAG build {dag_s:.1f} s ({snakemake_rss:.0f} MiB)")
    prepare_s = 10.0 if prepare_s is None else prepare_s

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    measured: dict[str, dict] = {}
    for mode in modes:
        threads, copies = {"solo1": (1, 1), "pair1": (1, 2), "solo2": (args.cores, 1)}[mode]
        candidates = [_merge(_run_workers(args, threads, copies)) for _ in range(args.repeats)]
        measured[mode] = _fastest(candidates)
        print(f"measured {mode} ({copies} worker(s) x {threads} thread(s)); load average now "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    # ---- per-stage table
    print(f"\n{'stage cost (wall)':44s}" + "".join(f"{m:>12s}" for m in modes))
    first = measured[modes[0]]
    for model, probes in first["models"].items():
        for i, p in enumerate(probes):
            if p["kind"] == "certify":
                label = f"{model} certify, s per image (n0+n={p['forwards_per_image']})"
                vals = [measured[m]["models"][model][i]["s_per_image"] for m in modes]
                print(f"{label:44s}" + "".join(f"{v:12.3f}" for v in vals))
                continue
            label = f"{model} {p['kind']} {p['name']}, s per epoch"
            vals = [_train_seconds({**measured[m]["models"][model][i], "epochs": 1,
                                    "eval_every": 1}) for m in modes]
            print(f"{label:44s}" + "".join(f"{v:12.1f}" for v in vals))
            vals = [measured[m]["models"][model][i]["images_per_s"] for m in modes]
            print(f"{'  train images/s':44s}" + "".join(f"{v:12.0f}" for v in vals))
            vals = [measured[m]["models"][model][i]["eval_s_per_val_image"]
                    * measured[m]["models"][model][i]["val_images"] for m in modes]
            print(f"{'  validation pass, s':44s}" + "".join(f"{v:12.1f}" for v in vals))
            vals = [measured[m]["models"][model][i]["probe_cpu_s"]
                    / measured[m]["models"][model][i]["probe_wall_s"] for m in modes]
            print(f"{'  probe CPU/wall (threads busy)':44s}" + "".join(f"{v:12.2f}"
                                                                       for v in vals))

    # ---- projections
    print(f"\nprojected `snakemake --cores {args.cores} --configfile {args.config}`:")
    scenarios = []
    one = "pair1" if "pair1" in measured else "solo1" if "solo1" in measured else None
    if one:
        timing = "" if one == "pair1" else " (timed alone)"
        scenarios.append((f"threads 1 per job, 2 jobs at a time{timing}", one, args.cores, False))
        scenarios.append(("  the same, CPU time (an idle machine)", one, args.cores, True))
    if "solo2" in measured:
        scenarios.append((f"threads {args.cores} per job, one job at a time", "solo2", 1, False))
    best = None
    for label, mode, slots, cpu in scenarios:
        jobs = build_jobs(cfg, measured[mode], startup_cpu if cpu else startup,
                          report_cpu if cpu else report_startup, prepare_s, dag_s, cpu)
        total = sum(j.seconds for j in jobs)
        span = max(simulate(jobs, slots, "dag"), simulate(jobs, slots, "longest"))
        job_rss = measured[mode]["max_rss_mb"] + _prepared_mb(cfg)
        peak = snakemake_rss + slots * job_rss
        print(f"  {label:44s} {_minutes(span)}  (sum of job times {_minutes(total)}; "
              f"peak RSS ~{peak / 1024:.2f} GiB = snakemake {snakemake_rss:.0f} MiB + "
              f"{slots} x {job_rss:.0f} MiB)")
        by_stage: dict[str, float] = {}
        for j in jobs:
            stage = j.name.split()[0]
            by_stage[stage] = by_stage.get(stage, 0.0) + j.seconds
        print("      job time by stage: " + ", ".join(f"{k} {_minutes(v).strip()}"
                                                       for k, v in by_stage.items()))
        if not cpu and (best is None or span < best[1]):
            best = (label, span)
    if best:
        print(f"fastest as measured: {best[0].strip()} ({_minutes(best[1]).strip()}); "
              "budget 60 min")
    if args.json:
        args.json.write_text(json.dumps({"measured": measured, "startup_s": startup,
                                         "report_startup_s": report_startup,
                                         "prepare_s": prepare_s, "dag_s": dag_s,
                                         "snakemake_rss_mb": snakemake_rss,
                                         "startup_cpu_s": startup_cpu,
                                         "startup_rss_mb": rss_startup}, indent=1))
    return 0


def _prepared_mb(cfg: dict) -> float:
    """Size of the prepared arrays (memory-mapped: a full epoch pulls them into RSS)."""
    from dmae import layout

    folder = layout.prepared_dir(cfg)
    return sum(f.stat().st_size for f in folder.glob("*.npy")) / 2**20


if __name__ == "__main__":
    sys.exit(main())
