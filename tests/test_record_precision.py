"""Recording precision: fp32 (TF32 off) by default, bf16 / fp16 autocast on request; the store says which, and
`records verify --teacher` allows that precision's error and no more."""

import json

import pytest
import torch

from kdpc.recorder.precision import MIN_ARGMAX_AGREEMENT, REPLAY_TOLERANCE, teacher_precision
from kdpc.recorder.replay_check import replay_check
from kdpc.store import RecordReader

from conftest import assert_one_line_error, run_kdpc


def test_default_store_is_fp32_and_verified_at_the_fp32_tolerance(tiny_store, tiny_teacher):
    assert RecordReader(tiny_store).header.teacher["precision"] == "fp32"
    result = replay_check(str(tiny_store), str(tiny_teacher), 40, device="cpu")
    assert result["ok"] and (result["precision"], result["tolerance"]) == ("fp32", REPLAY_TOLERANCE["fp32"])
    assert "recorded at fp32" in result["message"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_store_says_so_and_verify_applies_its_tolerance(tmp_path, tiny_teacher, precision):
    store = tmp_path / f"{precision}.zarr"
    run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "2", "--amp", precision, "--device", "cpu",
             "--codec", "f32", "--out", str(store))
    assert RecordReader(store).header.teacher["precision"] == precision
    proc = run_kdpc("records", "verify", str(store), "--teacher", str(tiny_teacher), "--check", "64", "--json")
    report = json.loads(proc.stdout)
    check = report["replay"]
    assert check["precision"] == precision and check["tolerance"] == REPLAY_TOLERANCE[precision]
    # the autocast really ran: the stored outputs are further from an fp32 replay than float32 rounding moves them
    assert check["max_abs_error"] > 1e-5
    assert check["argmax_agreement"] >= MIN_ARGMAX_AGREEMENT[precision]


def test_fp32_turns_tf32_off_inside_and_restores_it():
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with teacher_precision(torch.device("cpu"), "fp32"):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert not torch.is_autocast_enabled("cpu")
        assert torch.backends.cuda.matmul.allow_tf32
        with teacher_precision(torch.device("cpu"), "bf16"):
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


def test_unknown_precision_is_one_line(tmp_path, tiny_teacher):
    proc = run_kdpc("record", "--teacher", str(tiny_teacher), "--set", "precision=fp8", "--device", "cpu",
                    "--out", str(tmp_path / "x.zarr"), check=False)
    assert_one_line_error(proc, "--precision must be one of fp32, bf16, fp16")
    assert not (tmp_path / "x.zarr").exists()
