"""examples/bench-xor.toml as the bench benchmarks load it: train config, prepared setup, bench
file, calibration and the controller's options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from physlearn.calibration.schema import CalibrationFile
from physlearn.spec.bench import BenchConfig
from physlearn.systems.bench.options import BenchOptions
from physlearn.training.config import TrainConfig, load_train_config
from physlearn.training.setup import TrainSetup, prepare

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bench-xor.toml"

__all__ = ["EXAMPLE", "BenchExample", "load_bench_example"]


@dataclass(frozen=True)
class BenchExample:
    cfg: TrainConfig
    setup: TrainSetup
    bench_path: Path
    config: BenchConfig
    cal: CalibrationFile
    options: BenchOptions


def load_bench_example(settle: dict[str, Any] | None = None) -> BenchExample:
    """The example, its ``[system.bench.options.settle]`` updated with ``settle``."""
    cfg = load_train_config(EXAMPLE)
    b = cfg.system.bench
    assert b is not None
    opts = b.options
    if settle:
        opts = opts.model_copy(update={"settle": opts.settle.model_copy(update=settle)})
    bench_path = EXAMPLE.parent / b.config
    return BenchExample(
        cfg,
        prepare(cfg, EXAMPLE.parent),
        bench_path,
        BenchConfig.load(bench_path),
        CalibrationFile.read(EXAMPLE.parent / b.calibration),
        opts,
    )
