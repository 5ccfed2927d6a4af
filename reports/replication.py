"""The study's findings (docs/metrics.md) checked against a grid's numbers: `qmu report ... --replication`.

Every number comes from `reports.queries.aggregate` (the same SQL as the tables and figures). The verdict rules are
fixed here and printed in the report, so a reader can disagree with a threshold without re-running anything.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import queries as q
from .verdicts import SIGNAL_LABELS


def unlearning_methods() -> tuple[str, ...]:
    """Every method but the two references (`none`, `retrain`), in the report's order."""
    return tuple(m for m in q.METHODS if m not in ("none", "retrain"))


VERDICT_RULE = (
    "Where the report's verdict table has the row (per metric, strongest attack, TOST against `retrain` at the "
    "grid's margins, Holm over the report): unlearning removes leakage is reproduced if both ΔAUC and ΔTPR@1%FPR "
    "are equivalent to retrain, not reproduced if one differs, inconclusive if a metric is underpowered or not "
    "discriminating, and no result if the method stopped after 0 or 1 steps; the original model leaks is "
    "reproduced if a metric differs, not reproduced if every metric is not discriminating, else inconclusive. The "
    "interval rules below apply only where the table has no row.")
HELDOUT_RULES = [
    "Leakage is judged on the held-out protocol (attack trained on retain-set members and P_attack non-members, "
    "scored on the forget set against unseen P_eval non-members). MIA success (study protocol) is shown beside it "
    "as the study's number.",
    "Leakage of the original model (`none`, exact shots): reproduced if the held-out advantage's 95% interval is "
    "above 0 and the held-out AUC's is above 0.5; partly if only one of them is; else not.",
    "Unlearning removes leakage: reproduced if the 95% intervals of the method's difference to `retrain` in "
    "held-out advantage and in held-out AUC both contain 0; partly if one does; else not. Inconclusive if `none` "
    "also passes (the attack cannot tell the original model from `retrain` at this slice).",
]
RULES = [
    "Leakage of the original model (`none`, exact shots): reproduced if MIA success >= 0.80 (study: about 0.90 in "
    "simulation), partly if >= 0.50, else not.",
    "Unlearning removes leakage: reproduced if the method's MIA success <= 0.10 (study: about 0.00 in simulation), "
    "partly if <= 0.50, else not. Where it is not, the row says whether the method still matches `retrain` (the "
    "95% interval of the difference contains 0): on random forget sets even `retrain` is flagged often, because "
    "the attack also flags unseen samples, so 0 is not the attainable target there.",
    "Retained accuracy stays: reproduced if test accuracy on the retained classes drops by <= 0.05 from `none`, "
    "partly if <= 0.15, else not.",
    "Shot shield: reproduced if `none`'s leakage (held-out AUC where the store has it, else MIA success) at the "
    "fewest eval shots is below exact by >= 0.10 and the 95% intervals do not overlap; partly if only one holds.",
]


def rules(heldout: bool) -> list[str]:
    """The verdict rules that apply to a store (held-out protocol, or the study's MIA success for old stores)."""
    return [VERDICT_RULE] + HELDOUT_RULES + RULES[2:] if heldout else RULES


def _verdict_rows(verdicts: pd.DataFrame | None, grid: str, ref: dict[str, Any], model: str, forget: str,
                  method: str) -> pd.DataFrame:
    """The verdict table's rows of one method at the reference shots and backend (empty where it has none)."""
    if verdicts is None or verdicts.empty:
        return pd.DataFrame()
    keep = (verdicts["grid"] == grid) & (verdicts["model"] == model) & (verdicts["forget"] == forget) \
        & (verdicts["method"] == method)
    return verdicts[keep & q.at_axes(verdicts, {k: x for k, x in ref.items() if k != "forget"})]


def _by_metric(rows: pd.DataFrame) -> str:
    return "; ".join(f"{SIGNAL_LABELS.get(r['signal'], '')} {r['verdict']}".strip() for _, r in rows.iterrows())


def _removes_from_verdicts(rows: pd.DataFrame) -> str:
    got = set(rows["verdict"])
    if "stopped early: no result" in got:
        return "no result (stopped after 0 or 1 steps)"
    if "differs" in got:
        return f"not reproduced ({_by_metric(rows)})"
    if got == {"equivalent to retrain"}:
        return f"reproduced ({_by_metric(rows)})"
    return f"inconclusive ({_by_metric(rows)})"


def _leaks_from_verdicts(rows: pd.DataFrame) -> str:
    got = set(rows["verdict"])
    if "differs" in got:
        return f"reproduced ({_by_metric(rows)})"
    if got == {"not discriminating"}:
        return f"not reproduced ({_by_metric(rows)})"
    return f"inconclusive ({_by_metric(rows)})"


