"""The linear bench model the calibration fits, and its least-squares fit with honest errors.

In node coordinates x (defined by each node's reference sensor, docs/calibration.md), masses
equal, small amplitudes (ρ linear):

    ẍ + Γ ẋ + Ω² x = Σ_j e_{n_j} a_j V_j(t − τ_j)          Ω² symmetric: Ω²_ii = K_ii/m,
    v_s(t) = G_s x_{n_s}(t − τ_s) + O_s                                   Ω²_ab = K_ab/m

so the transfer from generator channel j (volts) to sense path s (volts) at angular frequency ω is

    H_sj(ω) = G_s e^{−iωτ_s} [(Ω² − ω² + iωΓ)⁻¹]_{n_s n_j} a_j e^{−iωτ_j}.

`fit_network` fits (Ω², Γ, a, G, τ) to measured transfer functions with
`scipy.optimize.least_squares`; the covariance is (JᵀJ)⁻¹ scaled by the reduced χ² when it
exceeds 1 (never shrunk), so uncertainties stay honest when the model or the noise estimate is
imperfect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from physlearn.errors import CalibrationError

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]


@dataclass
class NetworkParams:
    """Parameters of the linear bench model (see module docstring); arrays in SI units."""

    omega2_diag: Array  # (d,) 1/s²
    kappa: Array  # (d, d) symmetric off-diagonal Ω² (diagonal unused), 1/s²
    gamma: Array  # (d,) 1/s
    act_gain: Array  # (J,) node units / s² / V
    act_delay_s: Array  # (J,)
    sen_gain: Array  # (S,) V / node unit
    sen_delay_s: Array  # (S,)

    def omega2(self) -> Array:
        w = np.array(self.kappa, dtype=np.float64)
        np.fill_diagonal(w, self.omega2_diag)
        return w

    def copy(self) -> NetworkParams:
        return NetworkParams(*(np.array(getattr(self, f)) for f in _FIELDS))


_FIELDS = (
    "omega2_diag",
    "kappa",
    "gamma",
    "act_gain",
    "act_delay_s",
    "sen_gain",
    "sen_delay_s",
)


@dataclass(frozen=True)
class Topology:
    """Which node each drive and sense path acts on."""

    n_nodes: int
    drive_nodes: tuple[int, ...]
    sense_nodes: tuple[int, ...]

    def pairs(self) -> list[tuple[int, int]]:
        d = self.n_nodes
        return [(a, b) for a in range(d) for b in range(a + 1, d)]


def transfer(
    p: NetworkParams, topo: Topology, omega_rad_s: Array, paths: list[int], drives: list[int]
) -> CArray:
    """H (F, len(paths), len(drives)) at angular frequencies `omega_rad_s` (F,)."""
    w = np.asarray(omega_rad_s, dtype=np.float64)
    d = topo.n_nodes
    a = p.omega2()[None, :, :] - (w**2)[:, None, None] * np.eye(d)[None]
    a = a + 1j * w[:, None, None] * np.diag(p.gamma)[None]
    r = np.linalg.inv(a)
    sn = [topo.sense_nodes[s] for s in paths]
    dn = [topo.drive_nodes[j] for j in drives]
    h = r[:, sn, :][:, :, dn]
    sg = p.sen_gain[paths] * np.exp(-1j * w[:, None] * p.sen_delay_s[paths][None, :])
    ag = p.act_gain[drives] * np.exp(-1j * w[:, None] * p.act_delay_s[drives][None, :])
    out: CArray = h * sg[:, :, None] * ag[:, None, :]
    return out


@dataclass
class Measurement:
    """Measured transfer values: H[k] at ω[k] for (path[k], drive[k]) with standard error σ[k]
    (per real and imaginary part)."""

    omega_rad_s: Array
    path: NDArray[np.intp]
    drive: NDArray[np.intp]
    h: CArray
    sigma: Array

    @staticmethod
    def concat(items: list[Measurement]) -> Measurement:
        return Measurement(
            np.concatenate([m.omega_rad_s for m in items]),
            np.concatenate([m.path for m in items]).astype(np.intp),
            np.concatenate([m.drive for m in items]).astype(np.intp),
            np.concatenate([m.h for m in items]),
            np.concatenate([m.sigma for m in items]),
        )


def predict(p: NetworkParams, topo: Topology, m: Measurement) -> CArray:
    """Model values at every point of a measurement."""
    out = np.empty(m.h.shape, dtype=np.complex128)
    n_paths, n_drives = len(topo.sense_nodes), len(topo.drive_nodes)
    full = transfer(p, topo, m.omega_rad_s, list(range(n_paths)), list(range(n_drives)))
    out[:] = full[np.arange(m.h.size), m.path, m.drive]
    return out


@dataclass
class FitSpec:
    """Which parameters are free: names of `NetworkParams` fields with index masks."""

    free: dict[str, NDArray[np.bool_]] = field(default_factory=dict)

    def size(self) -> int:
        return int(sum(int(v.sum()) for v in self.free.values()))


def _kappa_mask(d: int, pairs: list[tuple[int, int]]) -> NDArray[np.bool_]:
    mask = np.zeros((d, d), dtype=bool)
    for a, b in pairs:
        mask[min(a, b), max(a, b)] = True
    return mask


def kappa_mask(d: int, pairs: list[tuple[int, int]]) -> NDArray[np.bool_]:
    """Mask of the upper-triangle Ω² entries of `pairs` (the free couplings)."""
    return _kappa_mask(d, pairs)


def _pack(p: NetworkParams, spec: FitSpec) -> Array:
    parts = [np.asarray(getattr(p, name))[mask] for name, mask in spec.free.items()]
    return np.concatenate(parts) if parts else np.zeros(0)


def _unpack(theta: Array, base: NetworkParams, spec: FitSpec) -> NetworkParams:
    p = base.copy()
    i = 0
    for name, mask in spec.free.items():
        arr = getattr(p, name)
        n = int(mask.sum())
        arr[mask] = theta[i : i + n]
        i += n
        if name == "kappa":
            upper = np.triu(arr, 1)
            arr[:] = upper + upper.T
    return p


@dataclass
class FitResult:
    """A converged fit: parameters, their covariance (in `spec` order), χ² and its dof."""

    params: NetworkParams
    spec: FitSpec
    theta: Array
    cov: Array
    chi2: float
    dof: int
    scale: float  # the factor applied to the covariance (≥ 1)

    def sigma_of(self, name: str) -> Array:
        """Standard errors shaped like field `name` (0 where the value was held fixed)."""
        out = np.zeros(np.shape(getattr(self.params, name)))
        i = 0
        for n, mask in self.spec.free.items():
            k = int(mask.sum())
            if n == name:
                out[mask] = np.sqrt(np.diag(self.cov)[i : i + k])
                if name == "kappa":
                    out = np.triu(out, 1) + np.triu(out, 1).T
                return out
            i += k
        return out

    def cov_block(self, name: str) -> Array:
        i = 0
        for n, mask in self.spec.free.items():
            k = int(mask.sum())
            if n == name:
                return self.cov[i : i + k, i : i + k]
            i += k
        raise KeyError(name)


def fit_network(
    m: Measurement,
    topo: Topology,
    start: NetworkParams,
    spec: FitSpec,
    *,
    what: str,
    max_nfev: int = 400,
) -> FitResult:
    """Weighted least squares of the model to `m`; CalibrationError (naming `what`) if the fit
    does not converge or its Jacobian is singular."""
    theta0 = _pack(start, spec)
    scale_x = np.where(np.abs(theta0) > 0, np.abs(theta0), 1.0)

    def resid(u: Array) -> Array:
        p = _unpack(u * scale_x, start, spec)
        r = (predict(p, topo, m) - m.h) / m.sigma
        return np.concatenate([r.real, r.imag])

    try:
        sol = least_squares(resid, theta0 / scale_x, method="lm", max_nfev=max_nfev * theta0.size)
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise CalibrationError(f"{what}: the fit failed ({exc})") from exc
    if not sol.success or not np.all(np.isfinite(sol.x)):
        raise CalibrationError(f"{what}: the fit did not converge ({sol.message})")
    n = 2 * m.h.size
    dof = n - theta0.size
    if dof <= 0:
        raise CalibrationError(f"{what}: {n} data for {theta0.size} parameters; measure more")
    chi2 = float(np.sum(sol.fun**2))
    jtj_scaled = sol.jac.T @ sol.jac
    if not np.all(np.isfinite(jtj_scaled)) or np.linalg.cond(jtj_scaled) > 1e13:
        raise CalibrationError(
            f"{what}: the parameters are not identifiable from these data (singular Jacobian)"
        )
    scale = max(1.0, chi2 / dof)
    cov = np.linalg.inv(jtj_scaled) * np.outer(scale_x, scale_x) * scale
    theta = sol.x * scale_x
    return FitResult(_unpack(theta, start, spec), spec, theta, cov, chi2, dof, scale)


def modal_start(
    m: Measurement, topo: Topology, sen_gain: Array, sen_delay_s: Array
) -> NetworkParams:
    """A start point from the data alone: each node's Ω² at the peak of its largest response,
    Γ from a quality factor of 8, actuator gains from the driven nodes' peak heights."""
    d = topo.n_nodes
    peaks = []
    for j, node in enumerate(topo.drive_nodes):
        sel = np.array([topo.sense_nodes[s] == node for s in m.path]) & (m.drive == j)
        if sel.any():
            peaks.append(m.omega_rad_s[sel][np.argmax(np.abs(m.h[sel]))] ** 2)
    if not peaks:
        raise CalibrationError("no driven node is sensed: the network fit has no start point")
    w2 = np.full(d, float(np.median(peaks)))
    gamma = np.sqrt(w2) / 8.0
    act = np.zeros(len(topo.drive_nodes))
    for j, node in enumerate(topo.drive_nodes):
        sel = np.array([topo.sense_nodes[s] == node for s in m.path], dtype=bool) & (m.drive == j)
        if not sel.any():
            raise CalibrationError(f"drive {j} (node {node}) is not sensed on its own node")
        k = np.argmax(np.abs(m.h[sel]))
        s = int(m.path[sel][k])
        w = m.omega_rad_s[sel][k]
        act[j] = np.abs(m.h[sel][k]) * w * gamma[node] / max(abs(sen_gain[s]), 1e-12)
    return NetworkParams(
        w2,
        np.zeros((d, d)),
        gamma,
        act,
        np.zeros(len(topo.drive_nodes)),
        np.array(sen_gain, dtype=np.float64),
        np.array(sen_delay_s, dtype=np.float64),
    )


