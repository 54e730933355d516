"""Security promises of docs/security.md, checked: the Ray we start keeps its dashboard on
loopback and its token authentication on; checkpoints load with weights_only; YAML is read
with a safe loader only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "service").rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py"))


def _calls(name: str) -> list[tuple[Path, ast.Call]]:
    """Every call of `<something>.name(...)` or `name(...)` in our sources."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                if (isinstance(f, ast.Attribute) and f.attr == name) or (
                        isinstance(f, ast.Name) and f.id == name):
                    found.append((path, node))
    return found


def test_every_torch_load_is_weights_only():
    loads = [(p, c) for p, c in _calls("load") if isinstance(c.func, ast.Attribute)
             and isinstance(c.func.value, ast.Name) and c.func.value.id == "torch"]
    assert loads, "expected torch.load calls to check"
    for path, call in loads:
        kw = {k.arg: k.value for k in call.keywords}
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw[
            "weights_only"].value is True, f"{path}:{call.lineno} torch.load without weights_only"


def test_yaml_is_only_read_with_safe_loaders():
    import yaml

    from service.config import yamlfile as specyaml

    for path, call in _calls("load"):
        if isinstance(call.func, ast.Attribute) and getattr(call.func.value, "id", "") == "yaml":
            kw = {k.arg: k.value for k in call.keywords}
            loader = kw.get("Loader")
            assert isinstance(loader, ast.Name), f"{path}:{call.lineno} yaml.load without Loader"
            assert issubclass(getattr(specyaml, loader.id), yaml.SafeLoader)
    assert not _calls("unsafe_load") and not _calls("full_load")


@pytest.mark.slow
def test_embedded_ray_keeps_the_dashboard_on_loopback_and_token_auth_on():
    # The same start_ray the CLI uses, in a fresh interpreter: where does the dashboard listen,
    # and does its job API answer a request that carries no token?
    code = """
import json, urllib.error, urllib.request
import ray
from service.tune.runtime import start_ray
start_ray(None, False)
try:
    url = ray._private.worker.get_dashboard_url()
    try:
        status = urllib.request.urlopen(f"http://{url}/api/jobs/", timeout=30).status
    except urllib.error.HTTPError as err:
        status = err.code
    port = int(url.rsplit(":", 1)[1])
    listening = []  # local addresses of sockets listening on the dashboard's port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                listening.append(local.rsplit(":", 1)[0])
    print(json.dumps({"url": url, "status": status, "listening": listening}))
finally:
    ray.shutdown()
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    host = seen["url"].rsplit(":", 1)[0]
    assert host in ("127.0.0.1", "localhost"), seen
    # The socket itself, as the kernel lists it: 127.0.0.1 (0100007F), never 0.0.0.0 / [::].
    assert seen["listening"] and set(seen["listening"]) == {"0100007F"}, seen
    assert seen["status"] in (401, 403), seen  # no token, no jobs


def test_summary_never_records_a_tracking_password_or_a_webhook_secret():
    pytest.importorskip("mlflow", reason="the tracking extra: pip install -e '.[tracking]'")
    from service.config.spec import parse_spec
    from service.tune.console import dashboard_commands
    from service.tune.summary import redacted_spec

    spec = parse_spec({
        "name": "s", "model": {"family": "lenet5"},
        "searcher": {"storage": "postgresql://cnn:pg-s3cret@db.internal/studies"},
        "tracking": {"mlflow": {"tracking_uri": "postgresql://ml:ml-s3cret@db.internal/mlflow"}},
        "notify": {"webhook": "https://hooks.slack.com/services/T000/B000/XXXXSECRET"}})
    dump = redacted_spec(spec)
    assert not any(s in str(dump) for s in ("pg-s3cret", "ml-s3cret", "XXXXSECRET", "T000"))
    assert dump["tracking"]["mlflow"]["tracking_uri"] == "postgresql://ml:***@db.internal/mlflow"
    assert dump["notify"]["webhook"] == "https://hooks.slack.com/***"
    # The command printed at the end of a run, to open the study, is redacted as well.
    assert dashboard_commands(spec, "/tmp/run") == [
        "optuna-dashboard 'postgresql://cnn:***@db.internal/studies'"]