def _v(x: Any) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def _ci(r: pd.Series, m: str) -> str:
    v, lo, hi = _v(r.get(m)), _v(r.get(f"{m}_lo")), _v(r.get(f"{m}_hi"))
    if v is None:
        return "—"
    return f"{v:.3f}" + q.interval_text(lo, hi)


def _study(r: pd.Series) -> str:
    """The study's MIA success beside the rate at which the same attack flags unseen non-members: a success of
    0.00 from an attack that flags nobody says nothing about forgetting."""
    flag = _ci(r, q.STUDY_FLAG_RATE)
    return _ci(r, "mia_success") + ("" if flag == "—" else f" (its flag rate on unseen non-members {flag})")


def _flag_clause(r: dict[str, Any]) -> str:
    parts = [(f"the study's attack flags {_f(r[q.STUDY_FLAG_RATE])} of unseen non-members"
              if r.get(q.STUDY_FLAG_RATE) is not None else ""),
             (f"the held-out attack {_f(r['mia_nonmember_flag_rate'])}"
              if r.get("mia_nonmember_flag_rate") is not None else "")]
    parts = [p for p in parts if p]
    return ("; " + ", ".join(parts)) if parts else ""


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _grade(v: float | None, good, partly) -> str:
    if v is None:
        return "no data"
    return "reproduced" if good(v) else "partly" if partly(v) else "not reproduced"


def _contains0(r: pd.Series | None, m: str) -> bool | None:
    if r is None:
        return None
    lo, hi = _v(r.get(f"gap_{m}_lo")), _v(r.get(f"gap_{m}_hi"))
    return None if lo is None or hi is None else lo <= 0 <= hi


def _heldout_leaks(none: pd.Series) -> str:
    adv_lo, auc_lo = _v(none.get("mia_advantage_lo")), _v(none.get("mia_auc_lo"))
    if adv_lo is None and auc_lo is None:
        return "no data"
    hits = int(adv_lo is not None and adv_lo > 0) + int(auc_lo is not None and auc_lo > 0.5)
    return "reproduced" if hits == 2 else "partly" if hits == 1 else "not reproduced"


def _heldout_removes(r: pd.Series, none: pd.Series | None) -> str:
    hits = [_contains0(r, "mia_advantage"), _contains0(r, "mia_auc")]
    if all(h is None for h in hits):
        return "no data"
    n = sum(bool(h) for h in hits)
    verdict = "reproduced" if n == 2 else "partly" if n == 1 else "not reproduced"
    if n and none is not None and _contains0(none, "mia_advantage") and _contains0(none, "mia_auc") is not False:
        verdict = "inconclusive (none also matches retrain)"
    return verdict


