"""README.md stays true to the code: every setting documented, every preset named."""

import os

import hyperparams
from tests.conftest import ROOT

README = open(os.path.join(ROOT, "README.md")).read()


def test_every_constant_is_in_the_readme_table():
    for name in (n for n in vars(hyperparams) if n.isupper()):
        assert f"| `{name}` |" in README, name


def test_every_preset_is_named_in_the_readme():
    for preset in os.listdir(os.path.join(ROOT, "configs")):
        assert f"configs/{preset}" in README or preset in README, preset
