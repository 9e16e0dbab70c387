"""Multi-label evaluation (issue 24.2) against scikit-learn computed another way: the per-label kNN vote, the
one-vs-rest probe, the metrics (macro / micro / per-label AUROC, mAP, F1 at per-label thresholds), the
thresholds chosen on val, masked BCE, label fractions that keep every label; unknown (NaN) entries left out of
each."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from zoo.probe import (
    choose_thresholds,
    fit_mlp_head,
    fit_multilabel_probe,
    knn_multilabel,
    label_fraction_indices,
    macro_auroc,
    masked_bce,
    multilabel_metrics,
)


def _data(n=300, f=12, labels=5, seed=0, unknown=0.0):
    """Features whose first ``labels`` dimensions drive each label (learnable), some entries unknown (NaN)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f))
    y = (x[:, :labels] + 0.8 * rng.normal(size=(n, labels)) > 0.6).astype(np.float32)
    y[rng.random(y.shape) < unknown] = np.nan
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_metrics_equal_sklearn_without_unknowns():
    x, y = _data()
    p = torch.sigmoid(x[:, :5] + 0.3 * torch.randn(len(x), 5, generator=torch.Generator().manual_seed(1)))
    thresholds = [0.3, 0.4, 0.5, 0.6, 0.7]
    m = multilabel_metrics(p, y, thresholds, list("abcde"))
    yn, pn = y.numpy(), p.numpy()
    predicted = pn >= np.array(thresholds)
    assert m["auroc_macro"] == pytest.approx(roc_auc_score(yn, pn, average="macro"), abs=1e-9)
    assert m["auroc_micro"] == pytest.approx(roc_auc_score(yn, pn, average="micro"), abs=1e-9)
    assert m["map"] == pytest.approx(average_precision_score(yn, pn, average="macro"), abs=1e-9)
    assert m["f1_macro"] == pytest.approx(f1_score(yn, predicted, average="macro"), abs=1e-9)
    assert m["f1_micro"] == pytest.approx(f1_score(yn, predicted, average="micro"), abs=1e-9)
    per_label = roc_auc_score(yn, pn, average=None)
    assert [m["per_label"][n]["auroc"] for n in "abcde"] == pytest.approx(list(per_label), abs=1e-9)


def test_unknown_entries_are_left_out_of_every_metric():
    """With NaN targets, each label's metrics equal sklearn's on that label's known rows only."""
    x, y = _data(unknown=0.3)
    p = torch.sigmoid(x[:, :5])
    m = multilabel_metrics(p, y, [0.5] * 5)
    aurocs = []
    for label in range(5):
        known = ~torch.isnan(y[:, label])
        yl, pl = y[known, label].numpy(), p[known, label].numpy()
        aurocs.append(roc_auc_score(yl, pl))
        assert m["per_label"][str(label)]["ap"] == pytest.approx(average_precision_score(yl, pl), abs=1e-9)
        assert m["per_label"][str(label)]["known"] == int(known.sum())
    assert m["auroc_macro"] == pytest.approx(np.mean(aurocs), abs=1e-9) == macro_auroc(p, y)
    known = ~torch.isnan(y)
    assert m["auroc_micro"] == pytest.approx(roc_auc_score(y[known].numpy(), p[known].numpy()), abs=1e-9)


def test_thresholds_maximise_f1_on_val_by_brute_force():
    x, y = _data(n=200, unknown=0.1)
    p = torch.sigmoid(x[:, :5] * 0.7)
    chosen = choose_thresholds(p, y)
    for label in range(5):
        known = ~torch.isnan(y[:, label])
        yl, pl = y[known, label].numpy(), p[known, label].numpy()
        best = max(f1_score(yl, pl >= t) for t in np.unique(pl))
        assert f1_score(yl, pl >= chosen[label]) == pytest.approx(best, abs=1e-12)
    no_positive = torch.zeros(10, 1)
    assert choose_thresholds(torch.rand(10, 1), no_positive) == [0.5]


