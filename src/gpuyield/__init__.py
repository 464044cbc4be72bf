"""gpuyield: the optimisation layer for self-hosted LLM inference fleets.

One fleet model (catalogues, performance model, engine model, policies) and three faces:
``baseline`` (measure), ``simulate``/``plan`` (model and decide) and ``serve`` (run).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpuyield")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
