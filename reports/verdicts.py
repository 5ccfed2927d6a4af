"""Verdicts on "unlearning removes leakage" and the loss-KS forget-quality test (docs/metrics.md, "Verdicts").

A verdict compares a method with `retrain` under one attack at one slice (model, forget set, shots, backend),
seed by seed: the method's cell against the `retrain` cell of the same seed. Its signals are the difference in
attack AUC and in TPR at 1% FPR, each with an interval over seeds that carries both the seed-to-seed spread and
every cell's own sampling error. Each verdict is one of:

- `equivalent to retrain`: two one-sided tests (TOST) put every signal's difference inside its margin, and the
  signal tells the untouched model (`none`) from `retrain` at this slice;
- `differs`: a signal's difference excludes 0;
- `not discriminating`: `none` itself is equivalent to `retrain` here, so the signal says nothing about a method;
- `underpowered`: none of the above at this number of seeds and samples; the row gives the minimum detectable
  difference (MDE).

The margins are fixed before any data is read (`Margins`), and Holm's step-down correction runs over every
test of the report's verdicts. Everything is seeded: the same store gives the same table.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
POWER = 0.80  # of the minimum detectable difference
N_BOOT = 1000
BOOT_SEED = 20240917
FPR = 0.01
Z95 = float(stats.norm.ppf(0.975))

EQUIVALENT = "equivalent to retrain"
DIFFERS = "differs"
NOT_DISCRIMINATING = "not discriminating"
UNDERPOWERED = "underpowered"
VERDICTS = (EQUIVALENT, DIFFERS, NOT_DISCRIMINATING, UNDERPOWERED)
SIGNALS = ("auc", "tpr_at_1pct_fpr")
SIGNAL_LABELS = {"auc": "ΔAUC", "tpr_at_1pct_fpr": "ΔTPR@1%FPR"}


@dataclass(frozen=True)
class Margins:
    """Equivalence margins against `retrain`: |Δ| of each signal must lie inside. Fixed before the data is read."""

    auc: float = 0.03
    tpr_at_1pct_fpr: float = 0.02

    def __post_init__(self) -> None:
        for name in SIGNALS:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < 1):
                raise ValueError(f"equivalence margin {name!r} must be a number in (0, 1), got {v!r}")

    def of(self, signal: str) -> float:
        return float(getattr(self, signal))


# ------------------------------------------------------------------------------------------------ one cell
@dataclass(frozen=True, eq=False)
class Cell:
    """One evaluated model's attack scores: members (the forget set) and scored non-members. `ids` names each
    score's sample, the same sample under the same id in every cell and seed, so that resampling moves a shared
    sample in every cell at once (cells of one seed are paired; seeds that reuse samples are correlated)."""

    scores: np.ndarray
    member: np.ndarray
    ids: np.ndarray

    @classmethod
    def of(cls, members: Any, nonmembers: Any, member_ids: Any, nonmember_ids: Any) -> Cell:
        m, n = np.asarray(members, float), np.asarray(nonmembers, float)
        ids = np.r_[np.asarray(member_ids, np.int64), np.asarray(nonmember_ids, np.int64)]
        if len(ids) != len(m) + len(n):
            raise ValueError("one id per score is needed")
        return cls(np.r_[m, n], np.r_[np.ones(len(m), bool), np.zeros(len(n), bool)], ids)

    @property
    def n_members(self) -> int:
        return int(self.member.sum())

    @property
    def n_nonmembers(self) -> int:
        return int((~self.member).sum())

    @cached_property
    def _sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(order, member flags in that order, start of each sample's tie group, end of it), scores ascending."""
        order = np.argsort(self.scores, kind="stable")
        s = self.scores[order]
        new = np.r_[True, s[1:] != s[:-1]]
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], len(s)]
        group = np.cumsum(new) - 1
        return order, self.member[order], starts[group], ends[group]


