"""The model card (README.md with YAML front matter), rendered from data and validated by huggingface_hub."""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = ["render_card"]

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


def _eval_results(metrics: dict, dataset: str, split: str) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=key,
            metric_name=name,
            metric_value=round(float(metrics[key]), 4),
        )
        for key, name in METRIC_NAMES.items()
        if metrics.get(key) is not None
    ]


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
    data = ModelCardData(
        library_name="timm",
        license=LICENSES.get(spec.license, "other"),
        pipeline_tag="image-classification",
        tags=["ssl", "self-supervised", "medical", method, dataset, "medssl-zoo"],
        datasets=[dataset],
        model_name=repo_name,
        eval_results=_eval_results(metrics, dataset, "test") or None,
    )
    table = "\n".join(
        f"| {name} | {metrics[key]:.4f} |"
        for key, name in METRIC_NAMES.items()
        if metrics.get(key) is not None
    )
    labels = ", ".join(f"`{n}`" for n in config["label_names"])
    content = f"""---
{data.to_yaml()}
---

# {repo_name}

A **{method}** self-supervised encoder ({config["architecture"]}, {config["num_features"]}-d features) pre-trained on
**{spec.description}** with MedSSL Zoo, plus a linear probe over
{labels} stored as timm's own classifier.

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
encoder = zoo.load("{hub_id}", features_only=True)  # {config["num_features"]}-d features

import timm                                           # plain timm, no zoo needed
model = timm.create_model("hf-hub:{hub_id}", pretrained=True)
```
Demo: `medssl-demo --model {hub_id}`.


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
