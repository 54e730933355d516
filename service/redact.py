"""Secrets kept out of results files and the console (the standard library only): a URL's
password, and a webhook URL's path (its secret)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, e.g. postgresql://user:***@host/db."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def redact_webhook(url: str) -> str:
    """A webhook URL's path is its secret (Slack's hooks.slack.com/services/T…/B…/…): keep the
    scheme and host only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/***"
