"""Where a sweep's results go besides its run directory: experiment trackers (`tracking:`:
MLflow, Weights & Biases) and a webhook told when the sweep ends (`notify:`).

Checked before Ray starts: a tracker whose package is missing, or a URL that is not one, is one
problem line (exit 2), never a failure after an hour of training."""

from __future__ import annotations

import importlib.util
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from service.config.blocks import _Strict

# What mlflow.set_tracking_uri takes: a tracking server, a local store, or a database.
MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
EXTRA = "pip install -e '.[tracking]'"  # the optional extra with mlflow and wandb
NOTIFY_EVENTS = ("finished", "failed", "regression")


def _require(module: str) -> None:
    """A tracker's package must be importable (found, not imported: config stays light)."""
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{module} is not installed: {EXTRA}")


class MlflowTracking(_Strict):
    """One MLflow run per trial (Ray's MLflowLoggerCallback): sampled settings as params, every
    epoch's metrics, tags naming the sweep and its run id."""

    tracking_uri: str  # http://127.0.0.1:5000, file:///abs/mlruns, sqlite:///mlflow.db, …
    experiment: str | None = Field(None, min_length=1)  # default: the spec's name

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, uri: str) -> str:
        parts = urlsplit(uri)
        if parts.scheme not in MLFLOW_SCHEMES or (
                parts.scheme in ("http", "https") and not parts.hostname):
            raise ValueError(f"not an MLflow tracking URI: use a URI with scheme "
                             f"{', '.join(MLFLOW_SCHEMES)} (http:// and https:// with a host)")
        return uri

    @model_validator(mode="after")
    def _package(self) -> MlflowTracking:
        _require("mlflow")
        return self


class WandbTracking(_Strict):
    """One W&B run per trial (Ray's WandbLoggerCallback), grouped by the sweep's run id."""

    project: str = Field(min_length=1)
    mode: Literal["online", "offline"] = "online"  # offline: runs kept under dir, sync later
    entity: str | None = None  # a team or user; default: the logged-in user's
    dir: str | None = None  # where offline runs are written; default: the run directory

    @model_validator(mode="after")
    def _package(self) -> WandbTracking:
        _require("wandb")
        return self


class Tracking(_Strict):
    """Experiment trackers every trial also reports to (TensorBoard files are always written)."""

    mlflow: MlflowTracking | None = None
    wandb: WandbTracking | None = None


class Notify(_Strict):
    """A Slack-compatible webhook POSTed when the sweep ends: sweep name, best trial and value,
    report path, exit code. One that cannot be reached is logged and never fails the sweep."""

    webhook: str
    on: list[Literal[NOTIFY_EVENTS]] = Field(default_factory=lambda: list(NOTIFY_EVENTS),
                                             min_length=1)

    @field_validator("webhook")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not a webhook URL: use http:// or https:// with a host")
        return url

    @field_validator("on")
    @classmethod
    def _distinct(cls, on: list[str]) -> list[str]:
        if len(set(on)) != len(on):
            raise ValueError("an event is listed twice")
        return on
