"""The scientist's answer on the session screen: pores per nucleus, envelope µm², density and its
interval, beside the generator's truth when there is one, and where the numbers came from."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from sessions.measure import match_truth


def answer_renderable(answer: dict | None):
    if not answer:
        return Text("No measurement yet: train the envelope and the pores, predict, then "
                    "M (Measure pores) or `fibtui measure`.", style="dim")
    r = answer["readout"]
    truth = answer.get("truth")
    matched = match_truth(r, truth) if truth else [None] * len(r["nuclei"])
    t = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for c in ("nucleus", "pores", "envelope µm²", "density /µm²", "95 %", *(("truth",) if truth else ())):
        t.add_column(c, justify="right" if c != "truth" else "left")
    for n, tr in zip(r["nuclei"], matched):
        warn = "⚠ " if n["warnings"] else ""
        row = [f"{warn}{n['nucleus']}" + (" (partial)" if n["partial"] else ""), str(n["pores"]),
               f"{n['envelope_um2']:.1f}", f"{n['density_per_um2']:.2f}", f"{n['ci95'][0]:.2f}–{n['ci95'][1]:.2f}"]
        if truth:
            row.append(f"{tr['pore_count']} pores, {tr['pore_density_per_um2']:.2f} /µm²" if tr else "")
        t.add_row(*row)
    lines = [t]
    for role, p in answer.get("provenance", {}).items():
        src = p.get("labels") or f"{p['target']}: round {p['round']}, {p['predict_job']} (model {p['train_job']})"
        lines.append(Text(f"{role}: {src}", style="dim", no_wrap=True, overflow="ellipsis"))
    for n in r["nuclei"]:
        for w in n["warnings"]:
            if not w.startswith("partly imaged"):
                lines.append(Text(f"⚠ nucleus {n['nucleus']}: {w}", style="bold yellow"))
    return Group(*lines)


class AnswerPanel(Static):
    """Feed it `show(answer)` with `sessions.measure.latest(session)`."""

    def __init__(self, **kwargs):
        super().__init__(answer_renderable(None), **kwargs)
        self._last = object()

    def show(self, answer: dict | None) -> None:
        if answer == self._last:
            return
        self._last = answer
        self.update(answer_renderable(answer))
        self.border_title = f"Answer · {answer['job']}" if answer else "Answer"
