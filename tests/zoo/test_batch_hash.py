"""All random streams of a view hashed at once give the bits of one stream at a time (the counter hash the
augmentation's reproducibility rests on: a sample's views depend on (seed, epoch, id, view) only)."""

import torch

from zoo.data.batch_augment import _STREAM_OFFSETS, RandomStream, hash_uniform, hash_uniform_all


def test_every_stream_at_once_equals_each_stream_alone():
    keys = torch.cat(
        [
            torch.randint(-(2**62), 2**62, (500,), generator=torch.Generator().manual_seed(0)),
            torch.tensor([0, 1, -1, 2**63 - 1, -(2**63)]),  # the int64 edges: the hash wraps, never saturates
        ]
    )
    table = hash_uniform_all(keys, _STREAM_OFFSETS)
    assert set(table) == set(RandomStream)
    for stream in RandomStream:
        assert torch.equal(table[stream], hash_uniform(keys, stream)), stream.name
        assert table[stream].dtype == torch.float32 and table[stream].min() >= 0 and table[stream].max() < 1
