"""The base model's terms in a model card: licence, redistribution, gate, citation — for every card built on a
catalogue encoder (a head-only export, or a run continued from one), so that nobody who downloads the derived
model loses sight of the terms it inherits."""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from medssl_zoo.hub.card import MULTILABEL_METRIC_NAMES, ood_text, probabilities_line, task_text

__all__ = ["card_license", "refuse_catalogue_run", "render_head_card", "terms_section"]

METRICS = {"linear_accuracy": "Linear-probe accuracy", "knn_accuracy": "kNN accuracy", "auroc": "AUROC"}


def card_license(base: dict) -> dict:
    """The card's licence fields: the base model's Hub licence id (``other`` with its name and link)."""
    if base.get("license") in (None, "", "other"):
        return {"license": "other", "license_name": base.get("license_name") or "see the base model",
                "license_link": base.get("license_link") or f"https://huggingface.co/{base.get('repo_id')}"}  # fmt: skip
    return {"license": base["license"]}


def terms_section(base: dict) -> str:
    """Markdown: what the model inherits from the catalogue encoder ``base`` (its ``terms()`` + pinned revision)."""
    name, repo, revision = base.get("name"), base.get("repo_id"), base.get("revision")
    redistribute = (
        "allowed under its licence (keep the licence and notices)"
        if base.get("redistribute")
        else "**not allowed**: its weights, and weights derived from them, are never re-published here"
    )
    gate = (
        f"**gated**: request access at {base.get('access_url')}, then `hf auth login` or set `HF_TOKEN`"
        if base.get("gated")
        else "not gated"
    )
    return f"""## Base model and its terms
This model is built on the catalogue encoder **{name}** (`{repo}` at revision `{revision}`), and inherits its terms.

| | |
|---|---|
| licence | {base.get("license_name") or base.get("license")} {base.get("license_link") or ""} |
| redistribution of derived weights | {redistribute} |
| access | {gate} |
| citation | {base.get("citation") or "see the base model's card"} |
"""


def refuse_catalogue_run(run_dir, backbone: str) -> None:
    """A run continued from a catalogue encoder (``--backbone uni --init uni``) is not exported as a model: its
    weights derive from the encoder's (never re-published when its licence forbids it), and its architecture's
    constructor kwargs are trusted code that a ``config.json`` cannot carry."""
    from zoo.catalogue import catalogue_entry

    entry = catalogue_entry(backbone)
    if entry is None:
        return
    if not entry.redistribute:
        why = (f"its weights derive from {entry.name} ({entry.license_name or entry.license}), whose licence forbids "
               "redistributing them or anything derived from them")  # fmt: skip
    else:
        why = f"its architecture is {entry.name}'s, whose constructor kwargs a config.json cannot carry"
    raise ValueError(
        f"{run_dir} cannot be exported: {why}. Evaluate it with `medssl-evaluate {run_dir}`, or publish a head on "
        f"the frozen encoder: medssl-export --base {entry.name} --dataset imagefolder --data-root DIR OUT"
    )


def _head_metric_names(zoo_meta: dict) -> dict:
    return MULTILABEL_METRIC_NAMES if zoo_meta.get("task") == "multilabel" else METRICS


def render_head_card(repo_name: str, config: dict, entry, spec) -> ModelCard:
    """The card of a head-only export (:mod:`medssl_zoo.hub.export_head`): the task, the metrics and the
    out-of-distribution reference in the words of a full export's card (:mod:`medssl_zoo.hub.card`), and the
    base model's terms."""
    zoo_meta, base = config["zoo"], config["zoo"]["base_model"]
    metrics, dataset, names = zoo_meta["metrics"], zoo_meta["probe_dataset"], _head_metric_names(zoo_meta)
    results = [
        EvalResult(task_type="image-classification", dataset_type=dataset, dataset_name=dataset,
                   dataset_split="test", metric_type=k, metric_name=v, metric_value=round(float(metrics[k]), 4))
        for k, v in names.items() if metrics.get(k) is not None
    ]  # fmt: skip
    data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        tags=["medical", "medssl-zoo", "linear-probe", entry.name],
        base_model=entry.repo_id,
        datasets=[dataset],
        model_name=repo_name,
        eval_results=results or None,
        **card_license(base),
    )
    table = "\n".join(f"| {v} | {metrics[k]:.4f} |" for k, v in names.items() if metrics.get(k) is not None)
    no_reference = "" if zoo_meta.get("ood") else "  # (no reference in this export)"
    content = f"""---
{data.to_yaml()}
---

# {repo_name}

A linear head on the frozen **{entry.name}** encoder ({entry.width}-d {entry.pooling} embeddings), fitted on
**{spec.description}** with MedSSL Zoo: {task_text(config, "stored in `head.safetensors`")}. This repository holds
**only the head** (`head.safetensors`) and a pinned reference to the encoder: `zoo.load` downloads the encoder from
its own repository, under its own terms.

```python
import zoo
model = zoo.load("<this repository or folder>")   # {entry.name} @ {base.get("revision")} + this head
probabilities = {probabilities_line(zoo_meta)}
unlike_training_data = model.ood_score(x) > model.ood.threshold{no_reference}
```

{terms_section(base)}
## Intended use and limitations
For **research** only. **Not for clinical decisions**: not validated on any clinical population.

## Out-of-distribution inputs
{ood_text(zoo_meta)}

## Evaluation (test split)
| metric | value |
|---|---|
{table}

## Data
{spec.description}; licence: {spec.license}. Cite: {spec.citation or "the dataset's authors"}.
"""
    return ModelCard(content)