def _member_sums(cell: Cell, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Under each column of weights (samples x replicates), for every member in ascending score order: the
    non-member weight strictly below its score and tied with it, the member weight strictly below it, and the
    member weights themselves. Non-members are summed per stretch between members' tie groups (reduceat), so
    the work over all samples is one pass."""
    order, member, start, end = cell._sorted
    idx = np.flatnonzero(member)
    w = w[order]
    wn = w * (~member)[:, None]
    cuts = np.unique(np.r_[0, start[idx], end[idx]])
    cuts = cuts[cuts < len(w)]
    below_cut = np.zeros((len(cuts) + 1, w.shape[1]))
    np.cumsum(np.add.reduceat(wn, cuts, axis=0), axis=0, out=below_cut[1:])  # weight below each cut, then all
    lo = below_cut[np.searchsorted(cuts, start[idx])]
    hi = below_cut[np.minimum(np.searchsorted(cuts, end[idx]), len(cuts))]
    wp = w[idx]
    cp = np.zeros((len(idx) + 1, w.shape[1]))
    np.cumsum(wp, axis=0, out=cp[1:])
    return lo, hi - lo, cp[np.searchsorted(idx, start[idx])], wp


def weighted_auc(cell: Cell, w: np.ndarray, sums: tuple | None = None) -> np.ndarray:
    """AUC (ties count one half) under each column of sample weights `w` (samples x replicates)."""
    below, tied, _, wp = sums or _member_sums(cell, w)
    w0 = w[~cell.member].sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (wp * (below + 0.5 * tied)).sum(0) / (wp.sum(0) * w0)


def weighted_tpr(cell: Cell, w: np.ndarray, sums: tuple | None = None, fpr: float = FPR) -> np.ndarray:
    """Highest TPR at a threshold (a threshold flags the scores at or above it) whose FPR does not exceed `fpr`,
    under each column of weights; NaN when the non-members cannot resolve `fpr` (below 1/n). The best threshold
    is always a member's score, so only those are tried."""
    if cell.n_members == 0 or cell.n_nonmembers == 0 or fpr < 1.0 / cell.n_nonmembers - 1e-12:
        return np.full(w.shape[1], np.nan)
    below, _, members_below, wp = sums or _member_sums(cell, w)
    w1, w0 = wp.sum(0), w[~cell.member].sum(0)
    tp, fp = w1 - members_below, w0 - below  # weight at or above each member's score
    ok = fp <= fpr * w0 + 1e-9
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, tp, 0.0).max(0) / w1


STATISTICS: dict[str, Callable[..., np.ndarray]] = {"auc": weighted_auc, "tpr_at_1pct_fpr": weighted_tpr}


def cell_value(cell: Cell, signal: str) -> float:
    return float(STATISTICS[signal](cell, np.ones((len(cell.scores), 1)))[0])


def cell_se(cell: Cell, signal: str) -> float:
    """The cell's own standard error: Hanley-McNeil for an AUC, the Wilson interval's half-width / 1.96 for a TPR
    (members are its denominator), so a rate of 0 or 1 still has one."""
    v, n1, n0 = cell_value(cell, signal), cell.n_members, cell.n_nonmembers
    if math.isnan(v):
        return math.nan
    if signal == "auc":
        q1, q2 = v / (2 - v), 2 * v * v / (1 + v)
        return math.sqrt(max(0.0, v * (1 - v) + (n1 - 1) * (q1 - v * v) + (n0 - 1) * (q2 - v * v)) / (n1 * n0))
    denom = 1 + Z95**2 / n1
    half = Z95 * math.sqrt(v * (1 - v) / n1 + Z95**2 / (4 * n1 * n1)) / denom
    return half / Z95


