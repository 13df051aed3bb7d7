"""How the session screen's rows and lines look, and how its lists are kept in step without flicker.

Pure functions from session rows to Rich text (so they are tested and reused, e.g. by the timeline
screen), and the two sync helpers that update a DataTable or an OptionList in place, keeping the
curator's selection across refreshes.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, OptionList, Static
from textual.widgets.option_list import Option

STATE_STYLE = {"COMPLETED": "green", "RUNNING": "yellow", "PENDING": "cyan", "CANCELLED": "dim"}
SHORT_STATE = {"COMPLETED": "done", "RUNNING": "running", "PENDING": "queued", "CANCELLED": "cancelled"}


def local_time(stamp: str | None) -> str:
    """Session times are UTC; curators read their own clock."""
    if not stamp:
        return ""
    return datetime.fromisoformat(stamp).astimezone().strftime("%m-%d %H:%M")


def state_text(state: str | None, short: bool = False) -> Text:
    if state is None:
        return Text("—", style="dim")
    label = SHORT_STATE.get(state, state) if short else state
    return Text(label, style=STATE_STYLE.get(state, "bold red"))


def progress_text(job: dict, width: int = 8) -> Text:
    if job["state"] == "PENDING" or job["progress"] is None:
        return Text("—", style="dim")
    p = max(0.0, min(1.0, job["progress"]))
    full = round(p * width)
    return Text.assemble(("█" * full, STATE_STYLE.get(job["state"], "red")), ("░" * (width - full), "dim"),
                         f" {p:4.0%}")


def round_cells(r: dict) -> list:
    return [str(r["n"]), r["target"] or "—", r.get("started_from") or "—", str(r["crops"]),
            *(state_text(r[k]["state"] if r[k] else None, short=True) for k in ("train", "predict", "evaluate"))]


def job_cells(j: dict) -> list:
    gpu_h = j.get("gpu_hours")
    message = j["message"] or ""
    if j.get("resumable") is not None:
        message = Text(f"resumable from iteration {j['resumable']}", style="bold yellow")
    return [j["id"], state_text(j["state"]), progress_text(j), message, Text(j["reason"] or "", style="red"),
            f"{gpu_h:.2f}" if gpu_h is not None else "", j["kind"], j["executor"]]


def evaluation_text(ev: dict | None, warnings: list[str]) -> Text:
    if ev is None:
        return Text("no evaluation yet: e evaluates\nthe round's prediction", style="dim")
    m = ev["metrics"]

    def num(name: str, fmt: str = ".3f") -> str:
        return format(m[name], fmt) if name in m else "—"

    lines = Text.assemble(f"round {ev['round']}  ", "IoU ", (num("iou"), "bold"), "  F1 ", (num("f1"), "bold"), "\n",
                          f"prec {num('precision')}  rec {num('recall')}\n",
                          f"objects {num('objects_pred_heldout', '.0f')} pred/"
                          f"{num('objects_true_heldout', '.0f')} true")
    if "volume_count" in m:
        lines.append(f" · {num('volume_count', '.0f')} in vol")
    for w in warnings:
        lines.append(f"\n⚠ {w}", style="bold red")
    return lines


def message_prompt(m: dict) -> Text:
    kind = m.get("kind") or "plain"
    style = {"question": "bold yellow", "answer": "green", "deadlock": "bold red", "decision": "bold cyan",
             "result": "magenta"}.get(kind, "")
    out = Text.assemble((f"{local_time(m['time'])} ", "dim"), (f"#{m['id']} ", "dim"))
    if m.get("reply_to"):
        out.append(f"↳#{m['reply_to']} ", style="dim")
    if kind != "plain":
        out.append(f"[{kind}] ", style=style)
    out.append(m["author"], style="bold")
    out.append(f": {m['text']}")
    links = [f"round {m['round']}" if m.get("round") else "", f"crop {m['crop']}" if m.get("crop") else "",
             f"job {m['job']}" if m.get("job") else "", f"region {m['region']}" if m.get("region") else "",
             "⌖ {axis} z{z} y{y} x{x}".format(**m["at"]) if m.get("at") else ""]
    links = [x for x in links if x]
    if links:
        out.append(f"  ({', '.join(links)})", style="cyan")
    return out


def log_prompt(e: dict) -> Text:
    out = Text.assemble((f"{local_time(e['time'])} ", "dim"))
    if e["type"] == "note":
        out.append("note ", style="bold magenta")
    out.append(e["author"], style="bold")
    out.append(f": {e['text']}")
    if e.get("reason"):
        out.append(f" — {e['reason']}", style="italic")
    return out


def sync_table(table: DataTable, rows: list[tuple[str, list]]) -> None:
    """Update cells in place when the rows are the same; otherwise rebuild, keeping the selected row."""
    keys = [k for k, _ in rows]
    current = [r.key.value for r in table.ordered_rows]
    if keys == current:
        for key, cells in rows:
            for column, value in zip(table.ordered_columns, cells):
                if table.get_cell(key, column.key) != value:
                    table.update_cell(key, column.key, value, update_width=True)
        return
    selected = current[table.cursor_row] if 0 <= table.cursor_row < len(current) else None
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if selected in keys:
        table.move_cursor(row=keys.index(selected), animate=False)


def sync_options(options: OptionList, items: list[tuple[str, Text]]) -> None:
    """Replace the list only when it changed, keeping the highlighted entry and following new ones at the end."""
    ids = [i for i, _ in items]
    if ids == [o.id for o in options.options] and all(
            str(o.prompt) == str(p) for o, (_, p) in zip(options.options, items)):
        return
    at_end = options.highlighted is None or options.highlighted >= options.option_count - 1
    keep = options.options[options.highlighted].id if options.highlighted is not None and options.option_count else None
    options.clear_options()
    options.add_options([Option(p, id=i) for i, p in items])
    if items:
        options.highlighted = len(items) - 1 if at_end or keep not in ids else ids.index(keep)


class ScrollText(VerticalScroll):
    """Scrollable text that follows new lines at the bottom unless the curator scrolled up."""

    def compose(self) -> ComposeResult:
        yield Static()

    def update(self, text: Text) -> None:
        follow = self.scroll_y >= self.max_scroll_y
        self.query_one(Static).update(text)
        if follow:
            self.call_after_refresh(self.scroll_end, animate=False)
