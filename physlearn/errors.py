"""The one exception hierarchy of physlearn; every error raised on purpose derives from it."""

from __future__ import annotations

import copy


class PhyslearnError(Exception):
    """Root of every error physlearn raises on purpose."""


class ConfigError(PhyslearnError, ValueError):
    """A configuration (spec, TOML file, CLI option) is invalid; the message names the field."""


class SolverError(PhyslearnError):
    """A numerical solver failed."""


def _every_failing(sample: int | None, samples: tuple[int, ...] | None) -> tuple[int, ...]:
    """Every failing sample: ``samples`` when the solver knows them, else ``(sample,)`` or ()."""
    if samples is not None:
        return samples
    return () if sample is None else (sample,)


class SteadyStateError(SolverError):
    """The periodic steady-state (or boundary-value) solver did not converge.

    Attributes:
        sample: index in the batch of the first failing sample (or None).
        residual: its residual (max norm of the equations of motion).
        samples: indices of every failing sample when the solver knows them (else ``(sample,)``
            or empty), so that a caller can set them all aside at once.
    """

    def __init__(
        self,
        message: str,
        *,
        sample: int | None = None,
        residual: float = float("nan"),
        samples: tuple[int, ...] | None = None,
    ):
        super().__init__(message)
        self.sample = sample
        self.residual = residual
        self.samples = _every_failing(sample, samples)


class UnstableOrbitError(SolverError):
    """A converged periodic orbit is not attracting (a Floquet multiplier has modulus > 1).

    No bench can settle on such an orbit, so it must never be used as a steady state.
    ``sample``, ``multiplier``: the first such sample and its multiplier's modulus; ``samples``:
    every such sample when known.
    """

    def __init__(
        self,
        message: str,
        *,
        sample: int | None = None,
        multiplier: float = float("nan"),
        samples: tuple[int, ...] | None = None,
    ):
        super().__init__(message)
        self.sample = sample
        self.multiplier = multiplier
        self.samples = _every_failing(sample, samples)


def in_batch(err: SolverError, index: tuple[int, ...]) -> SolverError:
    """``err`` raised by a solve of the sub-batch ``index`` (its batch indices, in order), with
    its failing samples renamed to batch indices: a copy of the same type whose ``sample`` and
    ``samples`` index the batch (every sample of a one-sample sub-batch) and whose message says so.
    A caller that sets failing samples aside must never be handed sub-batch indices."""
    sub = tuple(getattr(err, "samples", ()) or ())
    if not sub and len(index) == 1:
        sub = (0,)
    mapped = tuple(index[j] for j in sub if 0 <= j < len(index))
    new = copy.copy(err)
    if mapped:
        new.args = (f"{err} [batch sample(s) {', '.join(map(str, mapped))}]",)
    new.sample = mapped[0] if mapped else None  # type: ignore[attr-defined]
    new.samples = mapped  # type: ignore[attr-defined]
    return new


class GradientError(PhyslearnError):
    """A gradient estimate is unusable (non-finite, or its preconditions do not hold)."""


class InstrumentError(PhyslearnError):
    """An instrument, its driver or its transport failed."""


class LimitError(InstrumentError, ValueError):
    """A value was refused before any write because it is outside a configured limit or not finite."""


class SafetyError(PhyslearnError):
    """A safety interlock tripped; the bench has been (or is being) put in its safe state."""


class CalibrationError(PhyslearnError):
    """A calibration routine failed, or a calibration file does not fit the bench."""


class InstrumentConnectionError(InstrumentError):
    """An instrument's resource cannot be opened (unknown resource, closed port, missing pty)."""


class ConnectionLostError(InstrumentConnectionError):
    """An open connection to an instrument dropped and could not be re-established in time."""


class InstrumentTimeoutError(InstrumentError, TimeoutError):
    """An instrument did not answer within the configured timeout."""


class InstrumentProtocolError(InstrumentError):
    """An instrument's reply is malformed: garbled, truncated, or a bad binary-block header."""


class InstrumentCommandError(InstrumentError):
    """The instrument reported an error (error queue) after a command.

    Attributes:
        code: the instrument's error code; error_message: its error text;
        command: the command that caused it; resource: the instrument's resource string.
    """

    def __init__(self, message: str, *, code: int, error_message: str, command: str, resource: str):
        super().__init__(message)
        self.code = code
        self.error_message = error_message
        self.command = command
        self.resource = resource
