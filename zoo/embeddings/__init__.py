"""Embeddings, the third on-disk format beside the Hub folder and the run directory: write, read, verify, search.

    emb = zoo.embed("vicreg-breast", "archive/", "out/")   # or: medssl-embed vicreg-breast archive/ --out out/
    emb = zoo.embeddings.open("out/")                     # a complete output, opened for reading
    hits = zoo.search("out/", queries, k=5)               # exact cosine nearest neighbours

:mod:`zoo.embeddings.format` defines the folder (safetensors shards, ``index.csv``, ``meta.json``);
:mod:`~zoo.embeddings.embed` the resumable, multi-process loop; :mod:`~zoo.embeddings.search` the search.
"""

from zoo.embeddings.embed import EmbedOptions, embed, process_rank
from zoo.embeddings.encoder import Encoder, load_encoder, model_identity
from zoo.embeddings.output import NotAnOutputError, PlanMismatchError, TooManyUnreadableError
from zoo.embeddings.search import Neighbours, search
from zoo.embeddings.store import Embeddings, ModelMismatchError, open_embeddings

open = open_embeddings  # noqa: A001 (zoo.embeddings.open, as gzip.open: the module's reader)

__all__ = [
    "EmbedOptions",
    "Embeddings",
    "Encoder",
    "ModelMismatchError",
    "Neighbours",
    "NotAnOutputError",
    "PlanMismatchError",
    "TooManyUnreadableError",
    "embed",
    "load_encoder",
    "model_identity",
    "open",
    "open_embeddings",
    "process_rank",
    "search",
]