def eigen_modes(p: NetworkParams) -> tuple[Array, Array]:
    """Free-response modes of the fitted model: (frequencies Hz, decay rates 1/s), sorted."""
    d = p.omega2_diag.size
    a = np.block([[np.zeros((d, d)), np.eye(d)], [-p.omega2(), -np.diag(p.gamma)]])
    lam = np.linalg.eigvals(a)
    lam = lam[lam.imag > 0]
    order = np.argsort(lam.imag)
    lam = lam[order]
    return lam.imag / (2.0 * math.pi), -lam.real


def fit_network_multistart(
    m: Measurement,
    topo: Topology,
    start: NetworkParams,
    spec: FitSpec,
    *,
    what: str,
    rng: np.random.Generator,
    n_starts: int = 6,
    spread: float = 0.08,
    good_chi2_per_dof: float = 2.0,
    max_starts: int = 30,
) -> FitResult:
    """`fit_network` from `start` and from perturbed copies (node frequencies spread by
    ±`spread`, couplings ±`spread`·Ω² with random signs); the lowest χ² wins. After `n_starts`
    starts, further starts are tried (up to `max_starts`) while the best χ²/dof exceeds
    `good_chi2_per_dof`: with couplings of the order of the detuning the χ² surface has local
    minima with some couplings' signs flipped (χ²/dof ≈ 5–15 on the reference bench)."""
    best: FitResult | None = None
    errors: list[str] = []
    for i in range(max_starts):
        if i >= n_starts and best is not None and best.chi2 / best.dof <= good_chi2_per_dof:
            break
        p = start.copy()
        if i > 0:
            w2 = p.omega2_diag
            p.omega2_diag = w2 * (1.0 + spread * rng.uniform(-1, 1, w2.size))
            k = spread * float(np.mean(w2)) * rng.uniform(-1, 1, p.kappa.shape)
            k = np.triu(k, 1)
            p.kappa = np.where(spec.free.get("kappa", np.zeros_like(k, bool)), k + k.T, p.kappa)
            p.kappa = np.triu(p.kappa, 1) + np.triu(p.kappa, 1).T
        try:
            r = fit_network(m, topo, p, spec, what=what)
        except CalibrationError as exc:
            errors.append(str(exc))
            continue
        if best is None or r.chi2 < best.chi2:
            best = r
    if best is None:
        raise CalibrationError(f"{what}: no start converged ({'; '.join(errors[:2])})")
    return best


