"""JUnit XML and a Markdown summary of a gate's checks, for CI systems (GitHub Actions and others)."""

from __future__ import annotations

from xml.etree import ElementTree as ET


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
        case = ET.SubElement(suite, "testcase", classname=f"evalsuite.{c['variant']}", name=c["label"])
        if c["status"] == "fail":
            ET.SubElement(case, "failure", message=c["message"]).text = c["message"]
        elif c["status"] == "undecided":
            ET.SubElement(case, "error", message=c["message"]).text = c["message"]
        else:
            ET.SubElement(case, "system-out").text = c["message"]
    for i, e in enumerate(errors):
        case = ET.SubElement(suite, "testcase", classname="evalsuite.gate", name=f"gate inputs {i + 1}")
        ET.SubElement(case, "error", message=e).text = e
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
