"""One error tree for all of gpuyield.

::

    GpuyieldError
    ├── ConfigError            bad user input: a config, flag, trace or request (CLI exit 2, HTTP 400)
    │   ├── CatalogError       unknown or malformed GPU / model / price entry
    │   └── WorkloadError      a trace or workload description that cannot be read
    ├── InfeasiblePlanError    no deployment meets the constraints (exit 2 with the reasons)
    ├── DoesNotFitError        a model does not fit in the memory of the chosen GPUs
    ├── TelemetryError         metrics that cannot be read or joined
    └── BackendError           an engine replica failed or answered badly (HTTP 502/503)

Core code raises these and never calls ``sys.exit``; edges map them to exit codes and HTTP statuses.
Every message names the offending field, file or value and what was expected, in one line.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CatalogError",
    "ConfigError",
    "DoesNotFitError",
    "GpuyieldError",
    "InfeasiblePlanError",
    "TelemetryError",
    "WorkloadError",
]


class GpuyieldError(Exception):
    """Root of every error gpuyield raises on purpose."""


class ConfigError(GpuyieldError):
    """Bad user input (a config file, a flag, a request). Maps to exit code 2."""


class CatalogError(ConfigError):
    """Unknown or malformed catalogue entry (GPU, model, price)."""


class WorkloadError(ConfigError):
    """A trace or workload description that cannot be read."""


class InfeasiblePlanError(GpuyieldError):
    """No candidate deployment meets the constraints."""


class DoesNotFitError(GpuyieldError):
    """A model (weights + minimum KV) does not fit in the chosen accelerators' memory."""


class TelemetryError(GpuyieldError):
    """Metrics that cannot be read, parsed or joined."""


class BackendError(GpuyieldError):
    """An engine replica failed or answered badly."""
