"""Grafana dashboards and Prometheus rules: structure, and every name they use exists."""

from __future__ import annotations

import pytest
import yaml
from prometheus_client import Metric

from gateway.metrics import Metrics
from tests.deploy import promql

PROVISIONING = promql.REPO / "deploy" / "grafana" / "provisioning"
# Labels Prometheus adds to every scraped series, and the histogram bucket bound.
TARGET_LABELS = frozenset({"job", "instance"})
# Series that come from Prometheus itself rather than the gateway.
PROMETHEUS_SERIES = {"up": frozenset({"job", "instance"})}


def _sample_names(family: Metric) -> list[str]:
    if family.type == "counter":
        return [family.name + "_total"]
    if family.type == "histogram":
        return [family.name + suffix for suffix in ("_bucket", "_sum", "_count")]
    return [family.name]


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name the gateway can export → its label names (incl. target labels)."""
    metrics = Metrics()
    out: dict[str, frozenset[str]] = {}
    for family in metrics.registry.collect():
        # An unlabelled registry collects no samples; read label names from the instrument.
        instrument = next(
            value
            for value in vars(metrics).values()
            if getattr(value, "_name", None) in (family.name, family.name + "_total")
        )
        labels = frozenset(instrument._labelnames) | TARGET_LABELS
        for name in _sample_names(family):
            out[name] = labels | ({"le"} if name.endswith("_bucket") else frozenset())
    return out


def known_series() -> dict[str, frozenset[str]]:
    """Gateway series, Prometheus' own, and recording-rule outputs with their labels."""
    known = {**exported_series(), **PROMETHEUS_SERIES}
    for name, expr in promql.recording_rules().items():
        known[name] = frozenset(promql.grouping_labels(expr) - {"le"})
    return known


def test_the_reader_finds_names_and_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, model) (rate(gateway_x_bucket{team=~"$team", '
        'tier!="a,b"}[$__rate_interval]))) / on (job) group_left job:y:rate5m or vector(0)'
    )
    assert promql.metric_names(expr) == {"gateway_x_bucket", "job:y:rate5m"}
    assert promql.selector_labels(expr) == [("gateway_x_bucket", {"team", "tier"})]
    assert promql.grouping_labels(expr) == {"le", "model"}
    assert promql.substitute('rate(x{a=~"$team"}[$__rate_interval])') == 'rate(x{a=~".*"}[1m])'


def test_metrics_registry_is_read() -> None:
    series = exported_series()
    assert "gateway_requests_total" in series
    assert "gateway_request_duration_seconds_bucket" in series
    assert "le" in series["gateway_request_duration_seconds_bucket"]
    assert {"endpoint", "model", "backend", "tier", "status"} < series["gateway_requests_total"]


def _datasource_uid() -> str:
    data = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = data["datasources"]
    assert source["type"] == "prometheus"
    uid: str = source["uid"]
    return uid


def test_provisioning_points_at_the_dashboards() -> None:
    data = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


DASHBOARDS = promql.load_dashboards()


def test_the_dashboards_exist() -> None:
    titles = {d["title"] for d in DASHBOARDS.values()}
    assert titles == {"Gateway / Overview", "Gateway / Cost & routing", "Gateway / Routing quality"}
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure(name: str) -> None:
    dashboard = DASHBOARDS[name]
    uid = _datasource_uid()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    panels = list(promql.iter_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        where = f"{name}: {panel.get('title')}"
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("h", "w", "x", "y")), where
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, where
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{where}: overlaps another panel"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, where
        targets = panel.get("targets") or []
        assert targets, f"{where}: no targets"
        ref_ids = [t["refId"] for t in targets]
        assert len(set(ref_ids)) == len(ref_ids), where
        for target in targets:
            assert target["expr"].strip(), f"{where}: empty expr"
            assert target["datasource"]["uid"] == uid, where


@pytest.mark.parametrize(
    ("name", "variables"),
    [
        ("overview.json", {"model", "backend"}),
        ("cost-routing.json", {"team", "model", "backend"}),
        ("routing-quality.json", {"model"}),
    ],
)
def test_template_variables(name: str, variables: set[str]) -> None:
    defined = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    assert set(defined) == variables
    for var in defined.values():
        assert var["datasource"]["uid"] == _datasource_uid()
        assert var["includeAll"] and var["allValue"] == ".*"
    used = " ".join(q.expr for q in promql.dashboard_queries() if q.where.startswith(name))
    for variable in variables:
        assert f"${variable}" in used, f"{name}: ${variable} is defined but never used"


def test_variables_use_existing_labels() -> None:
    known = known_series()
    found = promql.variable_queries()
    assert found
    for where, metric, label in found:
        assert metric in known, f"{where}: unknown metric {metric}"
        assert label in known[metric], f"{where}: {metric} has no label {label}"


def _all_queries() -> list[promql.Query]:
    return promql.dashboard_queries() + promql.rule_queries("record") + promql.rule_queries("alert")


@pytest.mark.parametrize("query", _all_queries(), ids=lambda q: q.where)
def test_every_name_exists(query: promql.Query) -> None:
    known = known_series()
    names = promql.metric_names(query.expr)
    assert names, f"{query.where}: no metric found in {query.expr!r}"
    for name in names:
        assert name in known, f"{query.where}: {name} is neither a gateway metric nor a rule"
    for name, labels in promql.selector_labels(query.expr):
        unknown = labels - known[name]
        assert not unknown, f"{query.where}: {name} has no label(s) {sorted(unknown)}"


def test_every_metric_is_on_a_dashboard_or_in_a_rule() -> None:
    """A metric nobody looks at is either missing from the dashboards or not needed."""
    used: set[str] = set()
    rules = promql.recording_rules()
    for query in _all_queries():
        for name in promql.metric_names(query.expr):
            used |= promql.metric_names(rules[name]) if name in rules else {name}
    families = {n.removesuffix("_bucket") for n in used}
    # Not charted: policy reloads (rare events, visible in the logs and in build info).
    not_charted = {"gateway_policy_reloads_total"}
    missing = []
    for name in exported_series():
        base = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        if name in not_charted or name.endswith(("_sum", "_count")):
            continue
        if name not in used and base not in families:
            missing.append(name)
    assert not missing, f"metrics on no dashboard and in no rule: {missing}"


def test_docs_describe_every_metric() -> None:
    text = (promql.REPO / "docs" / "metrics.md").read_text()
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in text, f"docs/metrics.md does not describe {name}"


def test_panels_have_titles_and_descriptions() -> None:
    for name, dashboard in DASHBOARDS.items():
        for panel in promql.iter_panels(dashboard["panels"]):
            if panel["type"] == "row":
                continue
            assert panel["title"].strip(), name
            assert panel.get("description", "").strip(), f"{name}: {panel['title']}"
