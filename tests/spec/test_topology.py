"""The layered topology: structure, seeded initialisation, and the two documented regimes."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.errors import ConfigError
from physlearn.spec.topology import (
    ModeGuard,
    layer_nodes,
    layered,
    mode_report,
    spec_with_parameters,
)


def test_layered_structure_and_bounds() -> None:
    spec = layered([2, 3, 2], seed=1)
    d = spec.nodes.count
    assert d == 2 + 3 + 2 + 1  # + bias oscillator
    assert spec.inputs.nodes == [0, 1] and spec.outputs.nodes == [5, 6]
    pairs = {tuple(c.nodes) for c in spec.couplings}
    # every input–hidden and hidden–output pair, plus the bias node to hidden and output nodes
    expected = {(a, b) for a in (0, 1) for b in (2, 3, 4)} | {
        (a, b) for a in (2, 3, 4) for b in (5, 6)
    }
    expected |= {(7, b) for b in (2, 3, 4, 5, 6)}
    assert pairs == expected
    assert sorted(b.node for b in spec.biases) == [2, 3, 4, 5, 6]
    assert [t.node for t in spec.drive.tones] == [7]
    lo, hi = spec.parameter_bounds()
    p = spec.initial_parameters()
    assert np.all(p >= lo) and np.all(p <= hi)
    assert layer_nodes([2, 3, 2]) == [[0, 1], [2, 3, 4], [5, 6]]


def test_layered_is_seeded() -> None:
    a = layered([2, 4, 1], seed=2).initial_parameters()
    b = layered([2, 4, 1], seed=2).initial_parameters()
    c = layered([2, 4, 1], seed=1).initial_parameters()
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


def test_conservative_regime_modes_off_resonance() -> None:
    spec = layered([4, 6, 3], seed=0)
    gamma = spec.nodes.arrays()[2]
    assert np.all(gamma * spec.period_s <= 0.01)
    rep = mode_report(spec)
    assert rep.margin_1w >= 0.1 and rep.margin_2w >= 0.1


def test_conservative_refuses_a_draw_near_resonance() -> None:
    with pytest.raises(ConfigError, match=r"within 0\.1"):
        layered([2, 4, 1], stiffness=1.05)


def test_lossy_regime_puts_a_mode_within_a_linewidth() -> None:
    spec = layered([2, 4, 1], regime="lossy_resonant", seed=0)
    gamma = float(spec.nodes.arrays()[2][0])
    assert spec.drive.omega_rad_s / gamma == pytest.approx(20.0)  # Q = 20
    rep = mode_report(spec)
    assert rep.detuning_linewidths <= 1.0
    assert rep.detuning_linewidths == pytest.approx(0.5, abs=1e-6)


def test_difference_couplings_are_springs() -> None:
    spec = layered([2, 3, 1], kind="difference", seed=2)
    assert all(c.kind == "difference" and c.value >= 0 and c.lower == 0 for c in spec.couplings)


def test_spec_with_parameters_round_trip() -> None:
    spec = layered([2, 3, 1], seed=0)
    p = spec.initial_parameters() * 0.5
    s2 = spec_with_parameters(spec, p)
    np.testing.assert_array_equal(s2.initial_parameters(), p)
    with pytest.raises(ConfigError):
        spec_with_parameters(spec, p[:-1])


@pytest.mark.parametrize("layers", [[2], [2, 0, 1], []])
def test_bad_layers(layers: list[int]) -> None:
    with pytest.raises(ConfigError, match="layers"):
        layered(layers)


def test_mode_guard_matches_mode_report_for_trained_parameters() -> None:
    spec = layered([4, 6, 3], seed=2)
    guard = ModeGuard(spec)
    rng = np.random.default_rng(0)
    lo, hi = spec.parameter_bounds()
    for _ in range(3):
        p = np.clip(spec.initial_parameters() + rng.normal(0.0, 0.4, lo.size), lo, hi)
        rep = mode_report(spec, p)
        assert np.allclose(guard.modes(p), rep.modes_rad_s, rtol=1e-12, atol=1e-12)
        assert guard.margin(p) == pytest.approx(min(rep.margin_1w, rep.margin_2w), rel=1e-12)


def test_layered_trainable_stiffness_moves_the_modes_the_report_sees() -> None:
    """``onsite_bound``: a trainable κ_j ∈ [−b, b] at 0 on every hidden and output node, after
    every other term; trained κ shifts the linear modes at rest (mode_report, ModeGuard)."""
    plain = layered([2, 3, 1], seed=0)
    spec = layered([2, 3, 1], seed=0, onsite_bound=0.5)
    names = spec.parameter_names()
    assert names[: len(plain.parameter_names())] == plain.parameter_names()
    onsite = [n for n in names if n.startswith("onsite")]
    assert onsite == [f"onsite[{i}]:{j}" for i, j in enumerate([2, 3, 4, 5])]
    assert np.all(spec.initial_parameters()[-4:] == 0.0)
    lo, hi = spec.parameter_bounds()
    assert np.all(lo[-4:] == -0.5) and np.all(hi[-4:] == 0.5)
    np.testing.assert_array_equal(mode_report(spec).modes_rad_s, mode_report(plain).modes_rad_s)
    p = spec.initial_parameters()
    p[-4:] = 0.4  # every hidden/output spring stiffer by 0.4 N/m
    stiffer = mode_report(spec, p).modes_rad_s
    assert np.all(stiffer[-4:] > mode_report(plain).modes_rad_s[-4:])
    np.testing.assert_allclose(ModeGuard(spec).modes(p), stiffer, rtol=1e-12)
    round_trip = spec_with_parameters(spec, p)
    np.testing.assert_array_equal(round_trip.initial_parameters(), p)


@pytest.mark.parametrize("bound", [0.0, -0.1, 2.4, 5.0, float("nan")])
def test_onsite_bound_must_keep_every_spring_positive(bound: float) -> None:
    with pytest.raises(ConfigError, match="onsite_bound"):
        layered([2, 3, 1], seed=0, onsite_bound=bound)


def test_output_stiffness_stiffens_only_the_readout_and_takes_it_out_of_the_lowest_mode() -> None:
    """``output_stiffness``: k_out on the output nodes only, the same draw otherwise; a stiffer
    readout moves out of the lowest normal mode at the XOR inputs' equilibria (where an
    autonomous orbit's energy goes), so its level is not blurred by its own oscillation."""
    from physlearn.simulators.autonomous import AutonomousProblem
    from physlearn.simulators.autonomous_family import linear_modes, static_equilibrium
    from physlearn.spec.model import NetworkModel
    from physlearn.systems.autonomous import input_load

    kw: dict = dict(
        seed=5,
        stiffness=1.2,
        damping=0.0,
        bias_node=False,
        input_waveform="constant",
        target_kind="constant",
        check_modes=False,
        input_gain=2.0,
    )
    plain = layered([2, 4, 1], **kw)
    stiff = layered([2, 4, 1], output_stiffness=4.8, **kw)
    assert stiff.nodes.stiffness == [1.2] * 6 + [4.8]
    assert plain.nodes.stiffness == 1.2
    np.testing.assert_array_equal(stiff.initial_parameters(), plain.initial_parameters())
    assert stiff.parameter_names() == plain.parameter_names()
    u = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])

    def output_share(spec) -> np.ndarray:  # |φ_out|² of the M-normalised lowest mode
        model = NetworkModel.from_spec(spec)
        load = input_load(spec, u)
        theta = model.full_theta(spec.initial_parameters(), batch=len(u))
        problem = AutonomousProblem(model, theta, load, 3)
        _, modes = linear_modes(problem, static_equilibrium(problem))
        return modes[:, -1, 0] ** 2

    assert np.all(output_share(stiff) < 0.25 * output_share(plain))
    with pytest.raises(ConfigError, match="output_stiffness"):
        layered([2, 4, 1], output_stiffness=4.8, seed=0)  # no explicit stiffness


def test_node_biases_false_leaves_only_the_couplings_trainable() -> None:
    """``node_biases = False``: the network a bench builds from DAC-tuned couplings alone — the
    same couplings and draw, no bias terms; ``bias_bound`` with it is a contradiction."""
    full = layered([4, 6, 3], seed=0)
    bare = layered([4, 6, 3], seed=0, node_biases=False)
    assert bare.biases == [] and len(full.biases) == 9
    trainable = [name for name, t in bare.terms() if t.trainable]
    assert len(trainable) == 51 and all(":product:" in name for name in trainable)
    n = len(bare.initial_parameters())
    np.testing.assert_array_equal(bare.initial_parameters(), full.initial_parameters()[:n])
    assert full.parameter_names()[:n] == bare.parameter_names()
    with pytest.raises(ConfigError, match="bias_bound"):
        layered([4, 6, 3], node_biases=False, bias_bound=0.5)
