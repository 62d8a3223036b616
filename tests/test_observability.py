"""deploy/'s alert rules and Grafana dashboard: every expression is valid PromQL, and every metric
it names is one a running gateway serves (a renamed metric cannot silently blind an alert)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import promql_parser
import pytest
import yaml

from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.deploy_support import DEPLOY

# The gateway's own series; `up` and `time()` are Prometheus's.
_METRIC = re.compile(r"\b(?:dutylink|grpc_server|process|python)_[a-z_]+\b")


def expressions() -> dict[str, str]:
    """Each alert's and each dashboard panel's expression, by where it is."""
    found: dict[str, str] = {}
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yaml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            found[f"alert {rule['alert']}"] = rule["expr"]
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    return found


def test_every_expression_is_valid_promql() -> None:
    found = expressions()
    assert len(found) >= 20
    for where, expr in found.items():
        try:
            promql_parser.parse(expr)
        except ValueError as error:
            pytest.fail(f"{where}: {error}: {expr}")


def test_the_alerts_cover_what_operators_must_hear_of() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yaml").read_text(encoding="utf-8"))
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    for watched in (
        "up{",
        "dutylink_serving",
        "dutylink_audit_append_failures_total",
        "dutylink_audit_checkpoint_age_seconds",
        "dutylink_subscription_pending",
        "dutylink_dead_letters_total",
        "dutylink_certificate_expiry_timestamp_seconds",
    ):
        assert any(watched in rule["expr"] for rule in alerts.values()), watched
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


async def test_every_metric_the_alerts_and_dashboard_name_is_served(
    nats_url: str, tmp_path: Path
) -> None:
    config = config_for_tests(
        gateway={"metrics_listen": "127.0.0.1:0"}, nats={"data_dir": str(tmp_path)}
    )
    async with gateway_for_tests(nats_url, config) as gateway:
        url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            text = await response.text()
    # Every family is declared (HELP) even before its first sample; its series add suffixes.
    families = set(re.findall(r"^# HELP (\S+) ", text, re.MULTILINE))
    served = families | {
        f"{f}{s}" for f in families for s in ("_total", "_bucket", "_count", "_sum")
    }
    for where, expr in expressions().items():
        for name in _METRIC.findall(expr):
            assert name in served, f"{where} names {name}, which the gateway does not serve"
