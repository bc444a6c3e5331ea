"""The cells and tables of verify.md: number formatting, the Markdown table, the eps-sweep table of claims 1 and 3."""

import math


def fmt(x, digits: int = 3) -> str:
    """A cell: "-" for None, yes/no for bools, nan/inf, scientific notation for tiny or huge floats."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf"
        if x != 0 and (abs(x) < 10 ** (-digits) or abs(x) >= 1e5):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}f}"
    return str(x)


def table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table (every cell through ``fmt``) and a blank line."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return out + [""]


def sweep_table(rows: list[dict], measure: str, hysteresis: float) -> list[str]:
    """One row per eps setting: ``measure``'s statistics with a single threshold and with ``hysteresis``."""
    single = {(r["kind"], r["value"]): r for r in rows if r["hysteresis"] == 1.0}
    hyst = {(r["kind"], r["value"]): r for r in rows if r["hysteresis"] == hysteresis}
    out = []
    for key, r in single.items():
        h = hyst.get(key, {})
        hm = h.get(measure, {})
        out.append(
            [
                key[0],
                fmt(key[1], 2) if key[0] == "absolute" else f"q{key[1]:g}",
                r["frac_m_pos"],
                r[measure]["spearman"],
                r[measure]["c_min_scaled"],
                r[measure]["violation"],
                r[measure]["holds"],
                h.get("frac_m_pos"),
                hm.get("spearman"),
                hm.get("violation"),
                hm.get("holds"),
                r.get("flagged_in_top"),
            ]
        )
    header = [
        "eps kind",
        "eps",
        "m>0",
        "Spearman",
        "C_min (scaled)",
        "violating",
        "holds",
        f"m>0 (hyst x{hysteresis:g})",
        "Spearman (hyst)",
        "violating (hyst)",
        "holds (hyst)",
        "flipped in top 5% m",
    ]
    return table(header, out)


def span(values: list[float]) -> str:
    """ "min .. max" of the finite values, "-" if none."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    return f"{fmt(min(values))} .. {fmt(max(values))}" if values else "-"
