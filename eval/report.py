"""The evaluation's report: ``results.json`` (every number), ``report.md``, the ImageNet-C charts
(``imagenet_c.png``: CE per corruption; ``imagenet_c_severity.png``: error per corruption and
severity), and ``ipmix-dali eval-compare`` (several runs side by side)."""
from __future__ import annotations

import json
import os

import numpy as np

from ipmix_dali.atomic import atomic_write, write_json

from .metrics import CORRUPTIONS, EXTRA_CORRUPTIONS

__all__ = ["write_report", "report_markdown", "ce_chart", "severity_table", "severity_chart",
           "compare", "RESNET50_MCE"]

RESNET50_MCE = 76.7          # torchvision ResNet-50 (V1), robustness README leaderboard
RESNET50_CLEAN_ERROR = 23.85


def write_report(results: dict, out) -> None:
    """``results.json``, ``report.md`` and, with ImageNet-C numbers, the two charts, atomically
    into ``out``."""
    write_json(os.path.join(out, "results.json"), results)
    with atomic_write(os.path.join(out, "report.md"), "w") as f:
        f.write(report_markdown(results))
    if "imagenet_c" in results and results["imagenet_c"]["per_corruption"]:
        ce_chart(results, os.path.join(out, "imagenet_c.png"))
        severity_chart({os.path.basename(os.path.normpath(out)): results},
                       os.path.join(out, "imagenet_c_severity.png"))