# ------------------------------------------------------------------------------------------------ resampling
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_POISSON_CDF = stats.poisson.cdf(np.arange(40), 1.0)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fixed, well-spread hash of 64-bit integers."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def sample_weights(ids: np.ndarray, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """Poisson(1) bootstrap weights (samples x replicates), a function of (sample id, replicate, seed) only: a
    sample shared by two cells gets the same weight in both, whichever cells a report holds."""
    with np.errstate(over="ignore"):
        key = _mix(ids.astype(np.uint64) + np.uint64(seed % 2**64) * _GOLDEN)
        reps = np.arange(1, n_boot + 1, dtype=np.uint64)[None, :] * _GOLDEN
        z = _mix(key[:, None] ^ _mix(reps))
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(_POISSON_CDF, u, side="right").astype(np.float64)


class Resampler:
    """`sample_weights` of every id a report holds, drawn once; a cell's weights are its ids' rows."""

    def __init__(self, ids: Any, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> None:
        self.ids = np.unique(np.asarray(ids, np.int64))
        self.n_boot, self.seed = n_boot, seed
        self._w = sample_weights(self.ids, n_boot, seed).astype(np.float32)  # small integers: exact

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.ids, ids)
        if not np.array_equal(self.ids[np.minimum(pos, len(self.ids) - 1)], ids):
            return sample_weights(ids, self.n_boot, self.seed)
        return self._w[pos]


_REPLICATES: weakref.WeakKeyDictionary[Cell, dict[tuple[str, int, int], np.ndarray]] = weakref.WeakKeyDictionary()


def replicates(cell: Cell, signal: str, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
               weights: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The signal under each bootstrap replicate's weights (every signal computed at once, once per cell)."""
    memo = _REPLICATES.setdefault(cell, {})
    if (signal, n_boot, seed) not in memo:
        w = weights(cell.ids) if weights is not None else sample_weights(cell.ids, n_boot, seed)
        sums = _member_sums(cell, w)
        memo.update({(sig, n_boot, seed): f(cell, w, sums) for sig, f in STATISTICS.items()})
    return memo[(signal, n_boot, seed)]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Share of samples two seeds have in common (1 for identical ones): a bound on how correlated their
    sampling errors are."""
    return len(np.intersect1d(a, b)) / math.sqrt(len(a) * len(b)) if len(a) and len(b) else 0.0


# ------------------------------------------------------------------------------------------------ across seeds
@dataclass(frozen=True)
class Estimate:
    """Mean over seeds of a per-seed difference (method minus retrain) with its standard error `se`, the larger of
    - `se_spread`: the seeds' spread, s / sqrt(n), plus the covariance of seeds that share samples (s misses it;
      with it the variance is unbiased);
    - `se_sampling`: what the cells' own sampling errors alone give the mean (each seed's error the larger of its
      paired bootstrap's and its two cells' own intervals combined; seeds that share samples correlated).
    So the interval never collapses when every seed gives the same value, and is never narrower than its cells'.
    Tests use Student's t with n_seeds - 1 degrees of freedom."""

    value: float
    se: float
    n_seeds: int
    se_spread: float
    se_sampling: float
    per_seed: tuple[float, ...] = ()

    @property
    def df(self) -> int:
        return self.n_seeds - 1

    def _q(self, p: float) -> float:
        return float(stats.t.ppf(p, self.df)) if self.df >= 1 else float(stats.norm.ppf(p))

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The two-sided interval; with one seed the cells' own (normal) interval, which knows no seed spread."""
        half = self._q(0.5 + level / 2) * self.se
        return self.value - half, self.value + half

    def _sf(self, x: float) -> float:
        return float(stats.t.sf(x, self.df))

    def p_differs(self) -> float:
        """Two-sided p of Δ = 0; NaN below 2 seeds (the seed spread is unknown)."""
        if self.df < 1 or math.isnan(self.value):
            return math.nan
        if self.se == 0:
            return 0.0 if self.value != 0 else 1.0
        return min(1.0, 2 * self._sf(abs(self.value) / self.se))

    def p_equivalent(self, margin: float) -> float:
        """TOST p of |Δ| >= margin (the larger of the two one-sided p-values)."""
        if self.df < 1 or math.isnan(self.value):
            return math.nan
        if self.se == 0:
            return 0.0 if abs(self.value) < margin else 1.0
        return max(self._sf((self.value + margin) / self.se), self._sf((margin - self.value) / self.se))

    def mde(self, alpha: float = ALPHA, power: float = POWER) -> float:
        """The smallest true difference a two-sided test at `alpha` detects with probability `power`."""
        if self.df < 1 or math.isnan(self.se):
            return math.nan
        return (self._q(1 - alpha / 2) + self._q(power)) * self.se


