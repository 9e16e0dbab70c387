"""Recipes and registries are small YAML files from strangers: "billion laughs" aliases, a 20 MB recipe and
``/dev/zero`` (a file without newlines) are refused before they are expanded or read whole (issue 18.8).

Measured in a fresh process (README reliability table): each refusal ≤ 0.01 s, peak RSS +0.0 MB (before: 4.3 GB for
571 bytes of aliases, 11 s for 20 MB, 10 GB for ``/dev/zero`` as ``$ZOO_REGISTRY``).
"""

import os

import pytest

from medssl_zoo.train.config import load_config, parse_args


@pytest.fixture
def laughs(tmp_path):
    """571 bytes that expand to 10⁹ strings when aliases are followed."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\neval_dataset_options: {bomb: *a8}\n")
    return path


@pytest.mark.timeout(30)
def test_hostile_recipes_are_refused_quickly(tmp_path, laughs):
    with pytest.raises(ValueError, match="YAML aliases"):
        load_config(laughs)
    huge = tmp_path / "huge.yaml"
    huge.write_text("method: simclr\n" + "# padding\n" * 40_000)
    with pytest.raises(ValueError, match="at most 262144 bytes"):
        load_config(huge)
    with pytest.raises(ValueError, match="not a regular file"):
        load_config(os.devnull)
    with pytest.raises(SystemExit):
        parse_args(["--dataset-options", "{a: &x [1], b: *x}"])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("registry", ["/dev/zero", "laughs"])
def test_a_hostile_registry_file_is_refused_quickly(registry, laughs, monkeypatch):
    import zoo

    path = laughs if registry == "laughs" else registry
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    with pytest.raises(ValueError, match=r"\$ZOO_REGISTRY .*(not a regular file|YAML aliases)"):
        zoo.list_models()