def _fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def report_markdown(r) -> str:
    lines = [f"# Robustness report: {os.path.basename(r['checkpoint'])} ({r['arch']})", ""]
    for k, v in r["protocol"].items():
        lines.append(f"* {k}: {v}")
    lines.append("")
    if "clean" in r:
        c = r["clean"]
        lines += ["## Clean ImageNet val", "", f"top-1 error {_fmt(c['error'])} %, top-5 error "
                  f"{_fmt(c['top5_error'])} %, RMS calibration {_fmt(c['rms'])} %, ECE "
                  f"{_fmt(c['ece'])} % ({c['n']} images, {c['images_per_s']} img/s)", ""]
    if "imagenet_c" in r:
        ic = r["imagenet_c"]
        lines += ["## ImageNet-C", "",
                  "| corruption | s1 | s2 | s3 | s4 | s5 | mean error | CE | relative CE | "
                  "mean RMS |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c, row in ic["per_corruption"].items():
            cells = ic["cells"][c]
            rms = [cells[s]["rms"] for s in sorted(cells) if cells[s]["rms"] is not None]
            lines.append(f"| {c}{' (extra)' if c in EXTRA_CORRUPTIONS else ''} | " + " | ".join(
                _fmt(cells[str(s)]["error"]) for s in range(1, 6)) + f" | {_fmt(row['mean_error'])}"
                f" | {_fmt(row.get('ce'))} | {_fmt(row.get('relative_ce'))} | "
                f"{_fmt(float(np.mean(rms)) if rms else None)} |")
        lines += ["", f"**mCE {_fmt(ic.get('mce'))} %**, relative mCE "
                  f"{_fmt(ic.get('relative_mce'))} %, unnormalised mean error "
                  f"{_fmt(ic.get('unnormalized_mce'))} %, mean RMS calibration "
                  f"{_fmt(ic.get('mean_rms'))} % (15 standard corruptions; AlexNet = 100; "
                  f"torchvision ResNet-50: {RESNET50_MCE} %)."]
        if ic.get("missing"):
            lines.append(f"Missing standard corruptions (no mCE): {', '.join(ic['missing'])}.")
        if "extra_mean_ce" in ic:
            lines.append(f"Extra corruptions, mean CE (not in mCE): {_fmt(ic['extra_mean_ce'])} %.")
        if ic.get("ignored_folders"):
            lines.append(f"Ignored folders (no ImageNet-C corruption, not evaluated): "
                         f"{', '.join(ic['ignored_folders'])}.")
        lines.append("")
    rows = []
    for name, label in (("imagenet_r", "ImageNet-R"), ("imagenet_a", "ImageNet-A")):
        if name in r:
            x = r[name]
            rows.append(f"| {label} | {_fmt(x['error'])} | {_fmt(x['top5_error'])} | "
                        f"{_fmt(x['rms'])} | {x['n']} |")
    if rows:
        lines += ["## ImageNet-R / -A (200-class logits)", "",
                  "| set | top-1 error | top-5 error | RMS | images |", "|---|---|---|---|---|",
                  *rows, ""]
    if "imagenet_o" in r:
        o = r["imagenet_o"]
        lines += ["## ImageNet-O", "", f"AUPR {_fmt(o['aupr'])} %, AUROC {_fmt(o['auroc'])} %, "
                  f"FPR95 {_fmt(o['fpr95'])} % ({o['n_out']} anomalies vs {o['n_in']} val images; "
                  f"score = -max softmax over the 200 classes)", ""]
    if "imagenet_p" in r:
        ip = r["imagenet_p"]
        lines += ["## ImageNet-P (difficulty 1)", "", "| perturbation | flip prob. | top-5 dist. | "
                  "FR | T5D ratio | videos |", "|---|---|---|---|---|---|"]
        for p, v in ip["per_perturbation"].items():
            lines.append(f"| {p} | {_fmt(v['flip_probability'])} | {_fmt(v['top5_distance'], 3)} "
                         f"| {_fmt(v.get('fr'))} | {_fmt(v.get('t5d_ratio'))} | {v['videos']} |")
        lines += ["", f"mFR {_fmt(ip.get('mfr'))} %, mT5D {_fmt(ip.get('mt5d'))} % (AlexNet = 100; "
                  f"needs AlexNet normalisers: --alexnet-p or --measure-alexnet)", ""]
    if "cifar_c" in r:
        cc = r["cifar_c"]
        lines += ["## CIFAR-C", "", f"mean corruption error {_fmt(cc['mean_error'])} % over "
                  f"{len(cc['per_corruption'])} corruptions x 5 severities", ""]
    if "pgd" in r:
        p = r["pgd"]
        lines += ["## PGD (CIFAR protocol)", "", f"adversarial error {_fmt(p['error'])} % "
                  f"(L-inf eps {p['eps']}, {p['steps']} steps of {p['step_size']}, "
                  f"clamped start: {p['clamp_start']}, {p['n']} images)", ""]
    return "\n".join(lines) + "\n"


def ce_chart(r, path):
    """Per-corruption CE bars with AlexNet (100) and the ResNet-50 mCE (76.7) as reference
    lines."""
    from ipmix_dali.plots import grouped_bars

    per = r["imagenet_c"]["per_corruption"]
    names = [c for c in list(CORRUPTIONS) + list(EXTRA_CORRUPTIONS) if c in per]
    return grouped_bars(
        [c.replace("_", " ") for c in names], {"CE": [per[c]["ce"] for c in names]}, path,
        f"ImageNet-C CE per corruption (%), mCE {_fmt(r['imagenet_c'].get('mce'))}",
        "corruption error CE (%, AlexNet = 100)",
        lines={"AlexNet 100": 100.0, f"ResNet-50 mCE {RESNET50_MCE}": RESNET50_MCE},
        rotate=True)


def severity_table(r) -> dict:
    """{corruption: {severity: top-1 error}} of a results.json's ImageNet-C cells."""
    cells = (r.get("imagenet_c") or {}).get("cells") or {}
    return {c: {int(s): v["error"] for s, v in sev.items()} for c, sev in cells.items()}


def severity_chart(models: dict, path, title="ImageNet-C top-1 error per corruption and "
                                              "severity"):
    """Per-corruption x severity error, one line per model ({name: results.json dict})."""
    from ipmix_dali.plots import severity_lines

    tables = {name: severity_table(r) for name, r in models.items()}
    tables = {name: t for name, t in tables.items() if t}
    if not tables:
        return None
    return severity_lines(tables, path, title)


def compare(outs, log=print, chart=None) -> str:
    """A Markdown table of several ``results.json`` side by side (``ipmix-dali eval-compare``);
    ``chart``: also a PNG of their ImageNet-C error per corruption and severity."""
    rows = []
    for o in outs:
        path = os.path.join(o, "results.json")
        if not os.path.isfile(path):
            raise ValueError(f"{o} has no results.json: pass folders written by ipmix-dali eval")
        with open(path) as f:
            rows.append((o, json.load(f)))

    def get(r, *keys):
        for k in keys:
            if not isinstance(r, dict) or k not in r:
                return None
            r = r[k]
        return r

    cols = [("clean err", ("clean", "error")), ("mCE", ("imagenet_c", "mce")),
            ("rel. mCE", ("imagenet_c", "relative_mce")), ("C RMS", ("imagenet_c", "mean_rms")),
            ("R err", ("imagenet_r", "error")), ("A err", ("imagenet_a", "error")),
            ("O AUPR", ("imagenet_o", "aupr")), ("mFR", ("imagenet_p", "mfr")),
            ("CIFAR-C err", ("cifar_c", "mean_error")),
            ("PGD err", ("pgd", "error"))]
    cols = [c for c in cols if any(get(r, *c[1]) is not None for _, r in rows)]
    lines = ["| run | " + " | ".join(c[0] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for o, r in rows:
        lines.append(f"| {o} | " + " | ".join(_fmt(get(r, *k)) for _, k in cols) + " |")
    text = "\n".join(lines) + "\n"
    log(text)
    if chart:
        written = severity_chart({os.path.basename(os.path.normpath(o)): r for o, r in rows},
                                 chart)
        log(f"wrote {written}" if written else "no ImageNet-C results to chart")
    return text

