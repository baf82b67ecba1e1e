"""JUnit XML and a Markdown summary of a gate's checks, for CI systems (GitHub Actions and others)."""

from __future__ import annotations

import re
from xml.etree import ElementTree as ET

# Characters XML 1.0 cannot hold at all (C0 controls other than tab, newline, carriage return; surrogates;
# U+FFFE/U+FFFF): ElementTree writes them as they are and the file no longer parses.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: str) -> str:
    """text with each character XML cannot hold shown as an escape, e.g. \\x07."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))


def render_junit(checks: list[dict], errors: list[str], name: str = "evalsuite gate") -> str:
    """One test case per gated row; failures and undecidable checks carry their message."""
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(checks) + len(errors)),
        failures=str(sum(c["status"] == "fail" for c in checks)),
        errors=str(sum(c["status"] == "undecided" for c in checks) + len(errors)),
    )
    for c in checks:
        label, variant, message = xml_text(c["label"]), xml_text(c["variant"]), xml_text(c["message"])
        case = ET.SubElement(suite, "testcase", classname=f"evalsuite.{variant}", name=label)
        if c["status"] == "fail":
            ET.SubElement(case, "failure", message=message).text = message
        elif c["status"] == "undecided":
            ET.SubElement(case, "error", message=message).text = message
        else:
            ET.SubElement(case, "system-out").text = message
    for i, e in enumerate(errors):
        case = ET.SubElement(suite, "testcase", classname="evalsuite.gate", name=f"gate inputs {i + 1}")
        ET.SubElement(case, "error", message=xml_text(e)).text = xml_text(e)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def render_summary(checks: list[dict], errors: list[str], verdict: str) -> str:
    """A Markdown summary for $GITHUB_STEP_SUMMARY: verdict, then every check."""
    icon = {"pass": "✅", "fail": "❌", "undecided": "⚠️"}
    lines = [f"### evalsuite gate: {verdict}", ""]
    lines += [f"- ⚠️ {e}" for e in errors]
    lines += ["| | check | observed | threshold |", "|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {icon[c['status']]} | {c['label']} | {c['observed']} | {c['threshold']} |")
    return "\n".join(lines) + "\n"
