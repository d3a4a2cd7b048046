"""Rendering of benchmark results (rich tables on stdout, and a markdown table for the README)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["markdown_overhead", "render"]


def render(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    m = result["machine"]
    console.print(f"[bold]nanprobe overhead[/] on {m['cpu']} ({m['cores']} cores, {m['threads']} threads), "
                  f"torch {m['torch']}; {result.get('seconds', '?')} s")
    if "overhead" in result:
        table = Table("workload", "phase", "variant", "ms/step", "x bare")
        for r in result["overhead"]:
            table.add_row(r["workload"], r["phase"], r["variant"], f"{r['ms']:.2f}", f"{r['ratio']:.2f}")
        console.print(table)
    if "scaling" in result:
        table = Table("axis", "blocks", "width", "modules", "bare ms", "probe x bare")
        for r in result["scaling"]:
            table.add_row(r["axis"], str(r["layers"]), str(r["width"]), str(r["modules"]), f"{r['bare_ms']:.2f}",
                          f"{r['ratio']:.2f}")
        console.print(table)
    if "diagnosis" in result:
        table = Table("B", "forward passes", "budget 2log2(B)+12", "seconds", "cause")
        for r in result["diagnosis"]:
            table.add_row(str(r["B"]), str(r["forward_passes"]), str(r["budget"]), f"{r['seconds']:.2f}",
                          str(r["cause"]))
        console.print(table)
    if "memory" in result:
        mem = result["memory"]
        console.print(f"memory over {mem['steps']} monitored steps: "
                      + ", ".join(f"{m_['step']}: {m_['rss_mib']} MiB" for m_ in mem["marks"])
                      + f" (growth after warm-up {mem['growth_mib']} MiB)")
        if "probe_marks" in mem:
            console.print(f"memory over {mem['steps']} forward calls under the full probe (ring 256): "
                          f"{mem['probe_marks'][0]['rss_mib']} -> {mem['probe_marks'][-1]['rss_mib']} MiB "
                          f"(growth after warm-up {mem['probe_growth_mib']} MiB), "
                          f"{mem['probe_records_kept']} records kept of {mem['probe_calls']} calls")


def markdown_overhead(result: dict[str, Any]) -> str:
    """The README's table: one row per workload and phase, one column per variant (ratio to bare)."""
    rows = result["overhead"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    if "nanprobe sentinel + history" in variants:  # (train only) next to the plain sentinel
        variants.remove("nanprobe sentinel + history")
        variants.insert(variants.index("nanprobe sentinel") + 1, "nanprobe sentinel + history")
    keys = list(dict.fromkeys((r["workload"], r["phase"]) for r in rows))
    lines = ["| workload | phase | bare ms | " + " | ".join(v for v in variants if v != "bare") + " |",
             "|---|---|---|" + "---|" * (len(variants) - 1)]
    for wl, phase in keys:
        cells = {r["variant"]: r for r in rows if r["workload"] == wl and r["phase"] == phase}
        lines.append(f"| {wl} | {phase} | {cells['bare']['ms']:.2f} | " + " | ".join(
            f"{cells[v]['ratio']:.2f}x" if v in cells else "-" for v in variants if v != "bare") + " |")
    return "\n".join(lines)
