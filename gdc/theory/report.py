"""verify.md from the claim results in verify.json: verdicts first, then the numbers behind each (the claims'
sections are ``gdc.theory.report_convex`` and ``gdc.theory.report_nonconvex``)."""

from gdc.theory.report_convex import lower_bound_section, stability_section
from gdc.theory.report_nonconvex import nonconvex_section
from gdc.theory.tables import table

SECTIONS = {"lower_bound": lower_bound_section, "stability": stability_section, "nonconvex": nonconvex_section}


def render(results: dict) -> str:
    """The whole verify.md for the claims present in ``results`` (claim name -> result with config and command)."""
    out = ["# Theory verification (issue 5)", ""]
    commands = sorted({r["command"] for r in results.values() if r.get("command")})
    out += ["Regenerate (each command rewrites its claims and this file):", "", "```"]
    out += commands + ["```", ""]
    rows = [
        [name, r["claim"], f"**{r['verdict']}**", f"{r['seconds']:.0f} s", r.get("environment", "")]
        for name, r in results.items()
    ]
    out += table(["check", "claim", "verdict", "run time", "environment"], rows)
    for name, r in results.items():
        out += SECTIONS[name](r, r["config"])
    return "\n".join(out) + "\n"