def statistical_linearisation(
    x: Array, edges: list[tuple[int, int]], nonlinearity: str
) -> tuple[Array, Array]:
    """Drive-level linearisation of the couplings α ρ(x_a) ρ(x_b) along measured node waveforms
    `x` (d, N) (node units, offsets removed): the best linear approximation of the coupling
    force for Gaussian-like signals (Stein/Bussgang) is E[∇f], so the coupling acts as
    α·E[ρ′(x_a)ρ′(x_b)] between a and b and adds α·E[ρ″(x_a)ρ(x_b)] to a's stiffness (and
    symmetrically to b's). Returns (gain (E,), diag (E, 2)); for tanh at ⟨x²⟩ ≲ 1e-3 the gain is
    ≈ 1 − ⟨x_a²⟩ − ⟨x_b²⟩ (a 0.07–0.19 % reduction with the reference bench's calibration
    multisine). Exact for Gaussian signals; a Schroeder multisine is close to it."""
    from physlearn.spec.nonlinearity import get_nonlinearity

    nl = get_nonlinearity(nonlinearity)
    d1, d2, rho = nl.d1(x), nl.d2(x), nl.rho(x)
    gain = np.array([float(np.mean(d1[a] * d1[b])) for a, b in edges])
    diag = np.array(
        [[float(np.mean(d2[a] * rho[b])), float(np.mean(d2[b] * rho[a]))] for a, b in edges]
    ).reshape(len(edges), 2)
    return gain, diag