def difference(method: Sequence[Cell], retrain: Sequence[Cell], signal: str, *, n_boot: int = N_BOOT,
               seed: int = BOOT_SEED, weights: Callable[[np.ndarray], np.ndarray] | None = None) -> Estimate:
    """Mean over seeds of signal(method cell) - signal(retrain cell of the same seed). Seeds where the signal is
    undefined (a TPR below the FPR floor) are left out."""
    if len(method) != len(retrain):
        raise ValueError("one retrain cell per method cell (the same seed) is needed")
    pairs = [(m, r) for m, r in zip(method, retrain)
             if not (math.isnan(cell_value(m, signal)) or math.isnan(cell_value(r, signal)))]
    if not pairs:
        return Estimate(math.nan, math.nan, 0, math.nan, math.nan)
    n = len(pairs)
    point = np.array([cell_value(m, signal) - cell_value(r, signal) for m, r in pairs])
    reps = np.stack([replicates(m, signal, n_boot, seed, weights) - replicates(r, signal, n_boot, seed, weights)
                     for m, r in pairs])
    reps = np.where(np.isnan(reps), point[:, None], reps)  # a replicate that drew no member or non-member
    # each seed's sampling error: the paired bootstrap's, never below the cells' own intervals combined
    own = np.array([math.hypot(cell_se(m, signal), cell_se(r, signal)) for m, r in pairs])
    sd = reps.std(axis=1, ddof=1)
    u = np.maximum(sd, own)
    # how the seeds' sampling errors move together: the bootstrap's correlation (a shared sample carries the same
    # weight in every seed), at most the share of samples two seeds have in common (seeds with none in common
    # are independent, whatever the replicates' noise says) and at least 0 (a negative estimate, from a sample
    # that is a member in one seed and a non-member in another, would shrink the interval on noise); where a
    # seed's bootstrap cannot move, the share itself
    ids = [np.unique(np.r_[m.ids, r.ids]) for m, r in pairs]
    share = np.array([[_overlap(x, y) for y in ids] for x in ids])
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.corrcoef(reps) if n > 1 else np.ones((1, 1))
    flat = sd == 0
    rho = np.where(np.isnan(boot) | flat[:, None] | flat[None, :], share, np.clip(boot, 0.0, share))
    np.fill_diagonal(rho, 1.0)
    cov = rho * np.outer(u, u)
    sampling = float(cov.sum()) / n**2
    if n >= 2:
        # E[s^2] misses the covariance that seeds sharing samples have; adding it back makes s^2/n unbiased
        shared = float(cov.sum() - np.trace(cov)) / (n * (n - 1))
        spread = float(point.var(ddof=1)) / n + shared
    else:
        spread = 0.0
    var = max(spread, sampling)
    return Estimate(float(point.mean()), math.sqrt(max(var, 0.0)), n, math.sqrt(max(spread, 0.0)),
                    math.sqrt(sampling), tuple(point.tolist()))


# ------------------------------------------------------------------------------------------------ verdicts
@dataclass(frozen=True)
class Comparison:
    """One method against `retrain` at one slice (its key names model, forget set, shots, backend and attack)."""

    slice: tuple
    method: str
    estimates: Mapping[str, Estimate]
    margins: Margins | None = None  # its grid's own margins; None: the family's (`judge`'s)

    def signals(self) -> list[str]:
        return [s for s, e in self.estimates.items() if e.n_seeds >= 2 and not math.isnan(e.value)]

    def p_equivalent(self, margins: Margins) -> float:
        """Equivalent only if every signal is (intersection-union test: the largest TOST p)."""
        sig = self.signals()
        return max(self.estimates[s].p_equivalent(margins.of(s)) for s in sig) if sig else math.nan

    def p_differs(self) -> float:
        """Differs if any signal does (Bonferroni over the signals)."""
        sig = self.signals()
        return min(1.0, len(sig) * min(self.estimates[s].p_differs() for s in sig)) if sig else math.nan


