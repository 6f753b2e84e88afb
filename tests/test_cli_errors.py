"""Bad numbers and devices: one line ``error: <what> — <what to do>``, exit 2, before any work."""

from __future__ import annotations

import pytest

from refiner import cli
from refiner.cli import main

TC = ["train-coarse", "--images", "a.tif", "--labels", "b.tif", "--classes", "a,b", "--out", "o"]
FT = ["finetune", "--image", "a", "--probs", "p", "--labels", "l", "--out", "o"]


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and err[0].startswith("error: ") and " — " in err[0], err
    return err[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([*TC, "--steps", "0"], "--steps 0"),
        ([*TC, "--steps", "-3"], "--steps -3"),
        ([*TC, "--batch-size", "0"], "--batch-size"),
        ([*FT, "--holdout", "1.5"], "--holdout"),
        ([*FT, "--patch-size", "0"], "--patch-size"),
        ([*FT, "--device", "bogus"], "bogus"),
    ],
)
def test_out_of_range_options_are_refused_before_any_work(argv, needle, capsys, monkeypatch):
    monkeypatch.setattr(cli, "cmd_finetune", lambda a: pytest.fail("work started"), raising=False)
    assert main(argv) == 2
    assert needle in one_error_line(capsys)


def test_cuda_on_a_machine_without_it(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["finetune", "--image", "a", "--probs", "p", "--labels", "l", "--out", "o", "--device", "cuda"]
    assert main(argv) == 2
    assert "no CUDA GPU" in one_error_line(capsys)


def test_an_unexpected_error_is_one_line_and_a_traceback_with_debug(capsys, monkeypatch, tmp_path):
    def boom(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "check_args", lambda a: boom(a))
    assert main(["demo-data", "--out", str(tmp_path)]) == 2
    assert "ZeroDivisionError" in one_error_line(capsys) and "--debug" in capsys.readouterr().err + "--debug"
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "demo-data", "--out", str(tmp_path)])
