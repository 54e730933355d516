"""Where a sweep's results go besides its run directory: experiment trackers (`tracking:`:
MLflow, Weights & Biases) and a webhook told when the sweep ends (`notify:`).

Checked before Ray starts: a tracker whose package is missing, or a URL that is not one, is one
problem line (exit 2), never a failure after an hour of training."""

from __future__ import annotations

import importlib.util
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from service.config.base import Strict

# What mlflow.set_tracking_uri takes: a tracking server, a local store, or a database.
MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
EXTRA = "pip install -e '.[tracking]'"  # the optional extra with mlflow and wandb
NOTIFY_EVENTS = ("finished", "failed", "regression")


def _require(module: str) -> None:
    """A tracker's package must be importable (found, not imported: config stays light)."""
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{module} is not installed: {EXTRA}")


class MlflowTracking(Strict):
    """One MLflow run per trial (Ray's MLflowLoggerCallback): sampled settings as params, every
    epoch's metrics, tags naming the sweep and its run id."""

    tracking_uri: str
    """The MLflow tracking URI: http://127.0.0.1:5000, file:///abs/mlruns,
    sqlite:///mlflow.db, … (schemes http, https, file, sqlite, postgresql, mysql, mssql,
    databricks)."""
    experiment: str | None = Field(None, min_length=1)
    """The MLflow experiment the runs go to; null: the spec's name."""

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


class WandbTracking(Strict):
    """One W&B run per trial (Ray's WandbLoggerCallback), grouped by the sweep's run id."""

    project: str = Field(min_length=1)
    """The W&B project the runs go to."""
    mode: Literal["online", "offline"] = "online"
    """online: runs are sent as they go; offline: runs kept under dir, to sync later."""
    entity: str | None = None
    """The W&B team or user; null: the logged-in user."""
    dir: str | None = None
    """Where W&B writes its runs (offline ones wait there to be synced); null: the run
    directory."""

    @model_validator(mode="after")
    def _package(self) -> WandbTracking:
        _require("wandb")
        return self


class Tracking(Strict):
    """Experiment trackers every trial also reports to (TensorBoard files are always written)."""

    mlflow: MlflowTracking | None = None
    """One MLflow run per trial; null: none."""
    wandb: WandbTracking | None = None
    """One W&B run per trial; null: none."""


class Notify(Strict):
    """A Slack-compatible webhook POSTed when the sweep ends: sweep name, best trial and value,
    report path, exit code. One that cannot be reached is logged and never fails the sweep."""

    webhook: str
    """The http:// or https:// URL POSTed to."""
    on: list[Literal[NOTIFY_EVENTS]] = Field(default_factory=lambda: list(NOTIFY_EVENTS),
                                             min_length=1)
    """Events that POST, each listed once: finished (exit 0), failed (any other ending),
    regression (the nightly's); default: all three."""

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
