"""kdpc under torchrun: real 2-process gloo runs on CPU for `kdpc record` and `kdpc distill`.

Each torchrun launch costs a few seconds of start-up (two Python processes importing torch on two shared cores), so
the single-process references run in this process and the 2-process runs are kept to a handful.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import zarr

from kdpc.checkpoint import load_checkpoint
from kdpc.distill.trainer import DistillConfig, distill
from kdpc.recorder import RecordConfig, record
from kdpc.training.train import TrainConfig, train

pytestmark = pytest.mark.slow

TINY = {"samples_per_class": 4, "num_raw_points": 64}  # 18 classes x 4 = 72 samples, 64 raw points
VIEWS, CHUNK = 3, 16  # 216 records in 14 blocks: 7 per rank
SLOW_KILL = 0.4  # seconds each block takes in the killed run, so that the test can kill it part-way


def quiet(*_args, **_kwargs):
    pass


def torchrun(*args: str, cwd: Path, nproc: int = 2, launcher: tuple[str, ...] = ("-m", "kdpc"),
             extra: tuple[str, ...] = (), env: dict | None = None, popen: bool = False, timeout: float = 120):
    """``torchrun --standalone --nproc-per-node N [extra] -m kdpc ARGS`` (``launcher`` replaces ``-m kdpc``)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *extra,
           *launcher, *args]
    full_env = {**os.environ, "KDPC_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        full_env.pop(key, None)
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def ok(proc) -> str:
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("torchrun")


@pytest.fixture(scope="module")
def teacher(work) -> Path:
    """`kdpc train --model pointnet-tiny --dataset-opt samples_per_class=4 --dataset-opt num_raw_points=64
    --num-points 32 --epochs 1 --batch-size 8`, in this process."""
    out = work / "teacher.pt"
    train(TrainConfig(model="pointnet-tiny", dataset_cfg=dict(TINY), num_points=32, epochs=1, batch_size=8,
                      device="cpu", out=str(out)), log=quiet)
    return out


def record_args(teacher: Path, out: Path, *more: str) -> list[str]:
    return ["record", "--teacher", str(teacher), "--views", str(VIEWS), "--chunk-records", str(CHUNK),
            "--batch-size", "8", "--device", "cpu", "--out", str(out), *more]


def record_here(teacher: Path, out: Path) -> Path:
    record(RecordConfig(teacher=str(teacher), views=VIEWS, chunk_records=CHUNK, batch_size=8, device="cpu",
                        out=str(out)), log=quiet, show_progress=False)
    return out


@pytest.fixture(scope="module")
def reference_store(teacher, work) -> Path:
    """The single-process store every 2-process store must equal."""
    return record_here(teacher, work / "one.zarr")


# ------------------------------------------------------------------------------------------------ comparing
def store_contents(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Every array and the header (minus what identifies one recording: `created`, `generation` and the checksum
    over them) of a zarr or HDF5 store."""
    arrays: dict[str, np.ndarray] = {}
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: arrays.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None)
            header = json.loads(f.attrs["kdpc"])
            complete = bool(f.attrs["complete"])
    else:
        group = zarr.open_group(str(path), mode="r")

        def visit(g, prefix=""):
            for name, arr in g.arrays():
                arrays[prefix + name] = arr[...]
            for name, sub in g.groups():
                visit(sub, prefix + name + "/")

        visit(group)
        header = dict(group.attrs["kdpc"])
        complete = bool(group.attrs["complete"])
    for key in ("created", "generation", "checksum"):
        header.pop(key)
    return arrays, {"header": header, "complete": complete}


def assert_same_store(a: Path, b: Path) -> None:
    arrays_a, meta_a = store_contents(a)
    arrays_b, meta_b = store_contents(b)
    assert meta_a == meta_b and meta_a["complete"]
    assert sorted(arrays_a) == sorted(arrays_b) and "output/q" in arrays_a
    for name in arrays_a:
        assert arrays_a[name].dtype == arrays_b[name].dtype, name
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


# ------------------------------------------------------------------------------------------------- record
def test_record_two_ranks_equals_one_and_rank0_errors_reach_every_rank(teacher, reference_store, work):
    out = work / "two.zarr"
    log = ok(torchrun(*record_args(teacher, out), cwd=work))
    assert log.count("2 processes share 14 blocks") == 1  # logs on rank 0 only
    assert_same_store(reference_store, out)

    # rank 0 fails to create (the store exists): every rank exits with the same one line
    again = torchrun(*record_args(teacher, out), cwd=work, extra=("--monitor-interval", "1"))
    assert again.returncode != 0
    errors = [line for line in again.stderr.splitlines() if line.startswith("kdpc: error:")]
    assert len(errors) == 2 and len(set(errors)) == 1 and "--resume" in errors[0], again.stderr
    assert "kdpc/" not in again.stderr  # no traceback from kdpc (torchrun prints its own summary)


KILLABLE = """
import os, sys, time
from pathlib import Path
import kdpc.recorder.run as run

Path(sys.argv[1], f"pid.{os.environ['RANK']}").write_text(str(os.getpid()))
columns = run._block_columns


def slow_block_columns(*args, **kwargs):
    time.sleep(float(os.environ["SLOW_BLOCK"]))
    return columns(*args, **kwargs)


run._block_columns = slow_block_columns
from kdpc.cli import main

main(sys.argv[2:])
"""


def test_record_killed_rank_then_resume_under_torchrun(teacher, reference_store, work):
    out = work / "killed.zarr"
    script = work / "killable.py"
    script.write_text(KILLABLE)
    proc = torchrun(str(work), *record_args(teacher, out), cwd=work, launcher=(str(script),),
                    env={"SLOW_BLOCK": str(SLOW_KILL)}, popen=True)
    try:
        deadline = time.monotonic() + 90
        done = 0
        while done < 3:  # let a few blocks land, then kill -9 rank 1 mid-run
            assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "no block was written in time"
            time.sleep(0.05)
            if (out / "zarr.json").exists() and (work / "pid.1").exists():
                try:
                    done = int(np.asarray(zarr.open_group(str(out), mode="r")["blocks_done"][:]).sum())
                except Exception:  # noqa: BLE001 - metadata still being written
                    done = 0
        os.kill(int((work / "pid.1").read_text()), signal.SIGKILL)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, output  # torchrun tore the job down
    group = zarr.open_group(str(out), mode="r")
    flags = np.asarray(group["blocks_done"][:])
    assert not group.attrs["complete"] and 3 <= flags.sum() < flags.size, flags

    log = ok(torchrun(*record_args(teacher, out, "--resume"), cwd=work))
    assert "resuming:" in log
    assert_same_store(reference_store, out)


def test_record_h5_two_ranks_with_the_kdpc_script(teacher, work):
    """HDF5 works under torchrun: every block is its own part file written by one rank, and rank 0 alone assembles
    OUT.h5 after the barrier. Launched with `torchrun --no-python kdpc ...`."""
    reference = record_here(teacher, work / "one.h5")
    out = work / "two.h5"
    script = Path(sys.executable).with_name("kdpc")
    launcher = ("--no-python", str(script)) if script.is_file() else ("-m", "kdpc")
    ok(torchrun(*record_args(teacher, out), cwd=work, launcher=launcher))
    assert not Path(str(out) + ".parts").exists()
    assert_same_store(reference, out)


# ------------------------------------------------------------------------------------------------ distill
def test_distill_two_ranks_matches_one_process(reference_store, work):
    """Same global batch (16 = 2 x 8): the ranks' k-th batches together are the single process's k-th batch, the
    BatchNorm statistics span both ranks (CPU SyncBatchNorm), dropout is off and point-level randomness is keyed by
    (seed, epoch, record), so both runs take the same steps up to float rounding."""
    # T = 4 and NWSD on (not the defaults): the past-prediction bank is gathered over the ranks, and at T = 4 the
    # gradients stay far enough above float rounding that AdamW, which normalises them, does not amplify the
    # ranks' different summation order into lr-sized steps within two epochs (at T = 2 it does, for a few weights)
    # (KL here; DIST's batch-wide term is checked on its own below)
    common = dict(records=str(reference_store), student="pointnet-tiny", student_cfg={"dropout": 0.0}, epochs=2,
                  batch_size=16, nwsd_source="past", nwsd_weight=-0.2, temperature=4.0, kd_objective="kl",
                  device="cpu")
    one = work / "d1"
    distill(DistillConfig(**common, out=str(one)), log=quiet)
    two = work / "d2"
    log = ok(torchrun("distill", "--records", str(reference_store), "--student", "pointnet-tiny", "--student-opt",
                      "dropout=0", "--epochs", "2", "--batch-size", "16", "--nwsd-source", "past", "--nwsd-weight", "-0.2",
                      "--temperature", "4", "--kd-objective", "kl", "--device", "cpu",
                      "--out", str(two), cwd=work))
    assert log.count("epoch 2/2") == 1  # rank 0 logs

    # loss terms are averaged over the ranks: they equal the single process's global-batch means
    m1 = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert len(m1) == len(m2) == 2
    for a, b in zip(m1, m2):
        for key in ("loss/ce", "loss/kd", "loss/total", "val/oa", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())

    c1, c2 = load_checkpoint(one / "last.pt"), load_checkpoint(two / "last.pt")
    # Every weight matches. (The linear biases in front of a BatchNorm have a zero gradient up to rounding noise,
    # which AdamW turns into lr-sized steps, so those biases and the running means that track them are not
    # comparable; they cancel in the normalised output, which is compared below.)
    for name, value in c1.state_dict.items():
        if name.endswith("weight"):
            torch.testing.assert_close(c2.state_dict[name], value, rtol=1e-4, atol=1e-4, msg=name)
    s1, s2 = c1.build_model("cpu").train(), c2.build_model("cpu").train()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(16, 32, 3)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(s2(x), s1(x), rtol=1e-4, atol=1e-4)

    # the past-prediction bank of rank 0 holds the records both ranks visited (gathered every step)
    b1, b2 = c1.training_state["extra"]["self_target"], c2.training_state["extra"]["self_target"]
    assert int(b1["seen"].sum()) == 2 * 64 and torch.equal(b1["seen"], b2["seen"])
    torch.testing.assert_close(b2["logprobs"].float(), b1["logprobs"].float(), rtol=0, atol=1e-2)
    assert len(c2.training_state["rng_ranks"]) == 2


def test_distill_dist_relates_the_global_batch_across_ranks(reference_store, work):
    """DIST's intra-class term and the answer relations relate the batch's records: under torchrun they are computed
    over the records of all ranks (a differentiable gather), so the losses equal one process's on the global batch.
    (Per rank they would relate 8 records instead of 16: the losses differ at the 1e-3 level within one epoch.)"""
    common = dict(records=str(reference_store), student="pointnet-tiny", student_cfg={"dropout": 0.0}, epochs=1,
                  batch_size=16, kd_objective="dist", relation_weight=1.0, device="cpu")
    one, two = work / "dist1", work / "dist2"
    distill(DistillConfig(**common, out=str(one)), log=quiet)
    ok(torchrun("distill", "--records", str(reference_store), "--student", "pointnet-tiny", "--student-opt", "dropout=0",
                "--epochs", "1", "--batch-size", "16", "--kd-objective", "dist", "--relation-weight", "1", "--device",
                "cpu", "--out", str(two), cwd=work))
    (a,), (b,) = ([json.loads(line) for line in (o / "metrics.jsonl").read_text().splitlines()] for o in (one, two))
    for key in ("loss/ce", "loss/kd", "loss/relation", "loss/total"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


def test_distill_embedding_matching_contrasts_the_global_batch_across_ranks(teacher, work):
    """The embedding term's negatives are the records of all ranks (gathered): its loss under torchrun equals one
    process's on the global batch, and rank 0 saves the projector for a resume."""
    store = work / "emb.zarr"
    record(RecordConfig(teacher=str(teacher), views=VIEWS, chunk_records=CHUNK, batch_size=8, device="cpu",
                        feature_dim=16, out=str(store)), log=quiet, show_progress=False)
    common = dict(records=str(store), student="pointnet-tiny", student_cfg={"dropout": 0.0}, epochs=1, batch_size=16,
                  device="cpu")
    one, two = work / "emb1", work / "emb2"
    distill(DistillConfig(**common, out=str(one)), log=quiet)
    ok(torchrun("distill", "--records", str(store), "--student", "pointnet-tiny", "--student-opt", "dropout=0",
                "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--out", str(two), cwd=work))
    (a,), (b,) = ([json.loads(line) for line in (o / "metrics.jsonl").read_text().splitlines()] for o in (one, two))
    assert a["loss/embedding"] > 0
    for key in ("loss/ce", "loss/kd", "loss/embedding", "loss/total"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert "projector" in load_checkpoint(two / "last.pt").training_state["extra"]
