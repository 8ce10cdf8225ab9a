"""Egress policy as devbox writes it (core/egress.py): entries, squid's configuration, its
log read back, and the settings that choose a policy. No podman: squid's behaviour under
this configuration is tests/test_egress.py's, from inside real containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from devbox.core import egress
from devbox.core.config import load
from devbox.core.egress import Policy, PolicyError, Rule
from devbox.core.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("pypi.org", Rule("pypi.org")),
        ("PyPI.org.", Rule("pypi.org")),
        ("*.githubusercontent.com", Rule("githubusercontent.com", wildcard=True)),
        ("files.pythonhosted.org:443", Rule("files.pythonhosted.org", port=443)),
        ("allowed.test:8443", Rule("allowed.test", port=8443)),
    ],
)
def test_entries_are_names_with_an_optional_port(text: str, rule: Rule) -> None:
    assert Rule.parse(text) == rule
    assert Rule.parse(rule.text()) == rule


@pytest.mark.parametrize(
    "text",
    ["10.0.0.1", "[::1]", "::1", "169.254.169.254:80", "*.com", "a b.org", "evil.org\nhttp_access allow all",
     "x.org:0", "x.org:99999", "-x.org", "", "*."],
)  # fmt: skip
def test_addresses_and_what_is_not_a_name_are_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        Rule.parse(text)


def test_a_rule_matches_names_and_ports_as_squid_is_told_to() -> None:
    exact, wild, port = Rule.parse("pypi.org"), Rule.parse("*.example.com"), Rule.parse("h.test:8443")
    assert exact.matches("pypi.org", 443) and exact.matches("PYPI.org", 80)
    assert not exact.matches("pypi.org", 22) and not exact.matches("evilpypi.org", 443)
    assert not exact.matches("pypi.org.evil.com", 443)
    assert wild.matches("a.example.com", 443) and wild.matches("a.b.example.com", 80)
    assert not wild.matches("example.com", 443) and not wild.matches("badexample.com", 443)
    assert port.matches("h.test", 8443) and not port.matches("h.test", 443)


def test_the_squid_configuration_says_only_what_the_policy_allows() -> None:
    policy = Policy("allow", egress.parse_rules(["allowed.test", "*.example.com", "h.test:8443"]))
    conf = egress.squid_conf(policy, refused=["10.88.0.0/16", "192.168.1.7"], dns=["10.89.9.53"])
    lines = conf.splitlines()
    assert lines[-1] == "http_access deny all"
    allows = [ln for ln in lines if ln.startswith("http_access allow")]
    assert len(allows) == 3 and all(ln.endswith("!devbox_refused") for ln in allows)
    assert "acl devbox_r0 dstdomain -n allowed.test" in lines
    assert r"acl devbox_r1 dstdom_regex -n -i \.example\.com$" in lines
    assert "acl devbox_p2 port 8443" in lines and "acl devbox_p0 port 80 443" in lines
    refused = next(ln for ln in lines if ln.startswith("acl devbox_refused dst "))
    for net in ("169.254.0.0/16", "127.0.0.0/8", "fe80::/10", "10.88.0.0/16", "192.168.1.7"):
        assert net in refused.split()
    # literals are refused before any allow line is read
    assert lines.index("http_access deny devbox_literal") < lines.index(allows[0])
    assert "dns_nameservers 10.89.9.53" in lines
    # nothing cached, nothing but the proxy's port, no helper that needs a privilege
    assert "cache deny all" in lines and "pinger_enable off" in lines and "icp_port 0" in lines
    # a policy with nothing on its list allows nothing
    assert not [ln for ln in egress.squid_conf(Policy("allow"), refused=[]).splitlines() if "http_access allow" in ln]


def test_the_log_is_read_back_and_anything_else_is_ignored() -> None:
    good = "devbox-egress 1796688877.321 TCP_DENIED 403 CONNECT denied.test 443 10.89.2.2"
    c = egress.parse_line(good)
    assert c is not None and c.refused and (c.host, c.port, c.method) == ("denied.test", 443, "CONNECT")
    ok = egress.parse_line("devbox-egress 1796688877.314 TCP_TUNNEL 200 CONNECT allowed.test 443 10.89.2.2")
    assert ok is not None and not ok.refused
    for bad in (
        "2026/12/08 00:08:10| Accepting HTTP Socket connections at conn3",  # squid's own words
        "devbox-egress 1.0 TCP_DENIED 403 GET \x1b[2Jevil 80 10.0.0.2",  # a terminal escape in a host
        "devbox-egress x TCP_DENIED 403 GET h 80 10.0.0.2",
        "devbox-egress 1.0 TCP_DENIED 403 GET h 80",
        "devbox-egress 1.0 TCP_DENIED 403 G3T h 80 10.0.0.2",
    ):
        assert egress.parse_line(bad) is None, bad
    bad = egress.parse_line("devbox-egress 1796696876.308 NONE_NONE 400 CONNECT - - 10.89.0.2")
    assert bad is not None and bad.refused  # a request squid would not read connected nowhere
    t = egress.tally([c, ok, c])
    assert (t.refused, t.seen, t.last) == (2, 3, c)


def test_a_policy_widens_and_narrows_and_survives_its_record(tmp_path: Path) -> None:
    p = Policy("allow", egress.parse_rules(["a.test"]))
    wide = p.widened(["b.test", "a.test"])
    assert [r.text() for r in wide.allow] == ["a.test", "b.test"]
    assert [r.text() for r in wide.narrowed(["a.test"]).allow] == ["b.test"]
    egress.write_record(tmp_path, "c1", wide)
    assert egress.read_record(tmp_path, "c1") == wide
    egress.record_path(tmp_path, "c2").parent.mkdir(exist_ok=True)
    egress.record_path(tmp_path, "c2").write_text('{"mode": "allow", "allow": ["1.2.3.4"]}')
    assert egress.read_record(tmp_path, "c2") is None  # a record that is not a policy is none
    assert not list((tmp_path / "egress").glob("*.tmp*"))


def _repo(tmp_path: Path, toml: str) -> Path:
    (tmp_path / "bootc").mkdir(exist_ok=True)
    (tmp_path / "devbox.toml").write_text(toml)
    return tmp_path


def test_settings_choose_the_defaults_a_careful_user_wants(tmp_path: Path) -> None:
    s = load(_repo(tmp_path, ""), env={})
    assert s.egress.mode == "open"  # a person's start-work shell
    claude = s.agents["claude"]
    assert claude.egress == "allow" and "api.anthropic.com" in claude.allow  # an agent: its endpoints only
    s = load(_repo(tmp_path, '[container]\negress = "allow"\nallow = ["pypi.org"]\negress_dns = ["10.0.0.53"]\n'
                   '[agents.mine]\ncommand = ["mine"]\nallow = ["api.test:8443"]\n'), env={})  # fmt: skip
    assert s.egress == Policy("allow", (Rule("pypi.org"),)) and s.egress_dns == ("10.0.0.53",)
    assert s.agents["mine"].egress == "allow" and s.agents["mine"].allow == ("api.test:8443",)


@pytest.mark.parametrize(
    ("toml", "said"),
    [
        ('[container]\negress = "closed"\n', "container.egress"),
        ('[container]\nallow = ["10.0.0.1"]\n', "is an address"),
        ('[container]\negress_dns = ["dns.example"]\n', "not an IP address"),
        ('[agents.x]\ncommand = ["x"]\negress = "wide"\n', "agents.x.egress"),
        ('[agents.x]\ncommand = ["x"]\nallow = ["bad name"]\n', "not a host name"),
    ],
)
def test_a_policy_that_is_not_one_is_one_line_with_the_fix(tmp_path: Path, toml: str, said: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(_repo(tmp_path, toml), env={})
    assert said in err.value.message and err.value.remedy


def test_a_fenced_vm_without_xsltproc_is_one_line_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """terraform's libvirt provider applies the filter's xslt with xsltproc: without it, vm up
    says so before anything is made (here: a PATH that really has no xsltproc)."""
    import threading

    from devbox.core.errors import ToolMissing
    from devbox.core.events import Reporter
    from devbox.core.ops import vm_egress
    from devbox.core.session import Devbox

    session = Devbox(load(_repo(tmp_path, '[vm]\negress = "allow"\n'), env={}))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolMissing) as err:
        vm_egress.apply(session, "devbox-x", Reporter(lambda e: None, "vm-up"), threading.Event())
    assert "xsltproc" in err.value.message and "apt-get install xsltproc" in err.value.remedy
