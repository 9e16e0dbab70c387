"""pytest plugin for bench/mutation.py only (``-p bench.mutmut_plugin`` in ``[tool.mutmut]``); two fixes that make
mutmut's verdicts mean something for this project.

1. ``medssl_zoo.hub.*`` is the same module object as ``hub.*``. mutmut identifies a mutated function by
   ``function.__module__`` and names its mutants after the file's path (``hub.export``). The tests import the
   application as ``medssl_zoo.hub.export`` (its installed name), which would create a second module object whose
   functions mutmut never associates with a mutant: every mutant of ``hub/export.py`` would be "untested".
2. One intra-op thread. mutmut forks a worker per mutant from the process that ran the tests once; a forked child
   of a process whose OpenMP thread team has run (libgomp) waits forever in its first parallel region. With one
   thread no team is ever started, and the forked workers run (two workers use the two cores).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

import torch

PREFIX = "medssl_zoo.hub"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == PREFIX or fullname.startswith(PREFIX + "."):
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        # the module of the file path; its __name__ and __spec__ stay those of ``hub.*``
        return importlib.import_module(spec.name.removeprefix("medssl_zoo."))

    def exec_module(self, module):
        pass  # already executed under its own name


sys.meta_path.insert(0, _Alias())

_set_num_threads = torch.set_num_threads
_set_num_threads(1)
torch.set_num_threads = lambda _n: _set_num_threads(1)  # the tests and the Trainer ask for 2
