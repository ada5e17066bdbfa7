"""The installed probserve version, as every front reports it (HTTP, gRPC, OpenAPI)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("probserve")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
