"""Issue 2, acceptance 2 and solver behaviour: the collocated steady state equals the integrator's
long-time limit; Floquet multipliers match the integrator's monodromy; high Q and Γ = 0 work;
unstable and unconverged orbits raise their errors."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from physlearn.errors import SteadyStateError, UnstableOrbitError
from physlearn.simulators import periodic
from physlearn.simulators.ensemble import random_network
from physlearn.simulators.excitation import GridExcitation
from physlearn.simulators.integrator import Integrator, State
from physlearn.simulators.problem import PeriodicProblem
from physlearn.spec.network import NetworkSpec
from physlearn.spec.nonlinearity import NonSmoothWarning

from twin_helpers import with_trainable_everything  # isort: skip


@pytest.mark.slow
@pytest.mark.parametrize("q", [5, 50])
def test_steady_state_is_the_integrators_long_time_limit(q: float) -> None:
    rng = np.random.default_rng(11)
    spec = random_network(6, rng, damping=1.0 / q, kinds=("product", "difference"))
    prob = PeriodicProblem.from_spec(spec)
    sol = prob.solve()
    T = spec.period_s
    integ = Integrator(prob.model, prob.theta(), prob.excitation, dt=T / 128)
    s = integ.advance(integ.rest(1), 20 * q * T)
    s, err = integ.advance_with_error(s, T)  # the integrator's own error estimate over a period
    _, _, xs = integ.sample(s, T, prob.grid.n)
    scale = np.max(np.abs(sol.x))
    tol = 1e-6
    assert err / scale < 0.1 * tol
    assert np.max(np.abs(xs - sol.x)) / scale <= tol


def test_floquet_multipliers_match_the_integrators_monodromy() -> None:
    rng = np.random.default_rng(12)
    spec = random_network(4, rng, damping=0.1)
    prob = PeriodicProblem.from_spec(spec)
    sol = prob.solve()
    assert sol.multipliers is not None
    d, T = spec.nodes.count, spec.period_s
    # Finite-difference monodromy of the integrator's one-period flow map at the orbit's t = 0.
    eps = 1e-6
    base = np.concatenate([sol.x[:, 0], sol.v[:, 0]], axis=1)[0]
    starts = np.repeat(base[None], 4 * d, axis=0)
    for c in range(2 * d):
        starts[2 * c, c] += eps
        starts[2 * c + 1, c] -= eps
    many = PeriodicProblem.from_spec(spec, inputs=np.repeat([spec.inputs.values], 4 * d, axis=0))
    integ = Integrator(many.model, many.theta(), many.excitation, dt=T / 512)
    end = integ.advance(State(0.0, starts[:, :d], starts[:, d:]), T)
    out = np.concatenate([end.x, end.v], axis=1)
    phi = ((out[0::2] - out[1::2]) / (2 * eps)).T
    ref = np.linalg.eigvals(phi)
    ref = ref[np.argsort(-np.abs(ref))]
    assert np.allclose(np.sort_complex(sol.multipliers[0]), np.sort_complex(ref), atol=1e-6)
    # Uniform damping: |μ| = e^{−ΓT/2} for every multiplier (Liouville).
    assert np.allclose(np.abs(sol.multipliers[0]), np.exp(-0.1 * T / 2), atol=1e-7)


@pytest.mark.parametrize("q", [10.0, 1e3, 1e4])
def test_high_q_converges_without_integrating_transients(q: float) -> None:
    rng = np.random.default_rng(13)
    spec = random_network(8, rng, damping=1.0 / q)
    sol = PeriodicProblem.from_spec(spec).solve()
    assert sol.residual.max() <= 1e-12
    assert sol.iterations.max() <= 15
    assert np.all(sol.max_multiplier < 1.0)


def test_conservative_orbit_off_resonance_is_marginal_not_unstable() -> None:
    rng = np.random.default_rng(14)
    spec = random_network(8, rng, damping=0.0)
    sol = PeriodicProblem.from_spec(spec).solve()
    assert np.allclose(np.abs(sol.multipliers), 1.0, atol=1e-7)


def _duffing(start_amplitude: float) -> tuple[PeriodicProblem, np.ndarray]:
    """One hardening Duffing node driven above resonance: three coexisting orbits."""
    spec = NetworkSpec.model_validate(
        {
            "nodes": {"count": 1, "stiffness": 1.0, "damping": 0.05},
            "quartic": [{"node": 0, "value": 1.0}],
            "drive": {"omega_rad_s": 1.5},
            "inputs": {"nodes": [0], "values": [0.2], "gain": 1.0},
        }
    )
    prob = PeriodicProblem.from_spec(spec)
    x0 = start_amplitude * np.cos(1.5 * prob.grid.t)[None, :, None]
    return prob, x0


def test_unstable_orbit_is_refused() -> None:
    # Three coexisting orbits (x(0) ≈ −0.16 and 1.15 attract; the middle branch of the resonance
    # curve, reached by Newton from x(0) ≈ 0.6, is a saddle). Newton converges to all three.
    outcomes: dict[float, object] = {}
    for a in (0.0, 0.6, 1.2):
        prob, x0 = _duffing(a)
        try:
            sol = prob.solve(x0=x0)
            outcomes[a] = float(sol.max_multiplier[0])
        except UnstableOrbitError as exc:
            assert exc.sample == 0 and exc.multiplier > 1.0
            assert "not attracting" in str(exc)
            outcomes[a] = "unstable"
    assert "unstable" in outcomes.values()
    assert any(isinstance(v, float) and v < 1.0 for v in outcomes.values())


def test_unconverged_orbit_raises_with_sample_and_residual() -> None:
    rng = np.random.default_rng(15)
    spec = random_network(4, rng, damping=0.05)
    prob = PeriodicProblem.from_spec(spec, inputs=np.array([[0.5, 0.5], [1.0, 1.0]]))
    with pytest.raises(SteadyStateError) as info:
        prob.solve(max_iter=1, tol=1e-15)
    assert info.value.sample in (0, 1)
    assert info.value.residual > 1e-15


def _stiff_batch() -> tuple[PeriodicProblem, np.ndarray, GridExcitation]:
    """A Duffing-like network (quartic terms) driven at 8 amplitudes: plain Newton stalls on the
    strongest drive only (32×), which amplitude continuation then solves."""
    spec = with_trainable_everything(
        random_network(6, np.random.default_rng(1), damping=0.01, kinds=("product", "difference")),
        quartic=1.0,
    )
    prob = PeriodicProblem.from_spec(spec)
    amps = np.array([1.0, 2, 4, 8, 12, 16, 24, 32])
    one = prob.exc
    exc = one.take(np.zeros(amps.size, dtype=np.intp))
    exc = GridExcitation(
        exc.force * amps[:, None, None],
        exc.clamp_weight,
        exc.clamp_target,
        exc.cost_weight,
        exc.target,
    )
    theta = np.repeat(prob.theta(), amps.size, axis=0)
    return prob, theta, exc


def test_continuation_runs_on_the_stalled_samples_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The last samples to converge, and those on which Newton stalls, go on in sub-batches of
    their own (the converged ones would cost a matvec per iteration for nothing), with the same
    result as solving each sample by itself."""
    prob, theta, exc = _stiff_batch()
    sizes: list[int] = []
    original = periodic.PeriodicOperator.__init__

    def recording(self: periodic.PeriodicOperator, model: Any, th: np.ndarray, *a: Any) -> None:
        sizes.append(th.shape[0])
        original(self, model, th, *a)

    monkeypatch.setattr(periodic.PeriodicOperator, "__init__", recording)
    with caplog.at_level(logging.INFO, logger=periodic.log.name):
        sol = periodic.solve_periodic(prob.model, theta, exc, prob.grid, floquet="none")
    assert "Newton stalled on 1 samples" in caplog.text
    # the batch; Newton's tail (≤ 1/4 of the batch left to converge: 2 samples) in a sub-batch;
    # the 5 continuation stages of sample 7, on which Newton stalled
    assert sizes == [8, 2, 1, 1, 1, 1, 1]
    for i in range(8):
        idx = np.array([i])
        alone = periodic.solve_periodic(
            prob.model, theta[idx], exc.take(idx), prob.grid, floquet="none"
        )
        assert np.max(np.abs(alone.x[0] - sol.x[i])) <= 1e-9 * np.max(np.abs(sol.x[i]))


