"""`physlearn train` on the bench (``[system] kind = "bench"``, in-memory emulated bench): the
dry run checks every setting and switches nothing on; without --arm the command refuses to
enable the outputs; a setting outside the limits fails the dry run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bench-xor.toml"

pytestmark = pytest.mark.timeout(300)


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "physlearn.cli", "train", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
    )


def test_dry_run_and_refusal_without_arm(tmp_path: Path) -> None:
    r = train("--config", str(EXAMPLE), "--dry-run", "--run-dir", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "27 DAC settings" in r.stdout and "matches the connected instruments" in r.stdout
    assert not any(tmp_path.iterdir())  # no run directory
    r = train("--config", str(EXAMPLE), "--run-dir", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2
    assert "refusing to enable the bench outputs without --arm" in r.stderr
    assert not any(tmp_path.iterdir())


def test_dry_run_refuses_a_drive_beyond_the_limits(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("gain = 1.5", "gain = 15.0", 1)
    for name in ("bench-xor-bench.toml", "bench-xor-calibration.json"):
        (tmp_path / name).write_text((EXAMPLE.parent / name).read_text())
    cfg = tmp_path / "bench-xor.toml"
    cfg.write_text(text)
    r = train("--config", str(cfg), "--dry-run", cwd=tmp_path)
    assert r.returncode != 0
    assert "fgen1" in r.stderr and "limit" in r.stderr.lower()


def test_bench_session_knowledge_comes_from_the_calibration() -> None:
    """On a bench the estimator's masses and damping rates are the calibration file's, not the
    network spec's (the designed Γ may differ from the bench's)."""
    import asyncio

    import numpy as np

    from physlearn.calibration.schema import CalibrationFile
    from physlearn.systems.factory import make_system
    from physlearn.training.config import load_train_config
    from physlearn.training.setup import prepare

    cfg = load_train_config(EXAMPLE)
    cal = CalibrationFile.read(EXAMPLE.parent / "bench-xor-calibration.json")

    async def run() -> None:
        setup = prepare(cfg, EXAMPLE.parent)
        async with make_system(cfg, EXAMPLE.parent, spec=setup.spec) as system:
            assert system.level == "emulated-memory"
            kn = setup.knowledge
            assert kn.source.startswith("calibration")
            assert setup.estimator.knowledge is kn
            np.testing.assert_array_equal(
                kn.damping, [n.damping_per_s.value for n in sorted(cal.nodes, key=lambda n: n.node)]
            )
            np.testing.assert_array_equal(kn.mass, np.full(6, cal.mass_kg))

    asyncio.run(run())


@pytest.mark.parametrize("readout", ["scope", "lockin"])
def test_the_resolved_bench_config_loads_again(tmp_path: Path, readout: str) -> None:
    """A run directory's config.toml (what ``--resume`` reads) validates like the original: the
    lock-in options are written with the lock-in readout only."""
    import tomli_w

    from physlearn.training.config import load_train_config

    cfg = load_train_config(EXAMPLE, {"system.bench.readout": readout})
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(cfg.resolved()))
    again = load_train_config(path)
    assert again == cfg and again.resolved() == cfg.resolved()
    assert ("lockin" in cfg.resolved()["system"]["bench"]) == (readout == "lockin")
