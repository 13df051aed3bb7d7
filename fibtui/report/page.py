"""The report's one HTML page: inline CSS, relative image links, nothing fetched from anywhere."""

from __future__ import annotations

import json
from html import escape

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1080px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.answer{background:#f3f8ee;border-left:4px solid #2ca02c;padding:.6em 1em}.warn{color:#b00}
.muted{color:#777}code{font-size:.9em;word-break:break-all}img{max-width:100%;height:auto}
ol.chain li{margin:.3em 0}.thread li{margin:.35em 0}.kind{font-size:.8em;padding:0 .4em;border-radius:3px;
background:#eee}.kind-question,.kind-deadlock{background:#fde2e1}.kind-answer,.kind-decision{background:#e3f3e0}
#img-status{display:none}
"""

# The page may load only its own files: no style, font, script or image from the network.
CSP = "default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

# Counts the images that loaded; data-images on <body> lets a headless browser check it too.
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  var fetched = (performance.getEntriesByType ? performance.getEntriesByType('resource') : [])
    .map(function (e) { return e.name; });
  document.body.setAttribute('data-resources', JSON.stringify(fetched));
  if (ok < imgs.length) {
    var s = document.getElementById('img-status');
    s.textContent = (imgs.length - ok) + ' of ' + imgs.length +
      ' images did not load: keep the PNG files next to index.html.';
    s.style.display = 'block';
  }
});
"""


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return escape(str(v))


def _sig(v) -> str:
    """Three significant digits: a pore's volume is ~0.0007 µm³, which fixed decimals print as 0.0000."""
    return "–" if v is None else f"{v:.3g}"


def _dur(s) -> str:
    if s is None:
        return "–"
    s = float(s)
    return f"{s:.1f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")


def _img(fig: dict | None, alt: str) -> str:
    if not fig:
        return f'<p class="muted">({escape(alt)}: nothing to plot yet)</p>'
    w, h = fig["size"]
    return f'<img src="{escape(fig["file"])}" width="{w}" height="{h}" alt="{escape(alt)}">'


def _question_answer(data: dict) -> str:
    q = data["question"]
    parts = ["<h2>The question and the current answer</h2>"]
    if q:
        who = f' <span class="muted">({escape(q["author"] or "")}, {escape(q["time"] or "")})</span>' if q["author"] else ""
        parts.append(f"<p><b>Question:</b> {escape(q['text'])}{who}</p>")
    else:
        parts.append('<p class="muted">No question recorded yet (a message of kind "question" in the thread).</p>')
    a = data["answer"]
    if not a:
        parts.append('<div class="answer">No round has been evaluated yet.</div>')
        return "\n".join(parts)
    sc = a["scores"]
    rows = [] if not sc else [f"<p>Round {a['round']} (target <b>{escape(str(a['target']))}</b>), on the frozen random held-out regions: "
            f"IoU {_fmt(sc.get('iou'))}, F1 {_fmt(sc.get('f1'))}, precision {_fmt(sc.get('precision'))}, "
            f"recall {_fmt(sc.get('recall'))}; object F1 {_fmt(sc.get('object_f1'))}.</p>"]
    ob = a["objects"] or {}
    if ob:
        rows.append(f"<p>Whole volume: {ob.get('count')} objects, {_fmt(ob.get('density_per_um3'), 2)} per µm³ "
                    f"(median size {_sig(ob.get('median_size_um3'))} µm³, in {_fmt(ob.get('volume_um3'), 2)} µm³).</p>")
    pores = a.get("pores")
    if pores:
        r = pores["readout"]
        dens = r.get("density_per_um2")
        rows.append(f"<p><b>Nuclear pores</b> (measure job {escape(pores['job'])}, round {pores['round']}): "
                    f"{r.get('pores')} pores on {_fmt(r.get('envelope_um2'), 2)} µm² of nuclear envelope"
                    + (f" = <b>{dens:.2f} per µm²</b>" if dens is not None else "") + ".</p>")
        rows.append("<ul>" + "".join(f"<li>{escape(t)}</li>" for t in pores["sentences"]) + "</ul>")
        warns = [w for n in r.get("nuclei", []) for w in n.get("warnings", [])]
        rows.extend(f'<p class="warn">⚠ {escape(str(w))}</p>' for w in warns)
    elif a["measurements"]:
        rows.append("<table><tr><th>measurement</th><th>value</th></tr>" + "".join(
            f"<tr><td>{escape(k)}</td><td class='num'>{_fmt(v, 2)}</td></tr>" for k, v in a["measurements"].items())
            + "</table>")
    else:
        rows.append("<p><b>Pore counts and densities:</b> not measured yet.</p>")
    parts.append('<div class="answer">' + "".join(rows) + "</div>")
    return "\n".join(parts)


def _rounds_table(data: dict) -> str:
    head = ("<tr><th>round</th><th>target</th><th>crops</th><th>IoU</th><th>F1</th><th>precision</th><th>recall</th>"
            "<th>object F1</th><th>wall time</th><th>GPU-hours</th></tr>")
    body = []
    for r in data["rounds"]:
        m = (r["evaluation"] or {}).get("metrics", {})
        body.append(f"<tr><td>{r['n']}</td><td>{_fmt(r['target'])}</td><td class='num'>{r['crops']}</td>"
                    + "".join(f"<td class='num'>{_fmt(m.get(k))}</td>" for k in ("iou", "f1", "precision", "recall",
                                                                          "object_f1"))
                    + f"<td class='num'>{_dur(r['wall_s'])}</td><td class='num'>{_fmt(r['gpu_hours'], 3)}</td></tr>")
    warn = "".join(f'<p class="warn">⚠ {escape(w)}</p>' for w in data["regressions"])
    return f"<table>{head}{''.join(body)}</table>{warn}"


def _round_section(r: dict, figs: dict) -> str:
    out = [f"<h3 id='round-{r['n']}'>Round {r['n']}</h3>"]
    jobs = "".join(
        f"<tr><td>{escape(j['id'])}</td><td>{escape(j['kind'])}</td><td>{escape(j['executor'] or '')}</td>"
        f"<td>{escape(j['state'] or '')}</td><td>{escape(j['submitted'] or '')}</td>"
        f"<td class='num'>{_dur(j['elapsed_s'])}</td><td class='num'>{_fmt(j['gpus'])}</td>"
        f"<td class='num'>{_fmt(j['gpu_hours'], 4)}</td></tr>" for j in r["jobs"])
    out.append("<table><tr><th>job</th><th>kind</th><th>executor</th><th>state</th><th>submitted (UTC)</th>"
               f"<th>wall time</th><th>GPUs</th><th>GPU-hours</th></tr>{jobs}</table>" if jobs
               else '<p class="muted">No jobs yet.</p>')
    out.append(_img(figs.get(f"loss{r['n']}"), f"round {r['n']} loss curve"))
    if r.get("slices"):
        out.append("<p>Example slices through held-out regions (drawn at random, never trained on). "
                   "False positives red, false negatives blue:</p>")
        for s in r["slices"]:
            counts = "" if s["fp"] is None else f" — {s['fp']} false-positive and {s['fn']} false-negative pixels"
            out.append(f"<figure>{_img(s, 'round ' + str(r['n']) + ' region ' + str(s['region']))}"
                       f"<figcaption class='muted'>region {s['region']}, z = {s['z']}{counts}</figcaption></figure>")
    elif r["prediction_dir"] is None:
        out.append('<p class="muted">No prediction yet, so no example slices.</p>')
    return "\n".join(out)


def _thread(data: dict) -> str:
    items = [e for e in data["timeline"] if e["type"] in ("message", "intervention", "note", "evaluation", "round")]
    if not items:
        return '<p class="muted">No messages or interventions yet.</p>'
    li = []
    for e in items:
        kind = e["kind"] or e["type"]
        badge = f"<span class='kind kind-{escape(kind)}'>{escape(kind)}</span>"
        who = f" <b>{escape(e['author'])}</b>:" if e.get("author") else ""
        rnd = f" <span class='muted'>[round {e['round']}]</span>" if e.get("round") is not None else ""
        li.append(f"<li><span class='muted'>{escape(e['time'])}</span> {badge}{rnd}{who} {escape(e['what'])}</li>")
    return "<ul class='thread'>" + "".join(li) + "</ul>"


def _chain(r: dict) -> str:
    c = r["chain"]
    if not c["train"]:
        return f"<p class='muted'>Round {r['n']}: not trained yet.</p>"
    steps = []
    raw = c["raw"]
    if raw:
        steps.append(f"<li><b>raw data</b> {escape(raw['volume'])}: <code>{escape(raw['checksum'] or '')}</code> "
                     f"<span class='muted'>from {escape(str(raw['source']))}</span></li>")
    steps.append("<li><b>label crops</b> the training read: " + (", ".join(
        f"#{x['id']} (round {x['round']}) at {escape(x['offset'])} ({escape(x['shape'])}, {x['labelled_voxels']} labelled voxels) "
        f"<code>sha256:{escape((x['sha256'] or '')[:16])}…</code>" for x in c["crops"]) or "none in this round "
        "(fine-tuned on earlier rounds' crops)") + "</li>")
    t = c["train"]
    code = t.get("code") or {}
    steps.append(f"<li><b>training spec</b> {escape(t['job'])}: seed {t['seed']}, {t['iterations']} iterations, "
                 f"lr {t['lr']}, model {escape(json.dumps(t['model']))}, patch {escape(str(t['patch']))}, "
                 f"from {escape(t['init_job'] or 'scratch')}; code fibtui {escape(str(code.get('fibtui')))} "
                 f"<code>{escape(str(code.get('git_commit')))}</code>{' (dirty)' if code.get('git_dirty') else ''}, "
                 f"torch {escape(str(code.get('torch')))}</li>")
    if c["checkpoint"]:
        steps.append(f"<li><b>checkpoint</b> <code>{escape(c['checkpoint']['path'])}</code> "
                     f"<code>sha256:{escape(c['checkpoint']['sha256'] or '')}</code></li>")
    if c["prediction"]:
        steps.append(f"<li><b>prediction</b> {escape(c['prediction']['job'])} → "
                     f"<code>{escape(c['prediction']['output'])}</code></li>")
    if c["scores"]:
        s = c["scores"]
        steps.append(f"<li><b>scores</b> {escape(s['job'])} on held-out regions {s['regions']} at threshold "
                     f"{s['threshold']}: IoU {_fmt(s.get('iou'))}, F1 {_fmt(s.get('f1'))}</li>")
    return f"<p><b>Round {r['n']}</b></p><ol class='chain'>{''.join(steps)}</ol>"


def render(data: dict, figs: dict) -> str:
    vols = "; ".join(f"{escape(v['name'])} {escape(v['shape'])} voxels at {escape(v['voxel_size'])} nm"
                     for v in data["volumes"]) or "no volume yet"
    body = [
        f"<h1>fibtui session {escape(data['session'])}</h1>",
        f"<p class='muted'>created {escape(data['created'] or '')}; {vols}; classes "
        f"{escape(', '.join(data['classes']) or '–')}</p>",
        '<p id="img-status" class="warn"></p>',
        _question_answer(data),
        "<h2>Rounds</h2>", _rounds_table(data), _img(figs.get("scores"), "held-out scores"),
        _img(figs.get("timeline"), "timeline"),
        *[_round_section(r, figs) for r in data["rounds"]],
        "<h2>Messages and interventions</h2>",
        "<p class='muted'>The curator–scientist thread, the curator's actions (logged automatically) and the "
        "evaluations, in time order.</p>", _thread(data),
        "<h2>Provenance</h2>",
        "<p class='muted'>Which data and settings produced each number: raw data checksum → crops → training spec → "
        "checkpoint → prediction → scores.</p>",
        *[_chain(r) for r in data["rounds"]],
        "<p class='muted'>Made by <code>fibtui report</code>. Opens offline; nothing here is fetched from the network.</p>",
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>fibtui report: {escape(data['session'])}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
