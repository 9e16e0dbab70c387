"""The embedding loop's CUDA path, on a GPU only (skipped elsewhere): pinned batches, non-blocking copies and the
shard buffer on the device give the CPU's embeddings (fp32, within float tolerance), and one host
synchronisation per shard, not per batch."""

import numpy as np
import pytest
import torch

import zoo
from tests.helpers.embeddings import image_folder, model_folder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_embedding_on_the_gpu_equals_the_cpu(tmp_path):
    model = model_folder(tmp_path / "model", size=32)
    data = image_folder(tmp_path / "data", 40)
    options = {"shard_size": 16, "batch_size": 8, "precision": "fp32", "workers": 2, "progress": False}
    cpu = zoo.embed(str(model), data, tmp_path / "cpu", device="cpu", **options)
    gpu = zoo.embed(str(model), data, tmp_path / "gpu", device="cuda", **options)
    np.testing.assert_allclose(gpu.to_numpy(), cpu.to_numpy(), rtol=1e-3, atol=1e-4)
    assert gpu.records() == cpu.records()


def test_no_host_synchronisation_per_batch(tmp_path, monkeypatch):
    """torch.cuda.set_sync_debug_mode('error') raises on every synchronising call: only the shard's copy to the
    host may synchronise, so a run with 8 batches a shard passes when that copy is allowed."""
    from zoo.embeddings import loop

    model = model_folder(tmp_path / "model", size=32)
    data = image_folder(tmp_path / "data", 32)
    real_write = loop._ShardBuffer.write

    def write(self, out, settings):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return real_write(self, out, settings)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(loop._ShardBuffer, "write", write)
    real_forward = loop._forward

    def forward(model, images, settings):
        torch.cuda.set_sync_debug_mode("error")
        return real_forward(model, images, settings)

    monkeypatch.setattr(loop, "_forward", forward)
    try:
        emb = zoo.embed(
            str(model), data, tmp_path / "out", shard_size=32, batch_size=4, device="cuda", progress=False
        )
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(emb) == 32