def tanh_map(volts: Array | float, q: Array) -> Array:
    """κ(V) = a + b tanh((V − c)/w) for map parameters q = (a, b, c, w)."""
    v = np.asarray(volts, dtype=np.float64)
    out: Array = q[0] + q[1] * np.tanh((v - q[2]) / q[3])
    return out


@dataclass
class MapFit:
    """Joint fit of the coupling maps to transfer matrices measured at several biases, with the
    bias-independent node, actuator and sensing terms fitted alongside (shared by all biases).
    `cov` is the covariance of [node parameters in `spec` order, maps.ravel()]."""

    params: NetworkParams
    spec: FitSpec
    maps: Array  # (E, 4): a, b, c, w per edge (κ in 1/s², volts)
    cov: Array
    chi2: float
    dof: int
    scale: float
    #: constant phases (rad) of the `phase_paths` (lock-in paths), after the maps in `cov`
    phases: Array = field(default_factory=lambda: np.zeros(0))
    edges: list[tuple[int, int]] = field(default_factory=list)

    def at_bias(self, volts: float) -> NetworkParams:
        """The small-signal model at DAC bias `volts` (every wired coupling from its map)."""
        p = self.params.copy()
        for e, (a, b) in enumerate(self.edges):
            p.kappa[a, b] = p.kappa[b, a] = float(tanh_map(volts, self.maps[e]))
        return p

    def cov_sigma(self, name: str) -> Array:
        """Standard errors of node-term field `name`, shaped like it (0 where held fixed)."""
        node = FitResult(self.params, self.spec, np.zeros(0), self.cov, self.chi2, self.dof, 1.0)
        return node.sigma_of(name)

    def map_cov(self, edge: int) -> Array:
        i = self.spec.size() + 4 * edge
        out: Array = self.cov[i : i + 4, i : i + 4]
        return out

    def phase_sigma(self) -> Array:
        i = self.cov.shape[0] - self.phases.size
        out: Array = np.sqrt(np.diag(self.cov)[i:])
        return out