def test_knn_vote_equals_a_weighted_vote_over_sklearn_neighbours():
    x, y = _data(n=200, unknown=0.2)
    queries = x[:40] + 0.05
    k, tau = 15, 0.07
    got = knn_multilabel(x, y, queries, k=k, metric="cosine", temperature=tau)
    xn = (x / x.norm(dim=1, keepdim=True)).numpy()
    qn = (queries / queries.norm(dim=1, keepdim=True)).numpy()
    distance, index = NearestNeighbors(n_neighbors=k, metric="cosine").fit(xn).kneighbors(qn)
    weight = np.exp((1 - distance) / tau)
    yn = y.numpy()
    for q in range(len(queries)):
        for label in range(5):
            values = yn[index[q], label]
            known = ~np.isnan(values)
            expected = (weight[q][known] * values[known]).sum() / weight[q][known].sum()
            assert got[q, label].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    euclidean = knn_multilabel(x, y, queries, k=k, metric="euclidean")
    _, index = NearestNeighbors(n_neighbors=k).fit(x.numpy()).kneighbors(queries.numpy())
    expected = np.nanmean(yn[index], axis=1)
    np.testing.assert_allclose(euclidean.numpy(), expected, rtol=1e-5)


def test_the_one_vs_rest_probe_equals_sklearn_at_the_chosen_strength():
    x, y = _data(n=300)
    xv, yv = _data(n=100, seed=1)
    probe = fit_multilabel_probe(x, y, xv, yv)
    scaler = StandardScaler().fit(x.double().numpy())
    reference = OneVsRestClassifier(LogisticRegression(C=probe.inverse_l2, max_iter=2000)).fit(
        scaler.transform(x.double().numpy()), y.numpy().astype(int)
    )
    expected = reference.decision_function(scaler.transform(xv.double().numpy()))
    np.testing.assert_allclose(probe.logits(xv).numpy(), expected, rtol=1e-3, atol=1e-3)
    weight, bias = probe.folded()  # on raw features, as exported into timm's classifier
    torch.testing.assert_close(xv @ weight.T + bias, probe.logits(xv), rtol=1e-4, atol=1e-4)
    assert probe.val_auroc == pytest.approx(roc_auc_score(yv.numpy(), expected, average="macro"), abs=1e-3)


def test_the_probe_learns_each_label_on_its_known_rows_only():
    x, y = _data(n=300, unknown=0.3)
    xv, yv = _data(n=100, seed=1)
    probe = fit_multilabel_probe(x, y, xv, yv)
    z = (x.double().numpy() - x.double().numpy().mean(0)) / (x.double().numpy().std(0) + 1e-6)
    for label in range(5):
        known = ~torch.isnan(y[:, label]).numpy()
        reference = LogisticRegression(C=probe.inverse_l2, max_iter=2000).fit(
            z[known], y[known, label].numpy()
        )
        np.testing.assert_allclose(probe.weight[label].numpy(), reference.coef_[0], rtol=1e-3, atol=1e-3)


def test_masked_bce_ignores_unknown_entries():
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor(
        [[1, 0, np.nan], [0, np.nan, 1], [1, 1, 1], [np.nan] * 3, [0, 0, 0], [1, np.nan, 0]]
    )
    known = ~torch.isnan(targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], targets[known])
    torch.testing.assert_close(masked_bce(logits, targets), expected)
    nothing = masked_bce(logits, torch.full((6, 3), float("nan")))
    assert nothing.item() == 0 and not torch.isnan(nothing)


def test_the_mlp_head_trains_with_bce_and_keeps_the_best_val_auroc():
    x, y = _data(n=300)
    xv, yv = _data(n=100, seed=1)
    head, best = fit_mlp_head(x, y, xv, yv, num_classes=5, epochs=15, seed=0)
    with torch.no_grad():
        scores = head(xv)
    assert best == pytest.approx(macro_auroc(scores, yv)) and best > 0.8


def test_label_fractions_keep_every_label():
    _, y = _data(n=400, labels=5)
    for fraction in (0.05, 0.1, 0.5):
        chosen = label_fraction_indices(y, fraction, seed=0)
        assert (y[chosen] == 1).any(dim=0).all()
        assert abs(len(chosen) - fraction * 400) <= 0.02 * 400 + 2
        assert torch.equal(chosen, label_fraction_indices(y, fraction, seed=0))
    rare = torch.zeros(100, 2)
    rare[:50, 0], rare[0, 1] = 1, 1
    with pytest.raises(ValueError, match="leaves label 'b' with no positive image"):
        label_fraction_indices(rare, 0.1, seed=0, class_names=["a", "b"])
