"""zoo.data.splits directly: hold-out sizes, boundaries and refusals, grouped hold-outs, the three split policies and
the manifest's exact format; sizes are hand-computed."""

import logging

import numpy as np
import pytest

from zoo.data.splits import Record, assign_splits, holdout, read_manifest, write_manifest

# 40 images, 2 classes, 20 groups of 2 (one image of each class per group, like a patient with both views)
INDICES = np.arange(40)
LABELS = np.array([0, 1] * 20)
GROUPS = np.array([f"g{i // 2:02d}" for i in range(40)])


def groups_in(held: np.ndarray) -> int:
    return len(np.unique(GROUPS[held]))


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1])
def test_a_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match=rf"^a split fraction must be in \(0, 1\), got {fraction}$"):
        holdout(INDICES, LABELS, None, fraction, seed=0)


def test_holdout_size_is_the_fraction_of_the_images():
    kept, held = holdout(INDICES, LABELS, None, 0.2, seed=0)
    assert (len(kept), len(held)) == (32, 8) and set(kept) | set(held) == set(INDICES)
    assert np.bincount(LABELS[held]).tolist() == [4, 4]  # stratified


def test_every_present_class_is_held_out_at_least_once_and_absent_labels_do_not_count():
    labels = np.array([0] * 10 + [2] * 10)  # class 1 has no image
    kept, held = holdout(np.arange(20), labels, None, 0.05, seed=0)  # round(1.0) = 1 < 2 present classes
    assert sorted(labels[held].tolist()) == [0, 2] and len(kept) == 18


def test_the_smallest_possible_holdout_and_one_image_too_many():
    labels = np.array([0, 0, 1, 1])  # two images per class: one on each side is the limit
    kept, held = holdout(np.arange(4), labels, None, 0.5, seed=0)
    assert sorted(labels[kept].tolist()) == sorted(labels[held].tolist()) == [0, 1]
    with pytest.raises(ValueError, match=r"^4 images are too few for a stratified 75% hold-out$"):
        holdout(np.arange(4), labels, None, 0.75, seed=0)


def test_a_class_with_a_single_image_cannot_be_stratified():
    with pytest.raises(
        ValueError, match=r"^cannot stratify a 20% hold-out: some class has a single image \(class "
    ):
        holdout(np.arange(5), np.array([0, 0, 0, 0, 1]), None, 0.2, seed=0)


@pytest.mark.parametrize(("fraction", "held_groups"), [(0.5, 10), (0.25, 5), (0.2, 4)])
def test_grouped_holdout_takes_one_fold_of_round_one_over_fraction(fraction, held_groups, caplog):
    with caplog.at_level(logging.WARNING, logger="zoo.data.splits"):
        kept, held = holdout(INDICES, LABELS, GROUPS, fraction, seed=0)
    assert groups_in(held) == held_groups and not set(GROUPS[kept]) & set(GROUPS[held])
    assert not caplog.records  # 20 groups are enough for each of these


def test_grouped_holdout_with_too_few_groups_says_what_it_does_instead(caplog):
    groups = np.array([f"g{i % 3}" for i in range(12)])
    with caplog.at_level(logging.WARNING, logger="zoo.data.splits"):
        kept, held = holdout(np.arange(12), np.array([0, 1] * 6), groups, 0.2, seed=0)
    assert len(np.unique(groups[held])) == 1
    assert caplog.messages == ["only 3 groups: the grouped hold-out is 1/3 instead of 20%"]
    with pytest.raises(ValueError, match="^a grouped hold-out needs at least 2 groups, found 1$"):
        holdout(np.arange(4), np.array([0, 1, 0, 1]), np.array(["g"] * 4), 0.5, seed=0)


def test_grouped_holdout_depends_on_the_seed_only():
    first = holdout(INDICES, LABELS, GROUPS, 0.25, seed=0)[1]
    np.testing.assert_array_equal(first, holdout(INDICES, LABELS, GROUPS, 0.25, seed=0)[1])
    assert not np.array_equal(first, holdout(INDICES, LABELS, GROUPS, 0.25, seed=1)[1])