def _two_node(rho: str) -> NetworkSpec:
    """A smooth-as-it-gets 2-node network: node 0 driven, tanh-like coupling to node 1."""
    return NetworkSpec.model_validate(
        {
            "nonlinearity": rho,
            "nodes": {"count": 2, "mass": 1.0, "stiffness": 2.4, "damping": 0.05},
            "drive": {"omega_rad_s": 1.0},
            "inputs": {"nodes": [0], "mode": "force", "gain": 1.5, "values": [1.0]},
            "outputs": {"nodes": [1], "target": {"kind": "inphase", "values": [0.3]}},
            "couplings": [{"nodes": [0, 1], "value": 0.8}],
        }
    )


def _orbit(spec: NetworkSpec, n: int, t: np.ndarray) -> np.ndarray:
    """The free orbit at n points per period (default tolerance), interpolated at times t."""
    prob = PeriodicProblem.from_spec(spec, points_per_period=n)
    return prob.grid.interpolate(prob.solve(floquet="none").x, t)


def test_default_tolerance_is_reached_at_every_grid_size() -> None:
    """The relative residual floor grows ~ε N²/4 (spectral second derivative of a float64
    orbit): at 257 points it was 2.9e-12 > the default 1e-12 and the solve failed. The tolerance
    is raised to that round-off floor only where the floor exceeds it, so every N converges, and
    the orbits agree to round-off."""
    spec = _two_node("tanh")
    t = np.linspace(0.0, spec.period_s, 61, endpoint=False)
    ref = _orbit(spec, 1025, t)
    for n in (65, 129, 257, 513):
        assert np.max(np.abs(_orbit(spec, n, t) - ref)) < 1e-12, n
    prob = PeriodicProblem.from_spec(spec, points_per_period=33)
    sol = prob.solve(floquet="none")
    assert sol.residual[0] <= 1e-12  # small grids keep the plain tolerance


def test_softsign_warns_and_converges_only_algebraically() -> None:
    """softsign's ρ″ jumps at 0: its orbits converge like N⁻²…N⁻³ where tanh and isru (its smooth
    relative) converge spectrally; the solver says so (NonSmoothWarning) for softsign only."""
    t = np.linspace(0.0, 2 * np.pi, 61, endpoint=False)
    periodic._warned_nonsmooth.clear()
    with pytest.warns(NonSmoothWarning, match="softsign"):
        soft = [_orbit(_two_node("softsign"), n, t) for n in (65, 129, 1025)]
    err_65, err_129 = (float(np.max(np.abs(x - soft[-1]))) for x in soft[:2])
    assert 1e-7 < err_129 < err_65 < 1e-3 and err_65 / err_129 < 64  # algebraic, not spectral
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", NonSmoothWarning)
        for rho in ("tanh", "isru"):
            smooth = [_orbit(_two_node(rho), n, t) for n in (65, 1025)]
            assert np.max(np.abs(smooth[0] - smooth[1])) < 1e-12, rho