def fit_coupling_maps(
    data: list[tuple[float, Measurement]],
    topo: Topology,
    start: NetworkParams,
    spec: FitSpec,
    edges: list[tuple[int, int]],
    map_start: Array,
    *,
    what: str,
    linearisation: list[tuple[Array, Array]] | None = None,
    phase_paths: list[int] | None = None,
    phase_start: Array | None = None,
    max_nfev: int = 200,
) -> MapFit:
    """Weighted least squares of the linear model to every (bias volts, measurement) pair at
    once: the wired couplings follow κ_e(V) = a + b tanh((V − c)/w), the parameters of `spec`
    (node, actuator, sensing terms; `spec` must not free the wired couplings) are shared by all
    biases. Fitting everything together carries the uncertainty of the shared terms, and the
    correlations it induces between biases, into the maps' covariance (a per-bias fit with the
    node terms held fixed does not, and understates the maps' errors several-fold).

    `linearisation` (one per data item, see `statistical_linearisation`): (gain (E,), diag (E, 2))
    — at that measurement's drive level the wired coupling acts as κ·gain between its nodes and
    adds κ·diag to their Ω²_ii, so the maps (and `omega2_diag`) are the bare, small-signal
    values of the Lagrangian rather than the drive-level ones.

    `phase_paths`: sense paths whose transfer carries a further constant phase e^{iφ_p} (a
    lock-in's reference phase), fitted alongside (start `phase_start`, default 0)."""
    if "kappa" in spec.free:
        for a, b in edges:
            if spec.free["kappa"][min(a, b), max(a, b)]:
                raise ValueError(f"{what}: the wired coupling {a}-{b} cannot also be free")
    n_node = spec.size()
    n_edges = len(edges)
    ph_paths = list(phase_paths or [])
    ph0 = np.zeros(len(ph_paths)) if phase_start is None else np.asarray(phase_start, float)
    theta0 = np.concatenate(
        [_pack(start, spec), np.asarray(map_start, dtype=np.float64).ravel(), ph0]
    )
    # phases are scaled by 1 rad, never by their (possibly ≈ 0) start value
    scale_x = np.where(np.abs(theta0) > 0, np.abs(theta0), 1.0)
    scale_x[theta0.size - ph0.size :] = 1.0
    n_maps = n_node + 4 * n_edges
    lin = linearisation or [(np.ones(n_edges), np.zeros((n_edges, 2)))] * len(data)
    if len(lin) != len(data):
        raise ValueError(f"{what}: {len(lin)} linearisations for {len(data)} measurements")
    resid = _map_residual(data, topo, start, spec, edges, lin, ph_paths, scale_x)
    theta, cov, chi2, dof, scale = _solve_scaled(resid, theta0, scale_x, what, max_nfev)
    q = theta[n_node:n_maps].reshape(n_edges, 4).copy()
    return MapFit(
        _unpack(theta[:n_node], start, spec),
        spec,
        q,
        cov,
        chi2,
        dof,
        scale,
        theta[n_maps:].copy(),
        list(edges),
    )


