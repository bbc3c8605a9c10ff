"""README.md stays true to the code: every setting documented, every preset named, and the LARS
snippets run as pasted and train."""

import glob
import os
import re

import pytest
import torch
import torch.nn.functional as F

import hyperparams
from tests.conftest import ROOT

README = open(os.path.join(ROOT, "README.md")).read()


def test_every_constant_is_in_the_settings_table():
    table = open(os.path.join(ROOT, "configs", "README.md")).read()
    for name in (n for n in vars(hyperparams) if n.isupper()):
        assert f"| `{name}` |" in table, name


def test_every_preset_is_named_in_the_readme():
    presets = glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    assert any("pilot" in p for p in presets), "the presets in subfolders are checked too"
    for preset in presets:
        relative = os.path.relpath(preset, ROOT)
        folder = os.path.dirname(relative)  # a subfolder of configs/ may be named as a whole
        assert relative in README or folder != "configs" and f"{folder}/" in README, relative


def github_anchor(heading):
    # GitHub's rule: lower case, punctuation other than hyphens dropped, spaces become hyphens.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_within_the_readme_reaches_a_heading():
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", prose, re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", prose)
    assert links, "the contents line links to sections"
    assert [link for link in links if link not in anchors] == []


def lars_snippets():
    section = README.split("## Using LARS in your own code")[1].split("\n## ")[0]
    return [block for block in re.findall(r"```python\n(.*?)```", section, re.S)
            if "LARS(" in block and "fully_shard" not in block]  # the FSDP2 script: tests/test_fsdp.py


def test_the_lars_snippets_are_found():
    # a renamed heading or code fence would leave the test below with no case, and green
    snippets = lars_snippets()
    assert snippets and any("for epoch in range(epochs)" in s for s in snippets), "the training loop is one"


@pytest.mark.parametrize("snippet", lars_snippets())
def test_the_lars_snippets_run_as_pasted_and_train(snippet):
    # A small classification problem with biases, so both groups of the exclusion are used. A
    # snippet with its own loop trains on `loader` for `epochs`; one that only builds an optimizer
    # is trained here.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    inputs = torch.randn(256, 20)
    labels = (inputs @ torch.randn(20, 3)).argmax(1)
    before = F.cross_entropy(model(inputs), labels).item()
    namespace = {"model": model, "loader": [(inputs[i:i + 32], labels[i:i + 32]) for i in range(0, 256, 32)],
                 "epochs": 10}
    exec("from lars import LARS\n" + snippet, namespace)
    optimizer = namespace["optimizer"]
    if "for epoch" not in snippet:
        for _ in range(50):
            loss = F.cross_entropy(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = F.cross_entropy(model(inputs), labels).item()
    assert after < 0.5 * before, f"the snippet's values barely train: {before:.3f} -> {after:.3f}"


def preset_table():
    """{preset: (what it is, its command)} from the README's table of presets."""
    section = README.split("## Presets and sweeps")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(configs/[^`]+)` \| ([^|]+) \| `([^`]+)` \|$", section, re.M)
    return {preset: (what.strip(), command) for preset, what, command in rows}


def test_the_preset_table_lists_every_preset_with_the_command_its_header_gives():
    from tests.test_presets import PRESETS, usage

    table = preset_table()
    assert sorted(table) == sorted(PRESETS), "one row per preset, none missing, none extra"
    for preset, (_, command) in table.items():
        script, args = usage(preset)  # the header's command, without its placeholders
        words = [w for w in command.split() if not w.endswith("=B")]  # the same placeholder as the header's
        assert words[:2] == ["python", f"{script}.py"] and words[2:] == args, (preset, command)


def relative_links(path):
    """(link, target on disk) of every relative link in a markdown file, code blocks aside."""
    text = re.sub(r"```.*?```", "", open(path).read(), flags=re.S)
    folder = os.path.dirname(path)
    for link in re.findall(r"\]\(([^)#][^)]*?)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+:", link):
            yield link, os.path.normpath(os.path.join(folder, link))


@pytest.mark.parametrize("markdown", ["README.md", "benchmarks/README.md", "tests/README.md", "configs/README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(
    os.path.join(ROOT, "results", "*", "README.md")))])
def test_every_relative_link_reaches_a_file(markdown):
    links = list(relative_links(os.path.join(ROOT, markdown)))
    assert [link for link, target in links if not os.path.exists(target)] == []
