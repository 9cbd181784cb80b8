"""The first hour of a new user (issue "Run reports … without a stumble"): everyday moves that
used to stumble, each checked as the user makes it — from the command line, on real files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


def _cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "physlearn.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_calibrate_against_nothing_names_the_instrument_and_leaves_no_folder(
    tmp_path: Path,
) -> None:
    """A resource where nothing listens: "cannot connect" (not "connection lost"), the
    instrument named, exit 2, and no empty output folder left behind."""
    names = ("fgen", "scope", "lockin1", "lockin2", "qdac")
    res = [f"{n}=TCPIP0::127.0.0.1::{_free_port()}::SOCKET" for n in names]
    out = tmp_path / "cal"
    r = _cli(
        "calibrate",
        "dac",
        "--config",
        str(ROOT / "examples" / "bench.toml"),
        "--output",
        str(out),
        "--resources",
        *res,
    )
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "cannot connect" in last and "connection lost" not in r.stderr
    assert last.startswith("physlearn calibrate: error: fgen: TCPIP0::127.0.0.1::")
    assert not out.exists()


XOR = ROOT / "examples" / "xor.toml"


def _train(*args: str, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "physlearn.cli", "train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,  # type: ignore[call-overload]
    )


@pytest.mark.slow
def test_ctrl_c_on_the_twin_stops_within_a_step_and_the_resume_is_bit_identical(
    tmp_path: Path,
) -> None:
    """One SIGINT stops a twin run at the next step boundary (it used to be ignored until the
    run ended), commits the checkpoint and says how to resume; the resumed run gives, epoch for
    epoch, the parameters of the same run uninterrupted."""
    run_dir = tmp_path / "xor"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "physlearn.cli", "train", "--config", str(XOR)),
            *("--epochs", "20", "--quiet", "--run-dir", str(tmp_path), "--name", "xor"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, "no epochs written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 15  # one step of XOR takes well under a second
    assert proc.returncode == 130, err
    assert "stopped by SIGINT at epoch" in err
    assert f"continue with: physlearn train --resume {run_dir}" in err
    done = len(list((run_dir / "params").glob("epoch_*.npy")))
    assert 3 <= done < 20
    r = _train("--resume", str(run_dir), "--quiet")
    assert r.returncode == 0, r.stderr
    r = _train("--config", str(XOR), "--epochs", "20", "--quiet", "--run-dir", str(tmp_path),
               "--name", "uninterrupted")  # fmt: skip
    assert r.returncode == 0, r.stderr

    def params(d: Path) -> dict[str, bytes]:
        return {p.stem: p.read_bytes() for p in sorted((d / "params").glob("epoch_*.npy"))}

    want = params(tmp_path / "uninterrupted")
    assert len(want) == 20 and params(run_dir) == want


def test_run_folder_problems_are_one_line_errors_and_leave_nothing_half_written(
    tmp_path: Path,
) -> None:
    """A file where the run directory would go, a folder that cannot be written, a run that
    cannot be resumed in place: exit 2, one line naming the path, no traceback, nothing
    written."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x").write_text("not a folder")
    r = _train(
        *("--config", str(XOR), "--epochs", "1", "--run-dir", str(tmp_path / "runs")),
        *("--name", "x", "--quiet"),
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"physlearn train: error: cannot create run directory {tmp_path / 'runs' / 'x'}: "
        "a file is in its place"
    )
    locked = tmp_path / "locked"
    locked.mkdir()
    r = _read_only(
        locked, "train", "--config", str(XOR), "--epochs", "1", "--run-dir", str(locked / "runs")
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot create run directory" in r.stderr.strip().splitlines()[-1]
    assert not (locked / "runs").exists()
    # a finished run on a folder that became read-only cannot be resumed, and is left as it was
    r = _train(
        *("--config", str(XOR), "--epochs", "1", "--run-dir", str(tmp_path)),
        *("--name", "done", "--quiet"),
    )
    assert r.returncode == 0, r.stderr
    run = tmp_path / "done"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    r = _read_only(run, "train", "--resume", str(run), "--epochs", "2", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "not writable" in r.stderr.strip().splitlines()[-1]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def _read_only(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``physlearn ARGS`` with ``folder`` read-only: chmod for a normal user; for root (whom
    permissions do not stop) a read-only bind mount in a private mount namespace."""
    argv = [sys.executable, "-m", "physlearn.cli", *args]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=120)
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, str(folder), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_files_follow_the_umask_and_describe_their_parameters(tmp_path: Path) -> None:
    """Every file of a run gets the mode the user's umask gives (they were a mix of 0600 and
    0644); parameters.json names the parameters with units and bounds from the start; the
    checkpoint's arrays are named by what they hold (they were a0…a14)."""
    r = _train(
        "--config",
        str(XOR),
        "--epochs",
        "1",
        "--run-dir",
        str(tmp_path),
        "--name",
        "u",
        "--quiet",
        preexec_fn=lambda: os.umask(0o027),
    )
    assert r.returncode == 0, r.stderr
    run = tmp_path / "u"
    files = [p for p in run.rglob("*") if p.is_file()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {"0o640"}
    desc = json.loads((run / "parameters.json").read_text())
    assert len(desc["names"]) == len(desc["units"]) == len(desc["initial"]) == 22
    assert desc["units"][0] == "N/m" and desc["units"][-1] == "N"
    assert desc["lower"][0] == -1.0 and desc["upper"][0] == 1.0
    with np.load(run / "checkpoint.npz") as ck:
        names = set(ck.files)
    assert {"params", "extra.best_params", "optimizer_state.buffers.m"} <= names
    assert not any(n.startswith("a") and n[1:].isdigit() for n in names)


def test_a_finished_run_can_be_extended_by_more_epochs(tmp_path: Path) -> None:
    """--resume RUN --epochs N continues a finished run (it was refused: the config differed
    in training.epochs); the result is the longer run's; fewer epochs and other changes are
    still refused."""
    assert (
        _train(
            "--config",
            str(XOR),
            "--epochs",
            "2",
            "--run-dir",
            str(tmp_path),
            "--name",
            "e",
            "--quiet",
        ).returncode
        == 0
    )
    run = tmp_path / "e"
    r = _train("--resume", str(run), "--epochs", "4", "--quiet")
    assert r.returncode == 0, r.stderr
    r = _train("--config", str(XOR), "--epochs", "4", "--run-dir", str(tmp_path), "--name",
               "straight", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    for e in range(4):  # the extended run is the 4-epoch run, bit for bit
        name = f"params/epoch_{e:04d}.npy"
        assert (run / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    r = _train("--resume", str(run), "--epochs", "3", "--quiet")
    assert r.returncode == 2 and "training.epochs can only grow (4 → 3)" in r.stderr
    r = _train("--resume", str(run), "--seed", "5", "--quiet")
    assert r.returncode == 2 and "differs in training.seed" in r.stderr


def test_log_lines_go_above_the_progress_bar(tmp_path: Path) -> None:
    """Warnings during training are printed on lines of their own (the bar is cleared and
    redrawn), not into the middle of the bar's line. XOR at learning rate 1 crosses a
    bifurcation in its first epochs: steps are refused and evaluation samples go unsolved, each
    with a warning."""
    cfg = tmp_path / "xor-lr1.toml"
    text = XOR.read_text()
    assert "\nlr = 0.05\n" in text
    for guard in ('\nstability_check = "full"\n', "\nmax_loss_increase = 0.5\n"):
        assert guard in text  # the guard would refuse those steps quietly
        text = text.replace(guard, "\n")
    cfg.write_text(text.replace("\nlr = 0.05\n", "\nlr = 1.0\n"))
    r = _train("--config", str(cfg), "--epochs", "6", "--run-dir", str(tmp_path), "--name", "w")
    assert r.returncode == 0, r.stderr
    err = r.stderr
    starts = [i for i in range(len(err)) if err.startswith("WARNING", i)]
    assert starts, "XOR at learning rate 1 warns about refused steps and unsolved samples"
    assert all(i == 0 or err[i - 1] in "\r\n" for i in starts), [err[i - 60 : i] for i in starts]


def test_calibration_plots_have_titles_and_measured_phases_sit_on_their_fits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The resonance plot had no title and drew measured phases a 2π turn away from their
    fitted lines (data near −12 rad, fit near −6): every calibration plot is titled, its legend
    sits beside the axes, and measured phases are drawn on the fit's branch."""
    from matplotlib.figure import Figure

    from physlearn.calibration import plots
    from physlearn.calibration.model import Measurement, Topology

    saved: list[tuple[Figure, str]] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, title: saved.append((fig, title)))
    f = np.linspace(10.0, 60.0, 40)
    w = 2 * np.pi * f
    model = np.exp(-1j * (0.2 * f))  # a phase that winds past −2π over the sweep
    noise = np.exp(1j * 0.05 * np.sin(f))
    h = model * noise * np.exp(2j * np.pi * (f > 40))  # measured: the same, one turn apart
    m = Measurement(w, np.zeros(40, np.intp), np.zeros(40, np.intp), h, np.ones(40))
    plots.plot_transfer(tmp_path / "r.png", m, model, Topology(1, (0,), (0,)))
    fig, title = saved[-1]
    assert title.startswith("Resonances")
    ax_mag, ax_phase = fig.axes[:2]
    dots, fit = (line.get_ydata() for line in ax_phase.get_lines()[:2])
    assert np.max(np.abs(np.asarray(dots) - np.asarray(fit))) < 0.1
    assert ax_mag.get_legend() is not None and ax_mag.get_legend().get_bbox_to_anchor() is not None
    plots.plot_dac(
        tmp_path / "d.png", {"q_setpoint_v": np.arange(3.0), "q_delivered_v": np.arange(3.0)}
    )
    assert saved[-1][1].startswith("DAC")
