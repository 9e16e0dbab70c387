"""Probes on synthetic features of known separability, metrics against sklearn, label fractions."""

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.neighbors import KNeighborsClassifier

from zoo.probe import (
    classification_metrics,
    fit_linear_probe,
    fit_mlp_head,
    knn_accuracy,
    knn_predict,
    label_fraction_indices,
)


def blobs(n_per_class=60, classes=3, dim=16, spread=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return x, y


def split(x, y, seed=0):
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    a, b, c = perm[: len(y) // 2], perm[len(y) // 2 : 3 * len(y) // 4], perm[3 * len(y) // 4 :]
    return (x[a], y[a]), (x[b], y[b]), (x[c], y[c])


def test_linear_probe_separable_data_and_shuffled_labels():
    (xtr, ytr), (xva, yva), (xte, yte) = split(*blobs())
    probe = fit_linear_probe(xtr, ytr, xva, yva)
    assert (probe.logits(xte).argmax(1) == yte).float().mean() == 1.0
    shuffled = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(1))]
    chance = fit_linear_probe(xtr, shuffled, xva, yva[torch.randperm(len(yva))])
    assert (chance.logits(xte).argmax(1) == yte).float().mean() < 0.6  # chance is 1/3


def test_folded_classifier_equals_probe_on_standardised_features():
    (xtr, ytr), (xva, yva), (xte, _) = split(*blobs(classes=4))
    probe = fit_linear_probe(xtr, ytr, xva, yva)
    weight, bias = probe.folded()
    torch.testing.assert_close(xte @ weight.T + bias, probe.logits(xte), rtol=1e-4, atol=1e-4)


def test_binary_probe_is_a_two_class_softmax_layer_matching_sklearn():
    (xtr, ytr), (xva, yva), (xte, _) = split(*blobs(classes=2, spread=2.0))
    probe = fit_linear_probe(xtr, ytr, xva, yva)
    assert probe.weight.shape == (2, 16)
    from sklearn.linear_model import LogisticRegression

    z = lambda x: ((x - probe.mean) / probe.std).double().numpy()  # noqa: E731
    reference = LogisticRegression(C=probe.inverse_l2, max_iter=2000).fit(z(xtr), ytr.numpy())
    ours = torch.softmax(probe.logits(xte), 1)[:, 1].numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(z(xte))[:, 1], atol=1e-4)


def test_euclidean_knn_matches_sklearn_and_cosine_is_weighted():
    (xtr, ytr), _, (xte, yte) = split(*blobs(spread=3.0))
    ours = knn_predict(xtr, ytr, xte, 3, k=7, metric="euclidean").argmax(1)
    sk = KNeighborsClassifier(n_neighbors=7).fit(xtr.numpy(), ytr.numpy()).predict(xte.numpy())
    agree = (ours.numpy() == sk).mean()
    assert agree > 0.97  # ties may break differently
    assert knn_accuracy(xtr, ytr, xte, yte, 3, k=7) > 0.5
    with pytest.raises(ValueError, match="cosine, euclidean"):
        knn_predict(xtr, ytr, xte, 3, metric="manhattan")


def test_mlp_head_learns_separable_data():
    (xtr, ytr), (xva, yva), (xte, yte) = split(*blobs())
    head, val_acc = fit_mlp_head(xtr, ytr, xva, yva, 3, epochs=20)
    assert val_acc == 1.0 and (head(xte).argmax(1) == yte).float().mean() == 1.0


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = torch.tensor(rng.integers(0, 3, 50))
    probs = torch.softmax(torch.tensor(rng.normal(size=(50, 3))), 1)
    m = classification_metrics(probs, y, 3)
    pred = probs.argmax(1).numpy()
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["balanced_accuracy"] != pytest.approx(m["accuracy"])  # the data are imbalanced enough to tell

    assert m["f1_weighted"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["precision_macro"] == pytest.approx(precision_score(y, pred, average="macro", zero_division=0))
    assert m["recall_weighted"] == pytest.approx(recall_score(y, pred, average="weighted"))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, probs.numpy(), multi_class="ovr"))
    binary = classification_metrics(
        torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), torch.tensor([0, 1, 1]), 2
    )
    assert binary["auroc"] == pytest.approx(1.0) and binary["confusion_matrix"] == [[1, 0], [1, 1]]
    assert classification_metrics(probs[:5], torch.zeros(5, dtype=torch.long), 3)["auroc"] is None


def test_label_fractions_keep_every_class_and_are_seeded():
    y = torch.tensor([0] * 200 + [1] * 50 + [2] * 10)
    idx = label_fraction_indices(y, 0.1, seed=0)
    assert torch.bincount(y[idx]).tolist() == [20, 5, 1]
    assert torch.equal(idx, label_fraction_indices(y, 0.1, seed=0))
    assert not torch.equal(idx, label_fraction_indices(y, 0.1, seed=1))
    assert len(label_fraction_indices(y, 1.0, seed=0)) == 260
    with pytest.raises(ValueError, match="leaves class 'rare' with no example"):
        label_fraction_indices(y, 0.05, seed=0, class_names=["a", "b", "rare"])
