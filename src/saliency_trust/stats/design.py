"""Which observations decide a verdict, and how replicates are counted (Arun et al., Figs. 2 and 4).

The paper scored one trained InceptionV3 for utility (Fig. 2a) and one model
pair per similarity criterion (two InceptionV3 replicates for repeatability,
InceptionV3 vs DenseNet121 for reproducibility, Fig. 4), each image counted
once. That is the default design here (``stats.pooling: none``):

- utility: the first replicate of the primary architecture;
- repeatability: the pair (first, second) replicate of the primary architecture;
- reproducibility: the first primary replicate with the first replicate of the
  next architecture in the config.

Pooling several replicates with only a random intercept per image would count
each image's method effect once per replicate and shrink the standard errors
(pseudo-replication). ``stats.pooling: image_means`` therefore averages each
image's score over the replicates (utility) or model pairs (similarity) first,
so the mixed model still sees one observation per image and group, and its
error degrees of freedom stay those of the images.
"""

from __future__ import annotations

import pandas as pd

from saliency_trust.config import parse_model_name

POOLING = ("none", "image_means")


def check_pooling(pooling: str) -> None:
    if pooling not in POOLING:
        raise ValueError(f"stats.pooling: '{pooling}' is not one of {list(POOLING)}")


def utility_models(primary_models: list[str], pooling: str) -> list[str]:
    """Models whose maps decide utility: the first primary replicate, or every primary replicate (pooled)."""
    check_pooling(pooling)
    if not primary_models:
        raise ValueError("no model of the primary architecture")
    return list(primary_models[:1] if pooling == "none" else primary_models)


def similarity_pairs(
    available: list[tuple[str, str]], criterion: str, primary_models: list[str], pooling: str
) -> list[tuple[str, str]]:
    """Model pairs whose SSIM decides ``criterion``, from the pairs ``available`` (in config order).

    Repeatability: pairs of primary replicates; reproducibility: pairs of a primary replicate with a model of
    another architecture. ``none`` keeps one pair (the paper's design), ``image_means`` all of them.
    """
    check_pooling(pooling)
    primary = set(primary_models)
    if criterion == "repeatability":
        keep = [p for p in available if p[0] in primary and p[1] in primary]
    elif criterion == "reproducibility":
        keep = [p for p in available if (p[0] in primary) != (p[1] in primary)]
    else:
        raise ValueError(f"unknown similarity criterion '{criterion}'")
    if not keep:
        raise ValueError(f"no {criterion} model pair among {available} for the primary models {primary_models}")
    if pooling == "image_means":
        return keep
    first = primary_models[0]
    with_first = [p for p in keep if first in p]
    if criterion == "repeatability":
        second = [p for p in with_first if primary_models[1] in p] if len(primary_models) > 1 else []
        return (second or with_first or keep)[:1]

    # reproducibility: the first primary replicate with the first replicate of the other architecture
    def other_replicate(pair):
        other = pair[1] if pair[0] == first else pair[0]
        return parse_model_name(other)[1]

    return sorted(with_first, key=other_replicate)[:1] if with_first else keep[:1]


def image_means(
    rows: pd.DataFrame, value: str = "value", group: str = "group", subject: str = "image_id"
) -> pd.DataFrame:
    """One row per (subject, group): the mean of ``value`` over replicates, with ``n_replicates``.

    With one replicate per image and group this returns the rows unchanged (as a new frame)."""
    rows = rows.dropna(subset=[value])
    out = rows.groupby([subject, group], sort=False, observed=True)[value].agg(["mean", "size"]).reset_index()
    return out.rename(columns={"mean": value, "size": "n_replicates"})


def describe(pooling: str, utility_models_used: list[str], pairs: dict[str, str]) -> str:
    """One sentence for the table notes: which models decided the verdicts and how images were counted.
    ``pairs`` maps a criterion to its model pairs as the tables write them (``a~b;c~d``)."""
    check_pooling(pooling)
    parts = [f"utility: {', '.join(utility_models_used)}"]
    parts += [f"{c}: {p.replace('~', ' vs ').replace(';', '; ')}" for c, p in pairs.items() if p]
    if pooling == "none":
        return (
            "Design: one model and one model pair per criterion, as in Arun et al. ("
            + "; ".join(parts)
            + "); each image counted once."
        )
    return (
        "Design: replicates pooled by per-image means (stats.pooling: image_means; "
        + "; ".join(parts)
        + "); each image enters each group once, so the degrees of freedom are those of the images."
    )
