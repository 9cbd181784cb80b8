"""The drivers' registry: instrument kind (as in a bench file) → (config model, driver class).

`make_driver` is the one place a driver is built from a bench file's instrument entry, for the
bench system and for calibration alike: the resource (a session may override the file's), the
backend (pyserial only for ``ASRL`` resources when the file asks for it), the timeout, the
per-kind transport defaults the driver declares (`TRANSPORT_DEFAULTS`: the SR830's 9600 baud
and CR terminations), the output limits of output instruments and the DAC's safe voltage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from physlearn.drivers.keysight33500b import Keysight33500B, Keysight33500BConfig
from physlearn.drivers.link import TransportSettings
from physlearn.drivers.qdac2 import Qdac2, Qdac2Config
from physlearn.drivers.rigol_ds1000z import RigolDs1000z, RigolDs1000zConfig
from physlearn.drivers.scpi_instrument import ScpiInstrument, ScpiInstrumentConfig
from physlearn.drivers.srs_lockin import Sr830, Sr830Config, Sr860, Sr860Config
from physlearn.errors import ConfigError
from physlearn.spec.bench import InstrumentConfig
from physlearn.spec.limits import OutputLimits

__all__ = ["REGISTRY", "DriverEntry", "make_driver", "transport_settings"]


@dataclass(frozen=True)
class DriverEntry:
    """How to build the driver of one instrument kind."""

    config: type[ScpiInstrumentConfig]
    driver: type[ScpiInstrument]


#: Every instrument kind a bench file may name.
REGISTRY: dict[str, DriverEntry] = {
    "keysight33500b": DriverEntry(Keysight33500BConfig, Keysight33500B),
    "qdac2": DriverEntry(Qdac2Config, Qdac2),
    "rigol_ds1000z": DriverEntry(RigolDs1000zConfig, RigolDs1000z),
    "sr830": DriverEntry(Sr830Config, Sr830),
    "sr860": DriverEntry(Sr860Config, Sr860),
}


def transport_settings(
    name: str, inst: InstrumentConfig, resource: str | None
) -> TransportSettings:
    """The transport of instrument ``name``: ``resource`` (else the file's), backend, timeout and
    the driver's per-kind defaults. ConfigError when no resource is known."""
    res = resource or inst.resource
    if not res:
        raise ConfigError(f"instruments.{name}.resource: no VISA resource for {name}")
    entry = _entry(name, inst)
    return TransportSettings(
        resource=res,
        backend=inst.backend if res.upper().startswith("ASRL") else "pyvisa",
        timeout_s=inst.timeout_s,
        **entry.driver.TRANSPORT_DEFAULTS,
    )


def make_driver(
    name: str,
    inst: InstrumentConfig,
    resource: str | None = None,
    *,
    limits: OutputLimits | None = None,
    safe_voltage_v: float | None = None,
) -> ScpiInstrument:
    """The driver of bench-file instrument ``name`` (not connected). Output instruments need
    ``limits`` (the bench file's); ``safe_voltage_v`` sets a DAC's safe state (default 0 V)."""
    entry = _entry(name, inst)
    fields = entry.config.model_fields
    kwargs: dict[str, Any] = {"name": name, "transport": transport_settings(name, inst, resource)}
    if "limits" in fields:
        if limits is None:
            raise ConfigError(f"instruments.{name}: a {inst.kind} needs output limits")
        kwargs["limits"] = limits
    if safe_voltage_v is not None and "safe_voltage_v" in fields:
        kwargs["safe_voltage_v"] = safe_voltage_v
    return entry.driver(entry.config(**kwargs))


def _entry(name: str, inst: InstrumentConfig) -> DriverEntry:
    entry = REGISTRY.get(inst.kind)
    if entry is None:
        raise ConfigError(f"instruments.{name}.kind: no driver for {inst.kind!r}")
    return entry
