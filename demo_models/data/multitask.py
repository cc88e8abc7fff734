"""Two-task data for the multi-task demos: a synthetic generator with a planted conflict, and Census-Income (KDD).

Both return :class:`MultiTaskData`: ``features`` [n, N] per-field value ids (0-based within each field),
``labels`` [n, T] in {0, 1}, the field names and cardinalities, the task names and the two fields the
entanglement monitor compares as (user, item).
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass

import torch

from .paths import dataset_path


@dataclass
class MultiTaskData:
    features: torch.Tensor
    labels: torch.Tensor
    field_names: list[str]
    field_dims: list[int]
    tasks: tuple[str, ...]
    user_field: str
    item_field: str
    conflict_field: str | None = None
    description: str = ""
    #: ``[n]`` per row: +1 where the (user, item) pair is planted click-near/purchase-far, -1 for the opposite
    #: plant, 0 elsewhere (synthetic data with ``pair_conflict`` only).
    planted_pairs: torch.Tensor | None = None


# ---- synthetic ------------------------------------------------------------------------------------------------
#: Fields of the synthetic data and their cardinalities. ``creative`` is where the two tasks conflict.
SYNTHETIC_FIELDS = {"user_id": 400, "item_id": 300, "user_segment": 8, "item_category": 12, "creative": 8, "hour": 24}
SYNTHETIC_TASKS = ("click", "purchase")
CONFLICT_FIELD = "creative"
#: User and item groups of the planted disagreeing pairs (``pair_conflict``): one group pair in PAIR_GROUPS per mode.
PAIR_GROUPS = 8


def synthetic_two_task(n_samples: int = 50_000, seed: int = 0, label_correlation: float = 0.7,
                       latent_dim: int = 4, pair_conflict: float = 0.0) -> MultiTaskData:
    """Two tasks that agree on every field but one, where they respond to it in opposite ways.

    Every user u and item i has a latent vector (p_u, q_i in R^d, standard normal / d^(1/4)); every value v of
    the other fields a scalar effect a_f(v) ~ N(0, 0.8^2), and ``creative`` values an effect c(v) ~ N(0, 1.2^2):

        logit_click    = <p_u, q_i> + a_segment + a_category + a_hour + c(creative) - 1
        logit_purchase = <p_u, q_i> + a_segment + a_category + a_hour - c(creative) - 1

    A creative that attracts clicks repels purchases (a "clickbait" creative); everything else pushes both tasks
    the same way. With ``pair_conflict = delta > 0`` the tasks also disagree on planted (user, item) pairs: every
    user and item falls in one of ``PAIR_GROUPS`` (8) random groups; a pair whose item group equals its user group
    gets ``+delta`` on the click logit and ``-delta`` on the purchase logit (``planted_pairs`` +1: click near,
    purchase far, for single-task models whose user-item distance tracks affinity), a pair whose item group is
    the user's group + 1 (mod 8) the opposite (-1); 1/8 of the pairs each. ``pair_conflict=0`` (the default)
    leaves the data exactly as without it. Labels are ``y_t = [logit_t + 1.6 * eps_t > 0]`` (a probit-like link) with noises that share
    a common part, ``corr(eps_click, eps_purchase) = label_correlation``, as a user's propensity to respond is
    common to both tasks.

    Why the conflict shows in the gradients: through a shared embedding, both tasks' gradients on a row are
    (residual x how the task reads the row). On agreeing fields the tasks read the rows alike and their
    residuals move together (shared signal and shared noise), so the cosine is positive; on ``creative`` the
    unlearned signal gives residuals of opposite sign, and once the model reads the row with opposite signs for
    the two tasks, the shared noise makes the gradients opposite: the cosine is negative throughout.
    """
    g = torch.Generator().manual_seed(seed)
    names, dims = list(SYNTHETIC_FIELDS), list(SYNTHETIC_FIELDS.values())
    features = torch.stack([torch.randint(0, d, (n_samples,), generator=g) for d in dims], dim=1)
    col = {name: features[:, i] for i, name in enumerate(names)}
    scale = latent_dim ** -0.25
    p = torch.randn(SYNTHETIC_FIELDS["user_id"], latent_dim, generator=g) * scale
    q = torch.randn(SYNTHETIC_FIELDS["item_id"], latent_dim, generator=g) * scale
    shared = (p[col["user_id"]] * q[col["item_id"]]).sum(1)
    for name in ("user_segment", "item_category", "hour"):
        shared = shared + 0.8 * torch.randn(SYNTHETIC_FIELDS[name], generator=g)[col[name]]
    conflict = 1.2 * torch.randn(SYNTHETIC_FIELDS[CONFLICT_FIELD], generator=g)[col[CONFLICT_FIELD]]
    common = torch.randn(n_samples, generator=g)
    noise = [math.sqrt(label_correlation) * common
             + math.sqrt(1 - label_correlation) * torch.randn(n_samples, generator=g) for _ in range(2)]
    # Drawn after every other draw, so that pair_conflict=0 leaves the data of earlier versions as they were.
    user_group = torch.randint(0, PAIR_GROUPS, (SYNTHETIC_FIELDS["user_id"],), generator=g)[col["user_id"]]
    item_group = torch.randint(0, PAIR_GROUPS, (SYNTHETIC_FIELDS["item_id"],), generator=g)[col["item_id"]]
    planted = (item_group == user_group).long() - (item_group == (user_group + 1) % PAIR_GROUPS).long()
    pair = pair_conflict * planted
    logits = (shared + conflict + pair - 1.0, shared - conflict - pair - 1.0)
    labels = torch.stack([(lg + 1.6 * eps > 0).float() for lg, eps in zip(logits, noise)], dim=1)
    return MultiTaskData(
        features=features, labels=labels, field_names=names, field_dims=dims, tasks=SYNTHETIC_TASKS,
        user_field="user_id", item_field="item_id", conflict_field=CONFLICT_FIELD,
        description=f"synthetic two-task data, conflict planted on '{CONFLICT_FIELD}'"
                    + (f" and on 2 x 1/{PAIR_GROUPS} of the user-item pairs" if pair_conflict else ""),
        planted_pairs=planted if pair_conflict else None,
    )


# ---- Census-Income (KDD) --------------------------------------------------------------------------------------
#: The 42 columns, named as in the MMoE authors' public demo (drawbridge/keras-mmoe).
CENSUS_COLUMNS = [
    "age", "class_worker", "det_ind_code", "det_occ_code", "education", "wage_per_hour", "hs_college",
    "marital_stat", "major_ind_code", "major_occ_code", "race", "hisp_origin", "sex", "union_member",
    "unemp_reason", "full_or_part_emp", "capital_gains", "capital_losses", "stock_dividends", "tax_filer_stat",
    "region_prev_res", "state_prev_res", "det_hh_fam_stat", "det_hh_summ", "instance_weight", "mig_chg_msa",
    "mig_chg_reg", "mig_move_reg", "mig_same", "mig_prev_sunbelt", "num_emp", "fam_under_18", "country_father",
    "country_mother", "country_self", "citizenship", "own_or_self", "vet_question", "vet_benefits",
    "weeks_worked", "year", "income_50k",
]
#: Numeric columns, cut into quantile buckets so that every feature is a categorical field.
CENSUS_NUMERIC = ("age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends", "num_emp",
                  "weeks_worked")
CENSUS_TASKS = ("income", "never_married")
CENSUS_BUCKETS = 16


def _buckets(values: list[str], n_buckets: int) -> list[str]:
    """Quantile bucket of each numeric value (ties kept together; a column that is mostly 0 gets few buckets)."""
    numbers = torch.tensor([float(v) for v in values], dtype=torch.float64)
    edges = torch.quantile(numbers, torch.linspace(0, 1, n_buckets + 1, dtype=torch.float64)[1:-1]).unique()
    return [str(b) for b in torch.bucketize(numbers, edges).tolist()]


def census_income(max_rows: int | None = None) -> MultiTaskData:
    """The MMoE paper's Census-Income tasks (Ma et al., KDD 2018): income above 50,000, and never married.

    Reads ``census-income/census-income.test.gz`` (99,762 rows; the UCI KDD test split). Features: every column
    but the two labels and the sampling weight; numeric ones cut into up to 16 quantile buckets. Value ids are
    assigned per field in order of first appearance. ``marital_stat`` is a label, so it is not a feature; the
    household columns still carry some of it, as in the paper's setup. The entanglement monitor compares
    ``education`` (the person) with ``major_occ_code`` (the job) in place of a user and an item.
    """
    path = dataset_path("census-income", "census-income.test.gz")
    with gzip.open(path, "rt") as handle:
        rows = [[v.strip() for v in line.split(",")] for line in handle if line.strip()]
    if max_rows is not None:
        rows = rows[:max_rows]
    if any(len(r) != len(CENSUS_COLUMNS) for r in rows):
        raise ValueError(f"{path}: expected {len(CENSUS_COLUMNS)} comma-separated columns in every row")
    columns = {name: [r[i] for r in rows] for i, name in enumerate(CENSUS_COLUMNS)}
    income = torch.tensor([v.startswith("50000+") for v in columns["income_50k"]], dtype=torch.float32)
    never_married = torch.tensor([v == "Never married" for v in columns["marital_stat"]], dtype=torch.float32)
    names = [c for c in CENSUS_COLUMNS if c not in ("income_50k", "marital_stat", "instance_weight")]
    ids, dims = [], []
    for name in names:
        values = _buckets(columns[name], CENSUS_BUCKETS) if name in CENSUS_NUMERIC else columns[name]
        vocab: dict[str, int] = {}
        ids.append(torch.tensor([vocab.setdefault(v, len(vocab)) for v in values]))
        dims.append(len(vocab))
    return MultiTaskData(
        features=torch.stack(ids, dim=1), labels=torch.stack([income, never_married], dim=1), field_names=names,
        field_dims=dims, tasks=CENSUS_TASKS, user_field="education", item_field="major_occ_code",
        description=f"Census-Income (KDD), {len(rows)} rows, {len(names)} fields",
    )


def load(name: str, seed: int = 0) -> MultiTaskData:
    if name == "synthetic":
        return synthetic_two_task(seed=seed)
    if name == "census-income":
        return census_income()
    raise ValueError(f"unknown multi-task data set '{name}': use 'synthetic' or 'census-income'")