def claims(s: q.Store, grid: str, verdicts: pd.DataFrame | None = None) -> tuple[list[list[str]], dict[str, Any]]:
    """Rows (finding, model, forget, measured, study, verdict) and the headline numbers. Judged on the held-out
    protocol where the store has it, else on the study's MIA success (older stores); leakage claims follow the
    report's verdict table (`verdict_report.verdict_rows`) where it has the row."""
    heldout = s.has(*q.HELDOUT_COLUMNS)
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
            if none is not None and heldout:
                vr = _verdict_rows(verdicts, grid, ref, model, forget, "none")
                rows.append(["original model leaks", model, tag, f"advantage {_ci(none, 'mia_advantage')}; AUC "
                             f"{_ci(none, 'mia_auc')}; TPR@1%FPR {_ci(none, 'mia_tpr_at_1pct_fpr')}; MIA success "
                             f"(study's number) {_study(none)}", "MIA ≈ 0.90",
                             _leaks_from_verdicts(vr) if not vr.empty else _heldout_leaks(none)])
            elif none is not None:
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
                rows.append(["original model leaks", model, tag, f"MIA {_study(none)}; AUC "
                             f"{_ci(none, 'mia_auc')}; TPR@1%FPR {_ci(none, 'mia_tpr_at_1pct_fpr')}", "MIA ≈ 0.90",
                             verdict + " (study protocol only: this store has no held-out columns)"])
            if none is not None:
                if forget == primary:
                    hm["none"] = {k: _v(none.get(k)) for k in ("mia_success", "mia_success_lo", "mia_success_hi",
                                                              "mia_auc", "acc_test_retain", "mia_nonmember_flag_rate",
                                                              "mia_advantage", q.STUDY_FLAG_RATE)}
            for m in unlearning_methods():
                if m not in sub.index:
                    continue
                r = sub.loc[m]
                if heldout:
                    vr = _verdict_rows(verdicts, grid, ref, model, forget, m)
                    rows.append([f"{m} removes leakage", model, tag,
                                 f"Δ advantage vs retrain {_ci(r, 'gap_mia_advantage')}; Δ AUC vs retrain "
                                 f"{_ci(r, 'gap_mia_auc')}; MIA success (study's number) {_study(r)}",
                                 "MIA ≈ 0.00",
                                 _removes_from_verdicts(vr) if not vr.empty else _heldout_removes(r, none)])
                else:
                    v = _v(r["mia_success"])
                    verdict = _grade(v, lambda x: x <= 0.1, lambda x: x <= 0.5)
                    glo, ghi = _v(r.get("gap_mia_success_lo")), _v(r.get("gap_mia_success_hi"))
                    if verdict in ("partly", "not reproduced") and glo is not None and ghi is not None:
                        verdict += "; but matches retrain (Δ interval contains 0)" if glo <= 0 <= ghi else \
                            "; and differs from retrain"
                    rows.append([f"{m} removes leakage", model, tag, f"MIA {_study(r)}; AUC "
                                 f"{_ci(r, 'mia_auc')}; Δ MIA vs retrain {_ci(r, 'gap_mia_success')}", "MIA ≈ 0.00",
                                 verdict + " (study protocol only: this store has no held-out columns)"])
                drop = None
                if none is not None and _v(none["acc_test_retain"]) is not None and _v(r["acc_test_retain"]) is not None:
                    drop = float(none["acc_test_retain"]) - float(r["acc_test_retain"])
                rows.append([f"{m} keeps retained accuracy", model, tag,
                             f"acc {_ci(r, 'acc_test_retain')} vs none {_ci(none, 'acc_test_retain') if none is not None else '—'}"
                             f" (drop {drop:+.3f})" if drop is not None else f"acc {_ci(r, 'acc_test_retain')}",
                             "stays", _grade(drop, lambda x: x <= 0.05, lambda x: x <= 0.15)])
                if forget == primary:
                    hm[m] = {k: _v(r.get(k)) for k in ("mia_success", "mia_success_lo", "mia_success_hi", "mia_auc",
                                                      "acc_test_retain", "gap_mia_success", "gap_acc_test_retain",
                                                      "mia_advantage", q.STUDY_FLAG_RATE)}
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
        lm = "mia_auc" if heldout else "mia_success"
        if _v(few[lm]) is None or _v(ex[lm]) is None:
            continue
        d = _v(few[lm]) - _v(ex[lm])
        sep = _v(few[f"{lm}_hi"]) is not None and _v(ex[f"{lm}_lo"]) is not None and \
            _v(few[f"{lm}_hi"]) < _v(ex[f"{lm}_lo"])
        verdict = "reproduced" if d <= -0.10 and sep else "partly" if d < 0 and (sep or d <= -0.10) else "not reproduced"
        rows.append(["shot shield (few inference shots weaken the attack)", model, str(primary),
                     f"AUC {_ci(few, 'mia_auc')} at {int(few['eval_shots'])} shots vs {_ci(ex, 'mia_auc')} exact; MIA "
                     f"success (study's number) {_ci(few, 'mia_success')} vs {_ci(ex, 'mia_success')} "
                     f"(Δ {lm} {d:+.3f})", "attack weakens", verdict])
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
            parts.append(f"the original model's forget set is flagged at {_f(n['mia_success'])} "
                         f"[{_f(n['mia_success_lo'])}, {_f(n['mia_success_hi'])}] (AUC {_f(n['mia_auc'])}, "
                         + (f"held-out advantage {_f(n['mia_advantage'])}, " if n.get("mia_advantage") is not None
                            else "")
                         + f"retained test accuracy {_f(n['acc_test_retain'])}"
                         + _flag_clause(n) + ")")
        for m in unlearning_methods():
            r = hm.get(m)
            if r and r.get("mia_success") is not None:
                parts.append(f"{m} {_f(r['mia_success'])} (retained acc {_f(r['acc_test_retain'])}"
                             + (f", advantage {_f(r['mia_advantage'])}" if r.get("mia_advantage") is not None else "")
                             + _flag_clause(r) + ")")
        sh = hm.get("shots")
        if sh:
            parts.append(f"at {sh['few']} inference shots the original model's forget set is flagged at "
                         f"{_f(sh['mia_few'])} vs "
                         f"{_f(sh['mia_exact'])} exact (AUC {_f(sh['auc_few'])} vs {_f(sh['auc_exact'])})")
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