def records(splits: list[str | None] | None = None) -> list[Record]:
    splits = splits or [None] * 40
    return [Record(f"img{i:02d}.png", int(LABELS[i]), splits[i], GROUPS[i]) for i in range(40)]


def test_random_policy_is_ungrouped_unless_asked():
    def straddling(rs):
        sides = {}
        for r in rs:
            sides.setdefault(r.group, set()).add(r.split)
        return sum(len(s) > 1 for s in sides.values())

    plain, grouped = records(), records()
    assign_splits(plain, policy="random", seed=0, val_fraction=0.25, test_fraction=0.25)
    assign_splits(grouped, policy="random", seed=0, val_fraction=0.25, test_fraction=0.25, grouped=True)
    assert straddling(plain) > 0 and straddling(grouped) == 0
    assert [sum(r.split == s for r in plain) for s in ("train", "val", "test")] == [22, 8, 10]


OFFICIAL = ["train"] * 28 + ["val"] * 4 + ["test"] * 8


def test_official_policy_keeps_the_test_folder_and_merges_val_into_the_pool_by_default():
    rs = records(list(OFFICIAL))
    assign_splits(rs, policy="official", seed=0, val_fraction=0.25, test_fraction=0.5)
    assert [r.split == "test" for r in rs] == [s == "test" for s in OFFICIAL]  # exactly the official test
    assert sum(r.split == "val" for r in rs) == 8  # 25 % of the 32 pooled train + val images


def test_official_policy_can_keep_the_official_val_folder():
    rs = records(list(OFFICIAL))
    assign_splits(
        rs, policy="official", seed=0, val_fraction=0.25, test_fraction=0.5, merge_official_val=False
    )
    assert [r.split for r in rs] == OFFICIAL


def test_official_policy_needs_a_test_folder_and_unknown_policies_are_named():
    with pytest.raises(
        ValueError, match=r"^the 'official' split policy needs a test folder; use split_policy="
    ):
        assign_splits(records(["train"] * 40), policy="official", seed=0, val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(
        ValueError, match=r"^unknown split policy 'kfold'; valid: official, random, all-train$"
    ):
        assign_splits(records(), policy="kfold", seed=0, val_fraction=0.2, test_fraction=0.2)


def test_all_train_policy():
    rs = records(list(OFFICIAL))
    assign_splits(rs, policy="all-train", seed=0, val_fraction=0.2, test_fraction=0.2)
    assert {r.split for r in rs} == {"train"}


def test_manifest_round_trip_is_exact_and_newline_terminated(tmp_path):
    rs = [Record("a/odd\r\nname é.png", 0, "train", "g1"), Record("b,c.png", 1, "test", "g2")]
    path = tmp_path / "split.csv"
    write_manifest(path, rs, ["benign", "malignant"])
    raw = path.read_bytes()
    assert raw.startswith(b"path,label,split,group\n") and raw.count(b"\r\n") == 1  # only the one in the name
    assert read_manifest(path) == [
        ("a/odd\r\nname é.png", "benign", "train", "g1"),
        ("b,c.png", "malignant", "test", "g2"),
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["split.csv"]  # no temporary file left


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"is not a split manifest: expected the header path,label,split,group$"),
        ("path,label\n", r"is not a split manifest: expected the header path,label,split,group$"),
        (
            "path,label,split,group\na.png,x,train,g\nb.png,x,holdout,g\n",
            r": 1 malformed rows, e.g. \('b.png',",
        ),
        (
            "path,label,split,group\na.png,x,train\n",
            r": 1 malformed rows, e.g. \('a.png', 'x', 'train'\); splits",
        ),
    ],
    ids=["empty", "other-header", "unknown-split", "three-fields"],
)
def test_a_malformed_manifest_is_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "split.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_manifest(path)