@dataclass(frozen=True)
class Verdict:
    comparison: Comparison
    verdict: str
    p_equivalent: float  # Holm-adjusted over the report's family
    p_differs: float
    mde: Mapping[str, float]
    note: str = ""


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN stays NaN and is not counted in the family."""
    p = np.asarray(p, float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def judge(comparisons: Sequence[Comparison], margins: Margins = Margins(), alpha: float = ALPHA,
          power: float = POWER) -> list[Verdict]:
    """The verdict of every comparison. The family is every test the comparisons make (an equivalence and a
    difference test each, `none`'s included); Holm's correction runs over all of them. A method's verdict reads
    `none`'s at the same slice: only a signal that tells `none` from `retrain` can call a method equivalent."""
    raw = [p for c in comparisons for p in (c.p_equivalent(c.margins or margins), c.p_differs())]
    adj = holm(raw)
    p_eq, p_diff = adj[0::2], adj[1::2]

    def own(i: int) -> str:
        if p_diff[i] <= alpha:
            return DIFFERS
        return EQUIVALENT if p_eq[i] <= alpha else UNDERPOWERED

    gate = {c.slice: own(i) for i, c in enumerate(comparisons) if c.method == "none"}
    out = []
    for i, c in enumerate(comparisons):
        v, note = own(i), ""
        if c.method == "none":
            v = NOT_DISCRIMINATING if v == EQUIVALENT else v
        elif v != DIFFERS:
            g = gate.get(c.slice)
            if g == EQUIVALENT:
                v = NOT_DISCRIMINATING
            elif v == EQUIVALENT and g != DIFFERS:
                v, note = UNDERPOWERED, ("no `none` cells at this slice" if g is None else
                                         "equivalent, but the signal has not been shown to tell `none` from `retrain`")
        if min((e.n_seeds for e in c.estimates.values()), default=0) < 2:
            note = note or "fewer than 2 seeds: the seed-to-seed spread is unknown, so no test runs (MDE and p are —)"
        mde = {s: e.mde(alpha, power) for s, e in c.estimates.items()}
        out.append(Verdict(c, v, float(p_eq[i]), float(p_diff[i]), mde, note))
    return out


# ------------------------------------------------------------------------------------------------ loss KS
@dataclass(frozen=True)
class LossKS:
    """Two-sample Kolmogorov-Smirnov test of per-example forget-set losses, unlearned against `retrain`, per seed,
    with the seeds' p-values combined (Fisher or Stouffer), never averaged."""

    statistics: tuple[float, ...]
    pvalues: tuple[float, ...]
    p_combined: float
    combine: str

    @property
    def statistic(self) -> float:
        """Mean KS statistic over seeds (a distance in [0, 1]; the p-values are combined, not averaged)."""
        return float(np.mean(self.statistics)) if self.statistics else math.nan


def loss_ks(pairs: Sequence[tuple[Any, Any]], combine: str = "fisher") -> LossKS:
    """`pairs`: per seed, (unlearned model's forget losses, retrain's forget losses)."""
    if combine not in ("fisher", "stouffer"):
        raise ValueError(f"combine must be 'fisher' or 'stouffer', got {combine!r}")
    res = [stats.ks_2samp(np.asarray(u, float), np.asarray(r, float)) for u, r in pairs if len(u) and len(r)]
    if not res:
        return LossKS((), (), math.nan, combine)
    ps = [float(x.pvalue) for x in res]
    # Stouffer's z is infinite at p = 0 or 1; keep those p inside (0, 1) by the smallest double's margin
    pc = ps if combine == "fisher" else [min(max(p, np.finfo(float).tiny), 1 - 1e-16) for p in ps]
    combined = float(stats.combine_pvalues(pc, method=combine).pvalue) if len(ps) > 1 else ps[0]
    return LossKS(tuple(float(x.statistic) for x in res), tuple(ps), combined, combine)


# ------------------------------------------------------------------------------------------------ from a store
SLICE_AXES = ("model", "forget", "train_shots", "unlearn_shots", "eval_shots", "backend")
# per-example score of each attack in the `examples` view (higher = more likely a member); `loss` is negated
ATTACK_SCORES = {"paper-mlp": "attack_score", "loss": "loss", "rmia": "rmia_score", "lira": "lira_score"}
_SPLIT_CODE = {"train_forget": 1, "population": 2, "test": 3}


def _columns(con: Any, table: str) -> set[str]:
    try:
        return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    except Exception:  # noqa: BLE001 -- a view that is not there is simply not a source
        return set()


def _lit(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def example_scores(con: Any, grid: str, columns: Sequence[str] = tuple(ATTACK_SCORES.values())) -> pd.DataFrame:
    """One row per forget-set member and scored non-member of every ok cell of `grid`: the slice axes, method,
    seed, cell_id, `member`, `dataset_index` and `loss`, and each score column of `columns` that the store has.
    Non-members are the `population` rows (P_eval); a cell without them (older stores) uses the test samples of
    its forget set's classes, as the report's ROC does. `con` is a DuckDB connection with the store's `cells`
    and `examples` views (harness.store.register_views; reports.queries.connect's `Store.con`)."""
    src = "examples"
    if "dataset_index" not in _columns(con, src) and "dataset_index" in _columns(con, "store_examples"):
        src = "store_examples"  # queries.connect keeps the store's own view beside its narrower table
    have = _columns(con, src)
    scores = [f"e.{c}" for c in dict.fromkeys(columns) if c in have and c != "loss"]
    ident = "e.dataset_index" if "dataset_index" in have else "NULL::BIGINT"
    return con.execute(f"""
      WITH c AS (SELECT cell_id, {', '.join(SLICE_AXES)}, method, seed FROM cells
                 WHERE status = 'ok' AND grid = {_lit(grid)}),
      ex AS (SELECT e.* FROM {src} e SEMI JOIN c ON c.cell_id = e.cell_id),
      pop AS (SELECT DISTINCT cell_id FROM ex WHERE split = 'population'),
      fl AS (SELECT cell_id, list_distinct(list(label)) AS labels FROM ex WHERE split = 'train_forget' GROUP BY 1)
      SELECT c.*, e.split = 'train_forget' AS member, e.split, e.sample_index, {ident} AS dataset_index,
             e.loss{''.join(', ' + s for s in scores)}
      FROM c JOIN ex e ON e.cell_id = c.cell_id JOIN fl ON fl.cell_id = c.cell_id
      WHERE e.split = 'train_forget' OR (e.split = 'population' AND c.cell_id IN (SELECT cell_id FROM pop))
         OR (e.split = 'test' AND c.cell_id NOT IN (SELECT cell_id FROM pop) AND list_contains(fl.labels, e.label))
      ORDER BY c.cell_id, e.split, e.sample_index""").df()


def sample_ids(df: pd.DataFrame) -> np.ndarray:
    """A sample's id: its row in the raw dataset where the store has it (the same across seeds), else a hash of
    (seed, split, index in the split), the same for every cell of one seed."""
    fallback = _mix((df["seed"].to_numpy(np.int64).astype(np.uint64) << np.uint64(40))
                    | (df["split"].map(_SPLIT_CODE).to_numpy(np.int64).astype(np.uint64) << np.uint64(32))
                    | df["sample_index"].to_numpy(np.int64).astype(np.uint64)).view(np.int64)
    known = df["dataset_index"].notna().to_numpy()
    return np.where(known, df["dataset_index"].fillna(0).to_numpy(np.int64), fallback)


def _key(values: Sequence[Any]) -> tuple:
    """A slice's axis values with every missing value (None, NaN, pandas' NA: exact shots) as None."""
    return tuple(None if v is None or (np.isscalar(v) or v is pd.NA) and pd.isna(v) else v for v in values)


def _scored_cells(con: Any, grid: str, attacks: Mapping[str, str], n_boot: int,
                  seed: int) -> tuple[dict[tuple[str, str], Cell], pd.DataFrame, list[str], Resampler | None]:
    """Every ok cell's `Cell` per attack (keyed by (cell_id, attack)), one row of axes per cell, the attacks whose
    score column the store has, and the resampler shared by the cells (None for a grid without examples)."""
    df = example_scores(con, grid, tuple(attacks.values()))
    if df.empty:
        return {}, df, [], None
    df["sample_id"] = sample_ids(df)
    resample = Resampler(df["sample_id"].to_numpy(), n_boot, seed)
    names = [a for a, col in attacks.items() if col in df.columns]
    cells: dict[tuple[str, str], Cell] = {}
    for cid, g in df.groupby("cell_id", sort=False):
        member = g["member"].to_numpy(bool)
        for a in names:
            x = g[attacks[a]].to_numpy(float) * (-1.0 if attacks[a] == "loss" else 1.0)
            ok = ~np.isnan(x)
            if ok[member].any() and ok[~member].any():
                cells[(cid, a)] = Cell(x[ok], member[ok], g["sample_id"].to_numpy()[ok])
    return cells, df.drop_duplicates("cell_id"), names, resample


def _by_seed(g: pd.DataFrame, method: str) -> dict[int, str]:
    return {int(r.seed): r.cell_id for r in g[g["method"] == method].itertuples()}


def _paired(cells: Mapping[tuple[str, str], Cell], own: Mapping[int, str], retrain: Mapping[int, str],
            attack: str) -> tuple[list[Cell], list[Cell]]:
    """The method's and `retrain`'s cells of every seed both have under `attack`, in seed order."""
    seeds = [s for s in sorted(own) if s in retrain and (own[s], attack) in cells and (retrain[s], attack) in cells]
    return [cells[(own[s], attack)] for s in seeds], [cells[(retrain[s], attack)] for s in seeds]


def verdict_table(con: Any, grid: str, margins: Margins = Margins(), alpha: float = ALPHA, *, n_boot: int = N_BOOT,
                  seed: int = BOOT_SEED, attacks: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The verdict of every method (and `none`) against `retrain` per slice (model, forget set, shots, backend) and
    attack, over the seeds both have: each signal's mean difference with its 95% interval and MDE, the
    Holm-adjusted p-values of the equivalence and difference tests, and the verdict. `attacks` maps an attack's
    name to its score column in `examples` (default `ATTACK_SCORES`; `loss` is negated). Empty without `retrain`."""
    cells, meta, names, resample = _scored_cells(con, grid, dict(attacks or ATTACK_SCORES), n_boot, seed)
    comparisons = []
    for skey, g in meta.groupby(list(SLICE_AXES), dropna=False, sort=True):
        retrain = _by_seed(g, "retrain")
        for method in sorted(set(g["method"]) - {"retrain"}, key=lambda m: (m != "none", m)):
            own = _by_seed(g, method)
            for a in names:
                m_cells, r_cells = _paired(cells, own, retrain, a)
                if not m_cells:
                    continue
                est = {sig: difference(m_cells, r_cells, sig, n_boot=n_boot, seed=seed, weights=resample)
                       for sig in SIGNALS}
                comparisons.append(Comparison((*_key(skey), a), method, est))
    if not comparisons:
        return pd.DataFrame()
    return _table(judge(comparisons, margins, alpha), len(comparisons))


def _strongest(cells: Mapping[tuple[str, str], Cell], ids: Sequence[str], names: Sequence[str], signal: str) -> str:
    """The attack with the highest mean `signal` over the cells `ids` (the original model's at a slice)."""
    def mean(a: str) -> float:
        vals = [cell_value(cells[(c, a)], signal) for c in ids if (c, a) in cells]
        vals = [x for x in vals if not math.isnan(x)]
        return float(np.mean(vals)) if vals else -math.inf
    return max(names, key=mean)


def strongest_comparisons(con: Any, grid: str, margins: Margins = Margins(), *, n_boot: int = N_BOOT,
                          seed: int = BOOT_SEED, attacks: Mapping[str, str] | None = None,
                          skip: Callable[[tuple, str], bool] = lambda key, method: False) -> list[Comparison]:
    """One comparison per slice, signal and method (and `none`) against `retrain`, on the slice's strongest attack
    for that signal: the attack with the highest mean AUC (or TPR@1%FPR) on the original model's cells (on every
    cell of the slice where it has none). Each comparison carries one signal, so each signal gets its own verdict,
    and its slice key is (grid, *SLICE_AXES, signal, attack): `none`'s verdict gates the methods' per signal.
    `skip(slice axes, method)` leaves a method out of the family (a method that did not run: it is no result)."""
    cells, meta, names, resample = _scored_cells(con, grid, dict(attacks or ATTACK_SCORES), n_boot, seed)
    out = []
    for skey, g in meta.groupby(list(SLICE_AXES), dropna=False, sort=True):
        key, retrain = _key(skey), _by_seed(g, "retrain")
        methods = [m for m in sorted(set(g["method"]) - {"retrain"}, key=lambda m: (m != "none", m))
                   if not skip(key, m)]
        if not retrain or not names or not methods:
            continue
        base = list(_by_seed(g, "none").values()) or list(g["cell_id"])
        for sig in SIGNALS:
            a = _strongest(cells, base, names, sig)
            for method in methods:
                m_cells, r_cells = _paired(cells, _by_seed(g, method), retrain, a)
                est = difference(m_cells, r_cells, sig, n_boot=n_boot, seed=seed, weights=resample) \
                    if m_cells else None
                if est is not None and est.n_seeds:  # no seed resolves the signal (TPR below the FPR floor)
                    out.append(Comparison((grid, *key, sig, a), method, {sig: est}, margins))
    return out


def _table(verdicts: Sequence[Verdict], n: int) -> pd.DataFrame:
    rows = []
    for v in verdicts:
        c = v.comparison
        row: dict[str, Any] = dict(zip((*SLICE_AXES, "attack"), c.slice))
        row["method"] = c.method
        row["n_seeds"] = max((e.n_seeds for e in c.estimates.values()), default=0)
        for sig, e in c.estimates.items():
            lo, hi = e.interval() if e.n_seeds else (math.nan, math.nan)
            row.update({f"d_{sig}": e.value, f"d_{sig}_lo": lo, f"d_{sig}_hi": hi, f"mde_{sig}": v.mde[sig]})
        row.update(p_equivalent=v.p_equivalent, p_differs=v.p_differs, verdict=v.verdict, note=v.note,
                   n_tests=2 * n)
        rows.append(row)
    return pd.DataFrame(rows)


def loss_ks_table(con: Any, grid: str, combine: str = "fisher") -> pd.DataFrame:
    """Loss KS per slice and method against `retrain`: the KS statistic of each seed (forget-set losses), their
    mean, and the seeds' p-values combined (`combine`: fisher or stouffer)."""
    df = example_scores(con, grid, ())
    if df.empty:
        return pd.DataFrame()
    df = df[df["member"] & df["loss"].notna()]
    rows = []
    for skey, g in df.groupby(list(SLICE_AXES), dropna=False, sort=True):
        retrain = {int(s): x["loss"].to_numpy() for s, x in g[g["method"] == "retrain"].groupby("seed")}
        for method, gm in g[g["method"] != "retrain"].groupby("method"):
            pairs = [(x["loss"].to_numpy(), retrain[int(s)]) for s, x in gm.groupby("seed") if int(s) in retrain]
            if not pairs:
                continue
            res = loss_ks(pairs, combine)
            rows.append({**dict(zip(SLICE_AXES, _key(skey))), "method": method, "n_seeds": len(pairs),
                         "ks_statistic": res.statistic, "ks_statistics": res.statistics,
                         "p_combined": res.p_combined, "combine": combine})
    return pd.DataFrame(rows)


def rules(margins: Margins = Margins(), alpha: float = ALPHA, n_tests: int | None = None) -> list[str]:
    """The verdict rules as the report prints them."""
    family = f" ({n_tests} tests)" if n_tests else ""
    return [
        f"Margins, fixed before the data is read: |ΔAUC| <= {margins.auc:g} and |ΔTPR@1%FPR| <= "
        f"{margins.tpr_at_1pct_fpr:g} against `retrain` (same model, forget set, shots, backend and seed).",
        "Equivalent to retrain: two one-sided tests (TOST) put both differences inside their margins, and the "
        "signal tells `none` from `retrain` at this slice. Differs: a difference excludes 0 (the two signals "
        "Bonferroni-combined). Not discriminating: `none` is itself equivalent to `retrain` here, so the signal "
        "says nothing about a method. Underpowered: none of these; the row gives the minimum detectable difference "
        f"(two-sided α = {alpha:g}, power {POWER:.0%}).",
        "Intervals (95%) over seeds: Student's t with n − 1 degrees of freedom on the larger of the seeds' "
        "spread and the cells' own sampling errors (paired bootstrap over samples, never below each cell's "
        "Hanley–McNeil or Wilson interval), so no interval is narrower than its cells' or collapses to a point.",
        f"Holm's correction over every test of the report's verdicts{family}, at family-wise α = {alpha:g}.",
    ]
