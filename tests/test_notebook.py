"""The learner's notebook runs top to bottom, the repository keeps it without outputs, and the worked example of
docs/PARAMETERS.md matches the code.

The notebook is executed with nbclient on a python3 kernel (the test extra: nbclient, nbformat, ipykernel) in a
temporary working directory, with its own corpus cache, so it can neither read nor leave files in the checkout.
Any cell that raises fails the test with the cell's source and the error.
"""

import dataclasses
import os
import pathlib
import re
import time

import pytest

from littlebaby.model import Config, flops_per_token, num_params

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "the_little_baby.ipynb"
PARAMETERS_DOC = ROOT / "docs" / "PARAMETERS.md"
LAYER_DOCS = ROOT / "docs" / "layers"
TIME_LIMIT_S = 120  # the promise to learners: top to bottom in under 2 minutes on 2 cores


def read_notebook():
    nbformat = pytest.importorskip("nbformat")
    with open(NOTEBOOK, encoding="utf-8") as f:
        return nbformat.read(f, as_version=4)


def test_repository_copy_has_no_outputs():
    nb = read_notebook()
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"code cells {dirty} carry outputs or execution counts; strip them before committing "
                       "(e.g. jupyter nbconvert --clear-output --inplace notebooks/the_little_baby.ipynb)")


def test_notebook_uses_the_package_and_no_forbidden_calls():
    source = "\n".join(cell.source for cell in read_notebook().cells if cell.cell_type == "code")
    assert "from littlebaby" in source
    for forbidden in ("pickle", "allow_pickle", "eval(", "exec(", "np.random.seed", "../shared"):
        assert forbidden not in source, f"the notebook must not use {forbidden!r}"


def test_notebook_executes_top_to_bottom(tmp_path):
    nb = read_notebook()
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    env_cache = os.environ.get("LITTLEBABY_CACHE")
    # the kernel inherits this process's environment: a private corpus cache unless one is already shared
    os.environ.setdefault("LITTLEBABY_CACHE", str(tmp_path / "cache"))
    try:
        client = nbclient.NotebookClient(nb, timeout=TIME_LIMIT_S, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"a notebook cell failed:\n{e}")
    finally:
        if env_cache is None:
            os.environ.pop("LITTLEBABY_CACHE", None)
    assert seconds < TIME_LIMIT_S, f"the notebook took {seconds:.0f} s; it must run in under {TIME_LIMIT_S} s"
    outputs = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    # the checks the notebook prints must come out true
    assert "max |by hand - package| for head 0:" in outputs
    assert "positions 0-19 unchanged: True" in outputs and "positions 20+ changed:    True" in outputs
    assert "same text: True" in outputs
    assert "trace logits == gpt_forward logits: True" in outputs   # section 9 shows the model's own numbers
    assert re.search(r"sum of sizes [\d,]+ == num_params\(config\) [\d,]+: True", outputs)
    assert not list(tmp_path.glob("configs")), "the notebook must write its run into its own temp dir"
    images = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if "image/png" in out.get("data", {})]
    # two attention maps, the loss curve, the temperature bars, the position similarities, and section 9's
    # attention of every head, sampled-from bars, logit lens and embedding PCA: all nine must show, including
    # those drawn after littlebaby.api.train has written a report
    assert len(images) == 9, f"expected 9 figures in the executed notebook, got {len(images)}"


def test_layer_notes_exist_for_every_layer():
    expected = ["embedding", "linear", "layernorm", "dropout", "gelu", "softmax", "attention", "moh", "moe", "mlp",
                "block", "cross_entropy"]
    missing = [name for name in expected if not (LAYER_DOCS / f"{name}.md").is_file()]
    assert not missing, f"docs/layers/ lacks notes for {missing}"
    # the code's docstrings point at these names
    for module in ("layernorm", "attention"):
        code = (ROOT / "littlebaby" / "nn" / f"{module}.py").read_text(encoding="utf-8")
        assert f"docs/layers/{module}.md" in code


def worked_example_numbers():
    """The numbers the parameter guide states for the default model, read from its marked lines."""
    text = PARAMETERS_DOC.read_text(encoding="utf-8")
    found = {}
    for key in ("num_params", "flops_per_token", "default_steps"):
        match = re.search(rf"<!-- check:{key} -->\s*\**\s*([\d,]+)", text)
        assert match, f"docs/PARAMETERS.md lacks the marked total for {key}"
        found[key] = int(match.group(1).replace(",", ""))
    return found


def default_model_config():
    """What `baby train` with no options builds: the default Config, with V = the built-in corpus's characters."""
    from littlebaby import corpus
    vocab = len(set(corpus.builtin_corpus_path().read_text(encoding="utf-8")))
    return Config(vocab_size=vocab)


def test_parameter_guide_worked_example_matches_the_code():
    numbers = worked_example_numbers()
    config = default_model_config()
    assert numbers["num_params"] == num_params(config)
    assert numbers["flops_per_token"] == flops_per_token(config)
    from littlebaby.training import DEFAULT_STEPS
    assert numbers["default_steps"] == DEFAULT_STEPS


def test_parameter_guide_covers_every_option():
    from littlebaby.training import TrainConfig
    text = PARAMETERS_DOC.read_text(encoding="utf-8")
    names = [f.name for f in dataclasses.fields(Config)] + [f.name for f in dataclasses.fields(TrainConfig)]
    missing = [name for name in names if f"`{name}`" not in text]
    assert not missing, f"docs/PARAMETERS.md does not explain {missing}"
