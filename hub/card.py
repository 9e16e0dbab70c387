"""The model card (README.md with YAML front matter), rendered from data and validated by huggingface_hub."""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = [
    "METRIC_NAMES",
    "MULTILABEL_METRIC_NAMES",
    "ood_text",
    "probabilities_line",
    "render_card",
    "task_text",
]

STUDY = (
    "Chattopadhyay et al., Exploring Self-Supervised Representation Learning for Low-Resource Medical Image "
    "Analysis, ICIP 2023 (arXiv:2303.02245)"
)
LICENSES = {"CC BY 4.0": "cc-by-4.0", "CC0 (generated)": "cc0-1.0", "MIT": "mit"}
METRIC_NAMES = {
    "knn_accuracy": "kNN accuracy",
    "linear_accuracy": "Linear-probe accuracy",
    "f1_weighted": "Weighted F1",
    "auroc": "AUROC",
}
MULTILABEL_METRIC_NAMES = {
    "linear_auroc_macro": "Macro AUROC",
    "auroc_micro": "Micro AUROC",
    "map": "mAP",
    "f1_macro": "Macro F1 (per-label thresholds)",
    "f1_micro": "Micro F1 (per-label thresholds)",
    "knn_auroc_macro": "kNN macro AUROC",
}


def _metric_names(zoo_meta: dict) -> dict:
    return MULTILABEL_METRIC_NAMES if zoo_meta.get("task") == "multilabel" else METRIC_NAMES


def _eval_results(metrics: dict, dataset: str, split: str, names: dict) -> list[EvalResult]:
    task = "image-classification"  # the Hub's task name for both; the card says multi-label
    return [
        EvalResult(
            task_type=task,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=key,
            metric_name=name,
            metric_value=round(float(metrics[key]), 4),
        )
        for key, name in names.items()
        if metrics.get(key) is not None
    ]


def task_text(config: dict, stored: str = "stored as timm's own classifier") -> str:
    """What the classifier's outputs mean: classes (softmax) or labels (a sigmoid each, with thresholds);
    ``stored``: where the probe is (a head-only export's is ``head.safetensors``)."""
    zoo_meta = config["zoo"]
    if zoo_meta.get("task") != "multilabel":
        labels = ", ".join(f"`{n}`" for n in config["label_names"])
        return f"a linear probe over {labels} {stored} (softmax over the classes)"
    pairs = ", ".join(
        f"`{n}` ≥ {t:.3f}" for n, t in zip(config["label_names"], zoo_meta["thresholds"], strict=True)
    )
    return (
        f"a **multi-label** linear probe (one-vs-rest) {stored}: each output is one "
        "finding's logit, to pass through a **sigmoid** (not a softmax); a finding is reported present at its "
        f"threshold, chosen on the val split for the best F1: {pairs}"
    )


def ood_text(zoo_meta: dict) -> str:
    """The out-of-distribution reference: what it is, its threshold and how often it fired on val and test."""
    ood = zoo_meta.get("ood")
    if not ood:
        return (
            "This export has **no** out-of-distribution reference: nothing warns when an input is unlike its "
            "training data."
        )
    return (
        f"`{ood['file']}` holds a reference fitted on the {ood['fitted_on']['images']} training images' features: "
        f"{ood['method']} (shrinkage {ood['shrinkage']:.3f}). `model.ood_score(x)` is each image's squared "
        f"Mahalanobis distance; above **{ood['threshold']:.1f}** (the {ood['percentile']:g}th percentile of "
        f"{ood['calibrated_on']['images']} held-out in-distribution scores: {ood['calibrated_on']['split']}) the "
        "image looks unlike the training data and the prediction may be meaningless (the demo says so). It "
        f"flagged {100 * ood['val_flagged']:.1f} % of the val and {100 * ood['test_flagged']:.1f} % of the test "
        "images. It detects inputs far from the training data (another modality, stain or scanner), not every "
        "error."
    )


def probabilities_line(zoo_meta: dict) -> str:
    if zoo_meta.get("task") == "multilabel":
        return "model(x).sigmoid()                  # one per label; present where >= model.thresholds"
    return "model(x).softmax(dim=1)             # classes: model.label_names"


REPO_PLACEHOLDER = (
    "<org>/"  # stands for the Hub organisation until the model is pushed (hub.push fills it in)
)


