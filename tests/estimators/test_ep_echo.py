"""Issue 7: the echo nudge (`ep_echo`) on the ideal twin, with the echo steady state reached by
RK4 integration from the free state (acceptance 1–3), its refusals, and the echo dynamics of
`IdealSystem`."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from twin_helpers import cosine, rel_err

from physlearn.errors import ConfigError, GradientError, SteadyStateError
from physlearn.estimators import GradientEstimate, make_estimator
from physlearn.estimators.echo_fit import SensingDelayCorrection, fit_echo_damping
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.ensemble import random_network
from physlearn.spec.delegating import DelegatingSystem
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import ForceWaveform, Observation, PhysicalSystem
from physlearn.spec.task import Task
from physlearn.systems.ideal import IdealSystem


def _problem(
    spec: NetworkSpec, batch: int, seed: int
) -> tuple[ModelKnowledge, np.ndarray, np.ndarray, Task]:
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.5, 1.0, (batch, len(spec.inputs.nodes)))
    y = rng.uniform(-0.5, 0.5, (batch, len(spec.outputs.nodes)))
    return ModelKnowledge.from_spec(spec), spec.initial_parameters(), u, Task.from_spec(spec, y)


def _estimates(
    system: PhysicalSystem,
    spec: NetworkSpec,
    names: dict[str, dict[str, Any]],
    batch: int = 2,
    seed: int = 0,
    knowledge: ModelKnowledge | None = None,
) -> dict[str, GradientEstimate]:
    kn, alpha, u, task = _problem(spec, batch, seed)

    async def run() -> dict[str, GradientEstimate]:
        out = {}
        for name, cfg in names.items():
            k = knowledge if (knowledge is not None and name != "adjoint") else kn
            out[name] = await make_estimator(name, k, **cfg).estimate(system, alpha, u, task)
        return out

    return asyncio.run(run())


# ----------------------------------------------------------------------------- acceptance 1
# (d, Γ, resonant, seed); the cases marked True have ep_symmetric cosines < 0.5 on every sample.
CASES = [
    (d, gamma, resonant, seed)
    for d in (6, 12)
    for gamma, resonant, seed in (
        (0.01, True, 4),
        (0.01, False, 5),
        (0.05, True, 1),
        (0.05, False, 6),
        (0.2, True, 3),
        (0.2, False, 2),
    )
]
SYMMETRIC_FAILS = {(6, 0.05, True), (6, 0.2, True), (12, 0.05, True), (12, 0.2, True)}


@pytest.mark.slow
@pytest.mark.parametrize(("d", "gamma", "resonant", "seed"), CASES)
def test_ep_echo_equals_adjoint_where_ep_symmetric_fails(
    d: int, gamma: float, resonant: bool, seed: int
) -> None:
    spec = random_network(d, np.random.default_rng(seed), damping=gamma, resonant=resonant)
    system = IdealSystem(spec)  # floquet="all": every steady state used is attracting
    assert system.echo_settle == "integrate"
    res = _estimates(system, spec, {"adjoint": {}, "ep_echo": {}, "ep_symmetric": {}}, seed=seed)
    ref, echo, sym = res["adjoint"], res["ep_echo"], res["ep_symmetric"]
    errs = [rel_err(echo.grad[i], ref.grad[i]) for i in range(2)]
    coss = [cosine(echo.grad[i], ref.grad[i]) for i in range(2)]
    sym_cos = [cosine(sym.grad[i], ref.grad[i]) for i in range(2)]
    assert max(errs) <= 1e-4 and min(coss) >= 0.99999, (errs, coss, sym_cos)
    # The echo was reached by integration from the free state (settle time > 0), and it is the
    # reversed free orbit.
    assert np.all(np.asarray(echo.info["echo_settle_s"]) > 0)
    assert np.all(np.asarray(echo.info["echo_mismatch"]) < 1e-8)
    assert echo.experiments == 2 * 4
    np.testing.assert_allclose(echo.cost, ref.cost, rtol=1e-12)
    if (d, gamma, resonant) in SYMMETRIC_FAILS:
        assert max(sym_cos) < 0.5, sym_cos


def test_ep_echo_with_time_modulations_and_a_clamped_input() -> None:
    """μ(t), ν(t) neither constant nor even and a clamped input with a pulsed δ(t): the echo must
    run them reversed (ep_time_reversed, which cannot, is visibly off)."""
    base = random_network(5, np.random.default_rng(21), damping=0.1, resonant=True)
    data = base.model_dump()
    data["modulations"] = {
        "mu": {"kind": "cosine", "offset": 1.0, "amplitude": 0.4, "phase_rad": 0.7},
        "nu": {"kind": "cosine", "offset": 1.0, "amplitude": 0.3, "harmonic": 2, "phase_rad": 1.1},
        "delta": {"kind": "cosine", "offset": 0.5, "amplitude": 0.2, "phase_rad": 0.4},
    }
    data["inputs"]["mode"] = "clamp"
    data["inputs"]["nodes"] = [0]
    data["inputs"]["values"] = [0.8]
    data["inputs"]["gain"] = 1.5
    data["drive"]["tones"] = [{"node": 1, "amplitude_n": 0.2, "phase_rad": 0.3}]
    spec = NetworkSpec.model_validate(data)
    system = IdealSystem(spec)
    res = _estimates(system, spec, {"adjoint": {}, "ep_echo": {}, "ep_time_reversed": {}})
    ref = res["adjoint"].grad
    assert rel_err(res["ep_echo"].grad, ref) <= 1e-4
    assert rel_err(res["ep_time_reversed"].grad, ref) > 1e-2


def test_newton_settling_gives_the_same_gradient_faster() -> None:
    spec = random_network(6, np.random.default_rng(1), damping=0.05, resonant=True)
    g = {
        mode: _estimates(IdealSystem(spec, echo_settle=mode), spec, {"ep_echo": {}})["ep_echo"]
        for mode in ("integrate", "newton")
    }
    assert rel_err(g["newton"].grad, g["integrate"].grad) < 1e-8
    assert np.all(np.asarray(g["integrate"].info["echo_settle_s"]) > 10 * spec.period_s)
    assert np.all(np.asarray(g["newton"].info["echo_settle_s"]) == 0)


# ----------------------------------------------------------------------------- acceptance 2
@pytest.fixture(scope="module")
def resonant6() -> NetworkSpec:
    return random_network(6, np.random.default_rng(1), damping=0.05, resonant=True)


def test_gradient_error_is_linear_in_the_assumed_damping(resonant6: NetworkSpec) -> None:
    spec = resonant6
    system = IdealSystem(spec)
    kn = ModelKnowledge.from_spec(spec)
    ref = _estimates(system, spec, {"adjoint": {}})["adjoint"].grad
    err = {}
    for eps in (0.0, 1e-3, 2e-3, -1e-3):
        k = kn.with_damping(kn.damping * (1.0 + eps))
        est = _estimates(system, spec, {"ep_echo": {}}, knowledge=k)["ep_echo"]
        err[eps] = est.grad - ref
        if eps:  # the mismatch flags the miscalibration, linearly
            assert np.all(np.asarray(est.info["echo_mismatch"]) > 1e-4 * abs(eps) / 1e-3)
    e1, e2, em = (err[e] - err[0.0] for e in (1e-3, 2e-3, -1e-3))
    size = float(np.linalg.norm(ref))
    assert np.linalg.norm(err[0.0]) / size < 1e-5
    assert np.linalg.norm(e1) / size > 1e-4  # the effect is resolved (β² error ~1e-6)
    assert rel_err(e2, 2 * e1) < 2e-2, rel_err(e2, 2 * e1)
    assert rel_err(em, -e1) < 2e-2, rel_err(em, -e1)


def test_self_calibration_recovers_a_five_percent_damping_error(resonant6: NetworkSpec) -> None:
    spec = resonant6
    system = IdealSystem(spec)
    kn, alpha, u, task = _problem(spec, 2, 0)
    wrong = kn.with_damping(kn.damping * 1.05)
    true_mg = kn.mass * kn.damping

    async def run() -> tuple[Any, GradientEstimate, GradientEstimate, GradientEstimate]:
        n0 = system.experiments
        fit = await fit_echo_damping(system, wrong, alpha, u, iterations=3)
        assert fit.experiments == system.experiments - n0 == 2 * (2 + 6 + 3)
        ref = await make_estimator("adjoint", kn).estimate(system, alpha, u, task)
        bad = await make_estimator("ep_echo", wrong).estimate(system, alpha, u, task)
        cal = await make_estimator("ep_echo", wrong, self_calibrate=True).estimate(
            system, alpha, u, task
        )
        return fit, ref, bad, cal

    fit, ref, bad, cal = asyncio.run(run())
    np.testing.assert_allclose(fit.initial, 1.05 * true_mg)
    assert np.max(np.abs(fit.m_gamma / true_mg - 1.0)) < 5e-3, fit.m_gamma / true_mg
    assert fit.mismatch[-1] < 1e-2 * fit.mismatch[0]
    np.testing.assert_allclose(fit.knowledge(wrong).damping, fit.m_gamma / kn.mass)
    assert rel_err(bad.grad, ref.grad) > 1e-2  # uncalibrated: a 5 % error in mΓ shows
    assert rel_err(cal.grad, ref.grad) < 1e-3
    assert cal.experiments == 2 * (4 + 1 + 6 + 3)
    assert np.max(np.abs(np.asarray(cal.info["calibrated_m_gamma"]) / true_mg - 1)) < 5e-3


def test_self_calibration_recovers_sensing_delays(resonant6: NetworkSpec) -> None:
    """A sensing chain whose calibrated delays are off by ε_j (the system reports x_j(t − ε_j):
    0.2 %, 0.5 % and −0.4 % of the period on nodes 0, 1, 3) on top of a 5 % error in m·Γ. The
    damping-only fit absorbs what it can and leaves the mismatch; fitting the delays too recovers
    ε and m·Γ, and the gradient becomes exact again."""
    spec = resonant6
    inner = IdealSystem(spec)
    period = inner.period_s
    eps = np.array([0.002, 0.005, 0.0, -0.004, 0.0, 0.0]) * period
    system = SensingDelayCorrection(inner, -eps)  # advancing by −ε delays the readout by ε
    kn, alpha, u, task = _problem(spec, 2, 0)
    wrong = kn.with_damping(kn.damping * 1.05)
    true_mg = kn.mass * kn.damping

    async def run() -> tuple[GradientEstimate, GradientEstimate, GradientEstimate]:
        ref = await make_estimator("adjoint", kn).estimate(inner, alpha, u, task)
        damping_only = await make_estimator("ep_echo", wrong, self_calibrate=True).estimate(
            system, alpha, u, task
        )
        both = await make_estimator(
            "ep_echo", wrong, self_calibrate=True, calibrate_delays=True
        ).estimate(system, alpha, u, task)
        return ref, damping_only, both

    ref, damping_only, both = asyncio.run(run())
    delays = np.asarray(both.info["calibrated_delays_s"])
    assert np.max(np.abs(delays - eps)) < 2e-5 * period, (delays - eps) / period
    mg = np.asarray(both.info["calibrated_m_gamma"])
    assert np.max(np.abs(mg / true_mg - 1.0)) < 5e-3, mg / true_mg
    assert np.max(both.info["echo_mismatch"]) < 1e-2 * np.min(damping_only.info["echo_mismatch"])
    assert rel_err(damping_only.grad, ref.grad) > 1e-3  # the delays bias the damping-only fit
    assert rel_err(both.grad, ref.grad) < 1e-4
    assert both.experiments == 2 * (4 + 1 + 6 + 6 + 3)  # + one delay column per node


# ----------------------------------------------------------------------------- acceptance 3
def _duffing_pair(phase_rad: float) -> NetworkSpec:
    """A driven hardening Duffing node (¼ x⁴) coupled to an output node; at this drive it is
    bistable (small orbit, peak |x₀| ≈ 0.30, and large orbit ≈ 0.76)."""
    return NetworkSpec.model_validate(
        {
            "nodes": {"count": 2, "stiffness": [0.7, 2.0], "damping": 0.1},
            "couplings": [{"kind": "product", "nodes": [0, 1], "value": 0.3}],
            "quartic": [{"node": 0, "value": 1.0}],
            "drive": {"omega_rad_s": 1.0},
            "inputs": {"nodes": [0], "values": [1.0], "gain": 0.1, "phase_rad": phase_rad},
            "outputs": {"nodes": [1], "target": {"kind": "inphase", "values": [0.2]}},
        }
    )


def test_echo_landing_on_another_attractor_is_refused() -> None:
    u = np.array([[1.0]])
    task = lambda s: Task.from_spec(s, np.array([[0.2]]))  # noqa: E731

    async def run(phase: float) -> tuple[IdealSystem, Observation, GradientEstimate | Exception]:
        spec = _duffing_pair(phase)
        system = IdealSystem(spec)
        kn = ModelKnowledge.from_spec(spec)
        try:
            res: GradientEstimate | Exception = await make_estimator("ep_echo", kn).estimate(
                system, spec.initial_parameters(), u, task(spec)
            )
        except GradientError as err:
            res = err
        after = await system.measure()  # restored: the free orbit again
        return system, after, res

    # Drive phase 1.05 rad: the echo, integrated from the free (small) orbit, lands on the
    # large orbit.
    _, after, res = asyncio.run(run(1.05))
    assert isinstance(res, GradientError)
    msg = str(res)
    assert "another attractor" in msg and "differs from the time-reversed free orbit" in msg
    mismatch = float(msg.split("orbit by ")[1].split(" ")[0])
    assert mismatch > 1.0
    assert np.max(np.abs(after.x[0, :, 0])) == pytest.approx(0.304, abs=0.01)  # small orbit
    assert after.meta["echo"] is False
    # Drive phase 0 (same network, shifted phase origin): the echo retraces the free orbit.
    spec0 = _duffing_pair(0.0)
    system0 = IdealSystem(spec0)
    res0 = _estimates(system0, spec0, {"adjoint": {}, "ep_echo": {}}, batch=1)
    assert np.all(np.asarray(res0["ep_echo"].info["echo_mismatch"]) < 1e-8)
    assert rel_err(res0["ep_echo"].grad, res0["adjoint"].grad) < 1e-4


# ----------------------------------------------------------------------------- refusals
class _Partial(DelegatingSystem):
    """Delegates to the twin but actuates only ``nodes``; ``echo``: forwards the echo methods."""

    def __init__(self, inner: IdealSystem, nodes: list[int], echo: bool = True):
        super().__init__(inner)
        self.nodes, self.echo = nodes, echo

    @property
    def actuated_nodes(self) -> list[int]:
        return list(self.nodes)

    async def drive_forces(self) -> np.ndarray:
        if not self.echo:
            return await PhysicalSystem.drive_forces(self)  # the interface's refusal
        return await self.inner.drive_forces()

    async def set_echo_drive(self, drive: ForceWaveform | None) -> None:
        if not self.echo:
            await PhysicalSystem.set_echo_drive(self, drive)
        await self.inner.set_echo_drive(drive)


def test_missing_actuation_on_damped_nodes_is_refused_naming_them() -> None:
    spec = random_network(5, np.random.default_rng(3), damping=0.2)
    data = spec.model_dump()
    data["nodes"]["damping"] = [0.2, 0.0, 0.2, 0.0, 0.2]
    spec = NetworkSpec.model_validate(data)
    system = IdealSystem(spec)
    kn, alpha, u, task = _problem(spec, 1, 0)
    est = make_estimator("ep_echo", kn)

    async def run(nodes: list[int], echo: bool = True) -> None:
        await est.estimate(_Partial(system, nodes, echo), alpha, u, task)

    with pytest.raises(GradientError, match=r"nodes \[0, 2\] \(damped nodes"):
        asyncio.run(run([4]))
    assert system.experiments == 0  # refused before any experiment
    # Damped nodes actuated, but the drive F̃ also pushes the (undamped) input node 1.
    with pytest.raises(GradientError, match=r"nodes \[1\] \(the echo drive"):
        asyncio.run(run([0, 2, 4]))
    with pytest.raises(GradientError, match="drive_forces"):
        asyncio.run(run(list(range(5)), echo=False))
    # Every node actuated: accepted.
    asyncio.run(run(list(range(5))))


def test_echo_drive_and_options_are_checked() -> None:
    spec = random_network(3, np.random.default_rng(8), damping=0.1)
    kn = ModelKnowledge.from_spec(spec)
    with pytest.raises(ConfigError, match="echo_settle"):
        IdealSystem(spec, echo_settle="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="echo_max_periods"):
        IdealSystem(spec, echo_max_periods=0)
    with pytest.raises(ConfigError, match="attractor_tol"):
        make_estimator("ep_echo", kn, attractor_tol=0.0)
    with pytest.raises(ConfigError, match="self_calibrate"):
        make_estimator("ep_echo", kn, self_calibrate="yes")
    system = IdealSystem(spec, echo_max_periods=2)

    async def run() -> None:
        await system.set_input(np.array([[0.7, 0.8]]))
        with pytest.raises(ConfigError, match="echo drive"):
            await system.set_echo_drive(ForceWaveform(np.zeros((1, 65, 2)), spec.period_s))
        free = await system.measure()
        await system.set_echo_drive(ForceWaveform(np.zeros((1, 65, 3)), spec.period_s))
        with pytest.raises(SteadyStateError, match="did not settle within 2 periods"):
            await system.measure()
        await system.set_echo_drive(None)
        again = await system.measure()
        np.testing.assert_allclose(again.x, free.x, atol=1e-12)

    asyncio.run(run())
