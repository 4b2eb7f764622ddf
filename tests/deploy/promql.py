"""Where the PromQL of the deployment lives, and a small reader for the names it uses.

Used by the dashboard lint test and by the Prometheus integration test, so both look at
exactly the same expressions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
RULES = REPO / "deploy" / "prometheus" / "rules"

# Grafana's template variables, replaced by something Prometheus accepts.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
}
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*(\w+)\s*\)\s*$")


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from."""

    where: str
    expr: str


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON file by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def load_rule_groups() -> dict[str, list[dict[str, Any]]]:
    """Rule groups of every rule file, by file name."""
    return {p.name: yaml.safe_load(p.read_text())["groups"] for p in sorted(RULES.glob("*.yml"))}


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """All panels, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def dashboard_queries() -> list[Query]:
    """Every target expression of every dashboard panel."""
    out = []
    for name, dashboard in load_dashboards().items():
        for panel in iter_panels(dashboard["panels"]):
            for target in panel.get("targets") or []:
                where = f"{name}: {panel['title']} [{target.get('refId')}]"
                out.append(Query(where, target.get("expr", "")))
    return out


def variable_queries() -> list[tuple[str, str, str]]:
    """(where, metric, label) of every `label_values(metric, label)` template variable."""
    out = []
    for name, dashboard in load_dashboards().items():
        for var in dashboard.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = _LABEL_VALUES.match(query)
            if match is None:
                raise AssertionError(f"{name}: variable {var['name']}: unexpected query {query!r}")
            out.append((f"{name}: ${var['name']}", match.group(1), match.group(2)))
    return out


def rule_queries(kind: str) -> list[Query]:
    """Expressions of every rule of `kind` ("record" or "alert")."""
    out = []
    for name, groups in load_rule_groups().items():
        for group in groups:
            for rule in group["rules"]:
                if kind in rule:
                    out.append(Query(f"{name}: {rule[kind]}", rule["expr"]))
    return out


def recording_rules() -> dict[str, str]:
    """Recorded series name → expression."""
    return {q.where.split(": ", 1)[1]: q.expr for q in rule_queries("record")}


def substitute(expr: str) -> str:
    """A dashboard expression as Prometheus would get it with every variable set to All."""
    for name, value in SUBSTITUTIONS.items():
        expr = expr.replace(name, value)
    return _VARIABLE.sub(".*", expr)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])\s*(\()?")
_KEYWORDS = frozenset(
    {
        *("by", "without", "on", "ignoring", "group_left", "group_right"),
        *("and", "or", "unless", "bool", "offset", "inf", "nan", "le"),
    }
)


def _strip(expr: str) -> str:
    expr = substitute(expr)
    expr = _STRING.sub('""', expr)
    return _RANGE.sub("", expr)


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (function names and label names excluded)."""
    text = _GROUPING.sub(" ", _strip(expr))
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched in its braces) for every selector with a name."""
    out = []
    for match in _SELECTOR.finditer(_strip(expr)):
        if match.group(1):
            labels = {
                part.split("=")[0].split("!")[0].strip()
                for part in match.group(2).split(",")
                if part.strip()
            }
            out.append((match.group(1), labels))
    return out


def grouping_labels(expr: str) -> set[str]:
    """Labels named in every `by (...)` clause of an expression."""
    labels: set[str] = set()
    for match in _GROUPING.finditer(_strip(expr)):
        if match.group(1) == "by":
            labels |= {label.strip() for label in match.group(2).split(",") if label.strip()}
    return labels