def _map_residual(
    data: list[tuple[float, Measurement]],
    topo: Topology,
    start: NetworkParams,
    spec: FitSpec,
    edges: list[tuple[int, int]],
    lin: list[tuple[Array, Array]],
    ph_paths: list[int],
    scale_x: Array,
) -> Callable[[Array], Array]:
    """The weighted residuals (real parts, then imaginary, per data item) of `fit_coupling_maps`
    as a function of the scaled parameters u = θ / `scale_x`, θ = [node terms in `spec` order,
    maps (E, 4) raveled, phases of `ph_paths`]."""
    n_node = spec.size()
    n_edges = len(edges)
    n_maps = n_node + 4 * n_edges
    # per data item, for each point: the index into the phases (−1: no phase)
    ph_index = [
        np.array([ph_paths.index(int(p)) if int(p) in ph_paths else -1 for p in m.path])
        for _, m in data
    ]

    def params_at(theta: Array, volts: float, item: int) -> NetworkParams:
        p = _unpack(theta[:n_node], start, spec)
        q = theta[n_node:n_maps].reshape(n_edges, 4)
        gain, diag = lin[item]
        for e, (a, b) in enumerate(edges):
            k = float(tanh_map(volts, q[e]))
            p.kappa[a, b] = p.kappa[b, a] = k * gain[e]
            p.omega2_diag[a] += k * diag[e, 0]
            p.omega2_diag[b] += k * diag[e, 1]
        return p

    def resid(u: Array) -> Array:
        theta = u * scale_x
        if np.any(theta[n_node:n_maps].reshape(n_edges, 4)[:, 3] <= 0):
            return np.full(2 * sum(m.h.size for _, m in data), 1e6)
        rot = np.append(np.exp(1j * theta[n_maps:]), 1.0)  # index −1: no phase
        parts = []
        for item, (volts, m) in enumerate(data):
            h = predict(params_at(theta, volts, item), topo, m) * rot[ph_index[item]]
            r = (h - m.h) / m.sigma
            parts += [r.real, r.imag]
        return np.concatenate(parts)

    return resid


def _solve_scaled(
    resid: Callable[[Array], Array], theta0: Array, scale_x: Array, what: str, max_nfev: int
) -> tuple[Array, Array, float, int, float]:
    """Levenberg–Marquardt on the scaled parameters θ / `scale_x` from `theta0`; returns θ, its
    covariance ((JᵀJ)⁻¹ scaled back and by max(1, χ²/dof)), χ², dof and that scale."""
    try:
        sol = least_squares(resid, theta0 / scale_x, method="lm", max_nfev=max_nfev * theta0.size)
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise CalibrationError(f"{what}: the joint map fit failed ({exc})") from exc
    if not sol.success or not np.all(np.isfinite(sol.x)):
        raise CalibrationError(f"{what}: the joint map fit did not converge ({sol.message})")
    n = sol.fun.size
    dof = n - theta0.size
    if dof <= 0:
        raise CalibrationError(f"{what}: {n} data for {theta0.size} parameters; measure more")
    chi2 = float(np.sum(sol.fun**2))
    jtj = sol.jac.T @ sol.jac
    if not np.all(np.isfinite(jtj)) or np.linalg.cond(jtj) > 1e14:
        raise CalibrationError(
            f"{what}: the map parameters are not identifiable from these data; add biases"
        )
    scale = max(1.0, chi2 / dof)
    cov = np.linalg.inv(jtj) * np.outer(scale_x, scale_x) * scale
    theta = sol.x * scale_x
    return theta, cov, chi2, dof, scale
