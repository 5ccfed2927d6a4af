"""The study's findings (docs/metrics.md) checked against a grid's numbers: `qmu report ... --replication`.

Every number comes from `reports.queries.aggregate` (the same SQL as the tables and figures). The verdict rules are
fixed here and printed in the report, so a reader can disagree with a threshold without re-running anything.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import queries as q

UNLEARNING = ("ga", "ssd", "rga")  # the study's three mechanisms
RULES = [
    "Leakage of the original model (`none`, exact shots): reproduced if MIA success >= 0.80 (study: about 0.90 in "
    "simulation), partly if >= 0.50, else not.",
    "Unlearning removes leakage: reproduced if the method's MIA success <= 0.10 (study: about 0.00 in simulation), "
    "partly if <= 0.50, else not. Where it is not, the row says whether the method still matches `retrain` (the "
    "95% interval of the difference contains 0): on random forget sets even `retrain` is flagged often, because "
    "the attack also flags unseen samples, so 0 is not the attainable target there.",
    "Retained accuracy stays: reproduced if test accuracy on the retained classes drops by <= 0.05 from `none`, "
    "partly if <= 0.15, else not.",
    "Shot shield: reproduced if `none`'s MIA success at the fewest eval shots is below exact by >= 0.10 and the 95% "
    "intervals do not overlap; the AUC change is shown beside it.",
]


def _v(x: Any) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def _ci(r: pd.Series, m: str) -> str:
    v, lo, hi = _v(r.get(m)), _v(r.get(f"{m}_lo")), _v(r.get(f"{m}_hi"))
    if v is None:
        return "—"
    return f"{v:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else "")


def _grade(v: float | None, good, partly) -> str:
    if v is None:
        return "no data"
    return "reproduced" if good(v) else "partly" if partly(v) else "not reproduced"


def claims(s: q.Store, grid: str) -> tuple[list[list[str]], dict[str, Any]]:
    """Rows (finding, model, forget, measured, study, verdict) and the headline numbers."""
    ref = q.reference_slice(s, grid)
    base = {"grid": grid, **{k: v for k, v in ref.items() if k != "forget"}}
    agg = q.aggregate(s, ["model", "forget", "method"], base)
    rows: list[list[str]] = []
    head: dict[str, Any] = {"reference": ref, "models": {}}
    forgets = q.sort_axis("forget", agg["forget"].unique()) if not agg.empty else []
    primary = ref.get("forget")
    for model in sorted(agg["model"].unique()) if not agg.empty else []:
        hm: dict[str, Any] = {}
        head["models"][model] = hm
        for forget in [primary] + [f for f in forgets if f != primary]:
            sub = agg[(agg["model"] == model) & (agg["forget"] == forget)].set_index("method")
            if sub.empty:
                continue
            tag = f"{forget}" + (" (study's setting)" if forget == primary else "")
            none = sub.loc["none"] if "none" in sub.index else None
            if none is not None:
                v = _v(none["mia_success"])
                verdict = _grade(v, lambda x: x >= 0.8, lambda x: x >= 0.5)
                flag_nm, auc_lo = _v(none.get("mia_nonmember_flag_rate")), _v(none.get("mia_auc_lo"))
                caveat = []
                if flag_nm is not None and flag_nm >= 0.5:
                    caveat.append(f"same-class non-members are flagged at {flag_nm:.2f} too")
                if auc_lo is not None and auc_lo <= 0.5:
                    caveat.append("AUC not above chance")
                if caveat and verdict != "no data":
                    verdict += " as recall only (" + "; ".join(caveat) + ")"
                rows.append(["original model leaks", model, tag, f"MIA {_ci(none, 'mia_success')}; AUC "
                             f"{_ci(none, 'mia_auc')}; TPR@1%FPR {_ci(none, 'mia_tpr_at_1pct_fpr')}", "MIA ≈ 0.90",
                             verdict])
                if forget == primary:
                    hm["none"] = {k: _v(none[k]) for k in ("mia_success", "mia_success_lo", "mia_success_hi",
                                                          "mia_auc", "acc_test_retain", "mia_nonmember_flag_rate")}
            for m in UNLEARNING:
                if m not in sub.index:
                    continue
                r = sub.loc[m]
                v = _v(r["mia_success"])
                verdict = _grade(v, lambda x: x <= 0.1, lambda x: x <= 0.5)
                glo, ghi = _v(r.get("gap_mia_success_lo")), _v(r.get("gap_mia_success_hi"))
                if verdict in ("partly", "not reproduced") and glo is not None and ghi is not None:
                    verdict += "; but matches retrain (Δ interval contains 0)" if glo <= 0 <= ghi else \
                        "; and differs from retrain"
                rows.append([f"{m} removes leakage", model, tag, f"MIA {_ci(r, 'mia_success')}; AUC {_ci(r, 'mia_auc')}"
                             f"; Δ MIA vs retrain {_ci(r, 'gap_mia_success')}", "MIA ≈ 0.00", verdict])
                drop = None
                if none is not None and _v(none["acc_test_retain"]) is not None and _v(r["acc_test_retain"]) is not None:
                    drop = float(none["acc_test_retain"]) - float(r["acc_test_retain"])
                rows.append([f"{m} keeps retained accuracy", model, tag,
                             f"acc {_ci(r, 'acc_test_retain')} vs none {_ci(none, 'acc_test_retain') if none is not None else '—'}"
                             f" (drop {drop:+.3f})" if drop is not None else f"acc {_ci(r, 'acc_test_retain')}",
                             "stays", _grade(drop, lambda x: x <= 0.05, lambda x: x <= 0.15)])
                if forget == primary:
                    hm[m] = {k: _v(r[k]) for k in ("mia_success", "mia_success_lo", "mia_success_hi", "mia_auc",
                                                  "acc_test_retain", "gap_mia_success", "gap_acc_test_retain")}
    # shot shield on the original model
    shots_agg = q.aggregate(s, ["model", "eval_shots"], {**{"grid": grid}, **{k: v for k, v in ref.items()
                                                                             if k != "eval_shots"}, "method": "none"})
    for model in sorted(shots_agg["model"].unique()) if not shots_agg.empty else []:
        sub = shots_agg[shots_agg["model"] == model]
        finite = sub[sub["eval_shots"].map(lambda v: v is not None)]
        exact = sub[sub["eval_shots"].map(lambda v: v is None)]
        if finite.empty or exact.empty:
            rows.append(["shot shield", model, str(primary), "needs exact and finite eval shots", "attack weakens",
                         "not tested"])
            continue
        few = finite.loc[finite["eval_shots"].astype(int).idxmin()]
        ex = exact.iloc[0]
        d = _v(few["mia_success"]) - _v(ex["mia_success"])
        sep = _v(few["mia_success_hi"]) is not None and _v(ex["mia_success_lo"]) is not None and \
            _v(few["mia_success_hi"]) < _v(ex["mia_success_lo"])
        verdict = "reproduced" if d <= -0.10 and sep else "partly" if d < 0 and (sep or d <= -0.10) else "not reproduced"
        rows.append(["shot shield (few inference shots weaken the attack)", model, str(primary),
                     f"MIA {_ci(few, 'mia_success')} at {int(few['eval_shots'])} shots vs {_ci(ex, 'mia_success')} exact "
                     f"(Δ {d:+.3f}); AUC {_ci(few, 'mia_auc')} vs {_ci(ex, 'mia_auc')}", "attack weakens", verdict])
        head["models"].setdefault(model, {})["shots"] = {
            "few": int(few["eval_shots"]), "mia_few": _v(few["mia_success"]), "mia_exact": _v(ex["mia_success"]),
            "auc_few": _v(few["mia_auc"]), "auc_exact": _v(ex["mia_auc"])}
    rows.append(["hardware: ~75% leakage, ~4% after unlearning", "—", "—", "simulation grid only", "device runs",
                 "not tested here (grids/hardware.yaml, `qmu hw`)"])
    rows.append(["shots during training / unlearning", "—", "—", "analytic training and unlearning in this grid",
                 "noisy updates", "not tested here (grids/shots.yaml)"])
    return rows, head


def summary_text(head: dict[str, Any]) -> list[str]:
    """Plain sentences with the headline numbers, per model."""
    out = []
    for model, hm in head["models"].items():
        parts = []
        n = hm.get("none")
        if n and n.get("mia_success") is not None:
            parts.append(f"the original model's forget set is flagged at {n['mia_success']:.2f} "
                         f"[{n['mia_success_lo']:.2f}, {n['mia_success_hi']:.2f}] (AUC {n['mia_auc']:.2f}, "
                         f"retained test accuracy {n['acc_test_retain']:.2f}"
                         + (f"; same-class non-members flagged at {n['mia_nonmember_flag_rate']:.2f}"
                            if n.get("mia_nonmember_flag_rate") is not None else "") + ")")
        for m in UNLEARNING:
            r = hm.get(m)
            if r and r.get("mia_success") is not None:
                parts.append(f"{m} {r['mia_success']:.2f} (retained acc {r['acc_test_retain']:.2f})")
        sh = hm.get("shots")
        if sh:
            parts.append(f"at {sh['few']} inference shots `none` is flagged at {sh['mia_few']:.2f} vs "
                         f"{sh['mia_exact']:.2f} exact (AUC {sh['auc_few']:.2f} vs {sh['auc_exact']:.2f})")
        if parts:
            out.append(f"{model}: " + "; ".join(parts) + ".")
    return out


def in_short(rows: list[list[str]]) -> list[str]:
    """One sentence per model: the verdicts in the study's own setting (its forget set) and the shot shield."""
    out: dict[str, list[str]] = {}
    for finding, model, forget, _, _, verdict in rows:
        if model == "—" or not (forget.endswith("(study's setting)") or finding.startswith("shot shield")):
            continue
        short = verdict.split(" (")[0].split(";")[0]
        out.setdefault(model, []).append(f"{finding.split(' (')[0]}: {short}")
    return [f"{m}: " + "; ".join(v) + "." for m, v in out.items()]
