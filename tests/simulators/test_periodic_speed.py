"""Issue 16 (speed of the twin's EP step): the faster solve path gives the same operators and
the same steady states — dense matrices on short grids equal the FFTs, per-sample GMRES
tolerances, nudged phases started with the free orbit's preconditioner equal plain solves."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from physlearn.simulators import periodic
from physlearn.simulators.ensemble import random_network
from physlearn.simulators.krylov import gmres
from physlearn.simulators.problem import PeriodicProblem
from physlearn.spec.system import ForceWaveform
from physlearn.systems.ideal import IdealSystem


@pytest.mark.parametrize("n", [17, 33])
def test_dense_operators_equal_the_fft_ones(n: int) -> None:
    rng = np.random.default_rng(12)
    spec = random_network(5, rng, damping=0.1)
    prob = PeriodicProblem.from_spec(spec, inputs=np.repeat([spec.inputs.values], 3, axis=0))
    grid = periodic.PeriodicGrid(n, prob.grid.period_s)
    op = periodic.PeriodicOperator(prob.model, prob.theta(), prob.excitation.on_grid(grid.t), grid)
    assert op._dense is not None
    op.set_orbit(rng.standard_normal((3, n, 5)))
    v = rng.standard_normal((3, n, 5))
    fft = periodic.PeriodicOperator(prob.model, prob.theta(), prob.excitation.on_grid(grid.t), grid)
    fft._dense = None
    fft.set_orbit(op.x)
    for name, a, b in (
        ("precond", op.precond(v), fft.precond(v)),
        ("precond T", op.precond(v, True), fft.precond(v, True)),
        ("jvp", op.jvp(v), fft.jvp(v)),
        ("vjp", op.vjp(v), fft.vjp(v)),
        ("residual", op.residual(v), fft.residual(v)),
        ("hess", op._hess(v), prob.model.hess_vec(op.x, grid.t, op.coef, v)),
    ):
        assert np.abs(a - b).max() <= 1e-13 * np.abs(b).max(), name


def test_gmres_takes_one_tolerance_per_row() -> None:
    rng = np.random.default_rng(0)
    A = np.eye(20) + 0.3 * rng.standard_normal((20, 20))
    b = rng.standard_normal((2, 20))
    res = gmres(lambda v: v @ A.T, b, rtol=np.array([1e-2, 1e-10]), restart=20)
    assert res.converged.all()
    assert res.residual[1] <= 1e-10 and res.iterations[0] < res.iterations[1]


def test_nudged_phases_equal_solves_from_the_free_orbit() -> None:
    """+F, −F, −F, +F after a free measurement (from the free orbit with its preconditioner;
    the repeats from their own orbits) give the orbits of plain solves."""
    rng = np.random.default_rng(5)
    spec = random_network(5, rng, damping=0.05, kinds=("product", "difference"))
    u = rng.uniform(0.5, 1.0, (4, 2))
    system = IdealSystem(spec, points_per_period=17, floquet="none")
    f = 0.05 * rng.standard_normal((4, 17, 5))

    async def run() -> list[np.ndarray]:
        await system.set_parameters(spec.initial_parameters())
        await system.set_input(u)
        out = [(await system.measure()).x]
        for s in (1.0, -1.0, -1.0, 1.0):
            await system.set_forces(ForceWaveform(s * f, spec.period_s))
            out.append((await system.measure()).x)
        return out

    xs = asyncio.run(run())
    model, grid = system.model, system.grid
    theta = model.full_theta(spec.initial_parameters(), batch=4)
    exc = system._require_input()
    for s, x in zip((1.0, -1.0, -1.0, 1.0), xs[1:], strict=True):
        e = periodic.GridExcitation(
            exc.force + s * f, exc.clamp_weight, exc.clamp_target, exc.cost_weight, exc.target
        )
        ref = periodic.solve_periodic(model, theta, e, grid, x0=xs[0], floquet="none")
        np.testing.assert_allclose(x, ref.x, atol=1e-10 * np.abs(ref.x).max())
    assert system.experiments == 20


def test_fast_model_paths_equal_the_plain_ones_for_every_term_kind() -> None:
    """`hess_operator` equals `hess_vec` and `integrated_dV_dtheta` the weighted sum of
    `dV_dtheta`, on a network with every term kind (product, difference, bias, quartic,
    on-site spring, directed) — each fast path must carry every term the plain one has."""
    from twin_helpers import with_trainable_everything

    rng = np.random.default_rng(3)
    spec = random_network(5, rng, damping=0.1, kinds=("product", "difference"))
    data = with_trainable_everything(spec).model_dump()
    data["directed"] = [{"target": 1, "source": 3, "value": 0.1, "kind": "rho"}]
    spec = type(spec).model_validate(data)
    model = periodic.NetworkModel.from_spec(spec)
    theta = model.full_theta(spec.initial_parameters(), batch=2) * rng.uniform(0.5, 1.5)
    coef = model.coefficients(theta)
    t = np.linspace(0.0, spec.period_s, 17, endpoint=False)
    x, v = rng.standard_normal((2, 2, 17, 5))
    fast = model.hess_operator(x, t, coef)(v)
    plain = model.hess_vec(x, t, coef, v)
    assert np.abs(fast - plain).max() <= 1e-13 * np.abs(plain).max()
    w = rng.uniform(0.5, 1.5, 17)
    summed = np.einsum("n,bnp->bp", w, model.dV_dtheta(x, t))
    integrated = model.integrated_dV_dtheta(x, t, w)
    assert np.abs(integrated - summed).max() <= 1e-13 * np.abs(summed).max()
    assert len(model.ons_idx) == 1 and np.all(integrated[:, model.ons_idx] != 0)
