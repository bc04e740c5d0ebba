"""The WebApplicationFirewall resource: validation, selection, and the SecLang it becomes."""

from __future__ import annotations

import pytest

from palisade.model import WebApplicationFirewall, load_text
from palisade.waf._config import crs_dir, crs_files, engine_config, select_firewall

HEADER = """apiVersion: palisade.io/v1
kind: WebApplicationFirewall
metadata: {name: NAME, namespace: shop}
"""


def _load(spec: str, name: str = "shop") -> WebApplicationFirewall:
    result = load_text(HEADER.replace("NAME", name) + spec, "waf.yaml")
    assert not result.problems, result.problems
    (resource,) = result.resources
    assert isinstance(resource, WebApplicationFirewall)
    return resource


def test_defaults_follow_what_calico_ships() -> None:
    spec = _load("spec: {}").spec
    assert (spec.mode, spec.paranoia_level) == ("DetectionOnly", 1)
    assert (spec.inbound_anomaly_threshold, spec.outbound_anomaly_threshold) == (5, 4)
    assert spec.selector == "all()"


def test_unquoted_on_and_off_mean_the_modes() -> None:
    assert _load("spec: {mode: On}").spec.mode == "On"
    assert _load("spec: {mode: Off}").spec.mode == "Off"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("spec: {mode: Block}", "spec.mode: "),
        ("spec: {paranoiaLevel: 5}", "spec.paranoiaLevel: "),
        ("spec: {selector: 'app =='}", "spec.selector: "),
        ("spec: {exclusions: [{paths: [/a]}]}", "spec.exclusions[0]: name the rules"),
        ("spec: {exclusions: [{ruleIds: [x1]}]}", "spec.exclusions[0].ruleIds[0]: "),
        ("spec: {exclusions: [{ruleIds: ['9-1']}]}", "spec.exclusions[0].ruleIds[0]: the range"),
        ("spec: {exclusions: [{ruleIds: [1], paths: [api]}]}", "spec.exclusions[0].paths[0]: "),
        ("spec: {exclusions: [{ruleIds: [1], targets: ['ARGS q']}]}", ".targets[0]: "),
        ("spec: {colour: red}", "spec.colour: "),
    ],
)
def test_invalid_settings_name_the_field(spec: str, problem: str) -> None:
    result = load_text(HEADER.replace("NAME", "shop") + spec, "waf.yaml")
    assert not result.resources
    assert any(problem in str(p) for p in result.problems), result.problems


def test_settings_become_seclang() -> None:
    spec = _load(
        """spec:
  mode: On
  paranoiaLevel: 3
  inboundAnomalyThreshold: 10
  exclusions:
  - ruleIds: [942100, '941100-941199']
  - ruleIds: [932100]
    targets: ['ARGS:cmd', 'REQUEST_COOKIES:session']
  - tags: [attack-sqli]
    paths: [/api/search]
  - tags: [attack-xss]
"""
    ).spec
    config = engine_config(spec)
    assert config.before.startswith("SecRuleEngine On\n")
    assert "setvar:tx.blocking_paranoia_level=3" in config.setup
    assert "setvar:tx.inbound_anomaly_score_threshold=10" in config.setup
    assert "setvar:tx.outbound_anomaly_score_threshold=4" in config.setup
    after = config.after.splitlines()
    assert "SecRuleRemoveById 942100" in after
    assert "SecRuleRemoveById 941100-941199" in after
    assert 'SecRuleUpdateTargetById 932100 "!ARGS:cmd"' in after
    assert 'SecRuleUpdateTargetById 932100 "!REQUEST_COOKIES:session"' in after
    assert 'SecRuleRemoveByTag "attack-xss"' in after
    scoped = [line for line in config.before.splitlines() if "@beginsWith /api/search" in line]
    assert len(scoped) == 1 and "ctl:ruleRemoveByTag=attack-sqli" in scoped[0]


def test_the_first_matching_firewall_by_name_protects_a_pod() -> None:
    frontend = _load("spec: {selector: app == 'frontend'}", name="b-frontend")
    everything = _load("spec: {}", name="c-all")
    other = _load("spec: {selector: app == 'frontend', mode: On}", name="a-other")
    other = other.model_copy(
        update={"metadata": other.metadata.model_copy(update={"namespace": "bank"})}
    )
    firewalls = [everything, frontend, other]
    assert select_firewall(firewalls, "shop", {"app": "frontend"}) is frontend
    assert select_firewall(firewalls, "shop", {"app": "db"}) is everything
    assert select_firewall(firewalls, "bank", {"app": "frontend"}) is other
    assert select_firewall(firewalls, "bank", {"app": "db"}) is None


def test_the_crs_is_found_and_ordered() -> None:
    root = crs_dir()
    files = crs_files(root)
    assert files[0].name.startswith("crs-setup.conf")
    names = [f.name for f in files[1:]]
    assert names == sorted(names) and names[0].startswith("REQUEST-901")
    with pytest.raises(FileNotFoundError, match="PALISADE_CRS_DIR"):
        crs_dir(root / "nowhere")
