"""The command line as a user meets it: listings, version, and bad input as one line + exit code 2."""

import pickle

import torch

import kdpc
from conftest import TINY_DATA_OPTS, assert_one_line_error, run_kdpc


def test_version_and_listings():
    assert run_kdpc("--version").stdout.strip().endswith(kdpc.__version__)
    names = [line.split()[0] for line in run_kdpc("datasets").stdout.splitlines()]
    assert {"synthetic", "synthetic-parts", "modelnet40", "modelnet40-resampled", "scanobjectnn", "shapenetpart"} <= set(names)
    rows = {line.split()[0]: line.split() for line in run_kdpc("models", "--task", "cls").stdout.splitlines()[1:]}
    assert int(rows["pointnet2-ssg"][2].replace(",", "")) == 1_475_688
    assert "pointnet2-seg" not in rows


def test_unknown_model_is_one_line(tmp_path):
    proc = run_kdpc("train", "--model", "resnet50", "--out", str(tmp_path / "x.pt"), check=False)
    assert_one_line_error(proc, "unknown model", "resnet50", "pointnet")


def test_bad_yaml_and_unknown_option(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    assert_one_line_error(run_kdpc("train", "--config", str(bad), check=False), "not valid YAML")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("epochz: 3\n")
    assert_one_line_error(run_kdpc("train", "--config", str(unknown), check=False), "epochz")
    # YAML is safe_load-ed: a python object tag is refused, never constructed
    evil = tmp_path / "evil.yaml"
    evil.write_text("epochs: !!python/object/apply:os.system ['echo pwned']\n")
    proc = run_kdpc("train", "--config", str(evil), check=False)
    assert_one_line_error(proc, "not valid YAML")
    assert "pwned" not in proc.stdout


def test_eval_rejects_missing_and_non_checkpoints(tmp_path):
    assert_one_line_error(run_kdpc("eval", "--model", str(tmp_path / "nope.pt"), check=False), "does not exist")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a zip file")
    assert_one_line_error(run_kdpc("eval", "--model", str(junk), check=False), "not a kdpc checkpoint")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    assert_one_line_error(run_kdpc("eval", "--model", str(plain), check=False), "not a kdpc checkpoint")


class _Exploit:
    def __reduce__(self):
        return (print, ("EXPLOIT RAN",))


def test_a_malicious_pickle_is_refused_not_executed(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "kdpc-checkpoint", "payload": _Exploit()}, evil)
    proc = run_kdpc("eval", "--model", str(evil), check=False)
    assert_one_line_error(proc, "weights-only")
    assert "EXPLOIT RAN" not in proc.stdout + proc.stderr
    assert pickle  # the exploit object really is a pickle-level payload


def test_eval_refuses_a_dataset_with_another_class_count(tiny_teacher):
    proc = run_kdpc("eval", "--model", str(tiny_teacher), "--dataset", "synthetic-parts", check=False)
    assert_one_line_error(proc)
    proc = run_kdpc("eval", "--model", str(tiny_teacher), "--dataset", "scanobjectnn", "--data-root", "/nonexistent",
                    check=False)
    assert_one_line_error(proc, "scanobjectnn")


def test_device_cuda_without_gpu_is_one_line(tmp_path):
    if torch.cuda.is_available():
        return
    proc = run_kdpc("train", "--device", "cuda", *TINY_DATA_OPTS, "--epochs", "1", "--out", str(tmp_path / "x.pt"),
                    check=False)
    assert_one_line_error(proc, "no CUDA GPU")
