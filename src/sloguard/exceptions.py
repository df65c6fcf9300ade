"""Every exception sloguard raises, in one place."""

from __future__ import annotations


class SloguardError(Exception):
    """Base class of sloguard's own errors."""


class ConfigurationError(SloguardError, ValueError):
    """An option or a configuration file is invalid."""


class InvalidIdempotencyKey(SloguardError, ValueError):
    """The ``Idempotency-Key`` header is not a valid key; answered with 400."""