def _initialisation(zoo_meta: dict) -> str:
    """The card's initialisation row: the file's name and sha256 when the backbone started from a file."""
    init, weights = zoo_meta.get("init", "random"), zoo_meta.get("init_weights")
    if not weights:
        return "ImageNet weights (timm)" if init == "imagenet" else init
    origin = f"from {weights['repo_id']}, " if weights.get("repo_id") else ""
    return f"{init}: `{weights['file']}` ({origin}sha256 `{weights['sha256']}`)"


def render_card(
    repo_name: str,
    config: dict,
    metrics: dict,
    spec,
    method_paper: str,
    plot: str | None = None,
    repo_id: str | None = None,
) -> ModelCard:
    """A model card for an exported model: ``config`` is the config.json, ``metrics`` the test metrics,
    ``spec`` the dataset's :class:`zoo.data.DatasetSpec`, ``repo_id`` the Hub repository once known."""
    hub_id = repo_id or f"{REPO_PLACEHOLDER}{repo_name}"
    zoo_meta = config["zoo"]
    method, dataset = zoo_meta["method"], zoo_meta["dataset"]
    names = _metric_names(zoo_meta)
    data = ModelCardData(
        library_name="timm",
        license=LICENSES.get(spec.license, "other"),
        pipeline_tag="image-classification",
        tags=["ssl", "self-supervised", "medical", method, dataset, "medssl-zoo"],
        datasets=[dataset],
        model_name=repo_name,
        eval_results=_eval_results(metrics, dataset, "test", names) or None,
    )
    table = "\n".join(
        f"| {name} | {metrics[key]:.4f} |" for key, name in names.items() if metrics.get(key) is not None
    )
    content = f"""---
{data.to_yaml()}
---

# {repo_name}

A **{method}** self-supervised encoder ({config["architecture"]}, {config["num_features"]}-d features) pre-trained on
**{spec.description}** with MedSSL Zoo, plus
{task_text(config)}.

## Intended use and limitations
- For **research** on representation learning for small medical datasets. **Not for clinical decisions**: it was
  not validated on any clinical population, and its predictions must not be used for diagnosis or treatment.
- Small single-source datasets carry acquisition and population biases; scores on other scanners, stains or
  hospitals will differ. Random patch-level splits leak slides/patients between train and test
  (split grouped: `{zoo_meta.get("grouped_split", False)}`), which inflates scores.

## How to use
```python
import zoo
model = zoo.load("{hub_id}")                      # classifier, eval mode
probabilities = {probabilities_line(zoo_meta)}
unlike_training_data = model.ood_score(x) > model.ood.threshold{"" if zoo_meta.get("ood") else "  # (no reference in this export)"}
encoder = zoo.load("{hub_id}", features_only=True)  # {config["num_features"]}-d features

import timm                                           # plain timm, no zoo needed
model = timm.create_model("hf-hub:{hub_id}", pretrained=True)
```
Demo: `medssl-demo --model {hub_id}`.


## Out-of-distribution inputs
{ood_text(zoo_meta)}

## Training
| | |
|---|---|
| method | {method} ({method_paper}) |
| exported encoder | {zoo_meta.get("encoder", "the backbone")} |
| initialisation | {_initialisation(zoo_meta)} |
| backbone | {config["architecture"]}, {config["model_args"]["in_chans"]} input channel(s), {config["pretrained_cfg"]["input_size"][1]} px |
| training | {zoo_meta.get("training", "")} |
| seed | {zoo_meta.get("seed")} |
| paper mode | {zoo_meta.get("paper_mode", False)} |
| split manifest sha256 | `{zoo_meta.get("split_manifest_sha256", "")}` |
| code version | medssl-zoo {zoo_meta.get("code_version", "")} |

## Evaluation ({zoo_meta.get("eval_split", "test")} split)
| metric | value |
|---|---|
{table}
{f"{chr(10)}![training curves]({plot}){chr(10)}" if plot else ""}
## Data and citations
- Dataset: {spec.description}; licence: {spec.license}; source: {spec.url or "generated"}. Cite: {spec.citation}.
- Method: {method_paper}.
- Study: {STUDY}.
"""
    return ModelCard(content)  # parses the front matter: malformed metadata fails here, not on upload
