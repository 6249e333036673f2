"""``baby export RUN --format gguf DIR``: the file the ``gguf`` package reads back holds every tensor bitwise,
under llama.cpp's GPT-2 names and layout, with the model's sizes and GPT-2's tokenizer; a run whose tokenizer
GGUF cannot carry is refused in one line, writing nothing."""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="the GGUF export needs the gguf package (pip install -e '.[test]')")

from hf_helpers import GPT2_SHAPE, TEXT, baby, one_line_error, random_gpt2, train_hf_tokenizer  # noqa: E402
from littlebaby import load_run  # noqa: E402

# ours -> (GGUF name, transposed?), written out here independently of littlebaby/interop/gguf_export.py
BLOCK = {"ln_1.w": ("attn_norm.weight", False), "ln_1.b": ("attn_norm.bias", False),
         "attn.w_qkv": ("attn_qkv.weight", True), "attn.b_qkv": ("attn_qkv.bias", False),
         "attn.w_proj": ("attn_output.weight", True), "attn.b_proj": ("attn_output.bias", False),
         "ln_2.w": ("ffn_norm.weight", False), "ln_2.b": ("ffn_norm.bias", False),
         "mlp.w_fc": ("ffn_up.weight", True), "mlp.b_fc": ("ffn_up.bias", False),
         "mlp.w_proj": ("ffn_down.weight", True), "mlp.b_proj": ("ffn_down.bias", False)}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """{tied: run}: random GPT-2s with a trained GPT-2 tokenizer, imported; GGUF needs GPT-2's tokenizer."""
    tokenizer = train_hf_tokenizer(TEXT * 3, 420)
    runs = {}
    for tied in (True, False):
        work = tmp_path_factory.mktemp(f"gguf_{tied}")
        random_gpt2(tokenizer.get_vocab_size(), tied, seed=3).save_pretrained(work / "gpt2")
        tokenizer.save(str(work / "gpt2" / "tokenizer.json"))
        assert baby("import-hf", work / "gpt2", "--out", work) == 0
        runs[tied] = load_run("last", work)
    return runs


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_gguf_reads_back_every_tensor_and_the_tokenizer(imported, tied, tmp_path):
    run = imported[tied]
    assert baby("export", run.guid, "--format", "gguf", tmp_path / "g", "--out", run.paths.out) == 0
    reader = gguf.GGUFReader(tmp_path / "g" / "model.gguf")
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    expected = {"token_embd.weight": run.gpt.params["wte"], "position_embd.weight": run.gpt.params["wpe"],
                "output_norm.weight": run.gpt.params["ln_f.w"], "output_norm.bias": run.gpt.params["ln_f.b"]}
    for i in range(run.gpt.config.n_layers):
        for ours, (theirs, transposed) in BLOCK.items():
            array = run.gpt.params[f"blocks.{i}.{ours}"]
            expected[f"blk.{i}.{theirs}"] = array.T if transposed else array
    # the head always, as llama.cpp's converter writes it: wte itself when tied
    expected["output.weight"] = run.gpt.params["wte"] if tied else run.gpt.params["lm_head.w"].T
    assert sorted(tensors) == sorted(expected)
    for name, array in expected.items():
        assert tensors[name].dtype == np.float32
        np.testing.assert_array_equal(tensors[name], array, err_msg=name)

    def field(key):
        return reader.fields[key].contents()

    config, tok = run.gpt.config, run.tokenizer
    assert field("general.architecture") == "gpt2"
    assert [field(f"gpt2.{k}") for k in ("context_length", "embedding_length", "feed_forward_length",
                                         "block_count", "attention.head_count")] == \
        [config.n_ctx, config.n_emb, 4 * config.n_emb, config.n_layers, config.n_heads]
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    assert field("tokenizer.ggml.tokens") == tok.tokens
    assert field("tokenizer.ggml.merges") == [f"{tok.tokens[a]} {tok.tokens[b]}" for a, b in tok.merges]
    assert field("tokenizer.ggml.eos_token_id") == tok.tokens.index("<|endoftext|>")


def test_a_tokenizer_gguf_cannot_carry_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    assert baby("train", "--data", tmp_path / "text.txt", "--steps", "1", "--quiet", "--out", tmp_path,
                "--tokenizer", "bpe", "--vocab-size", "300", *GPT2_SHAPE) == 0
    assert baby("export", "last", "--format", "gguf", tmp_path / "g", "--out", tmp_path) == 2
    assert "bpe tokenizer" in one_line_error(capsys) and not (tmp_path / "g").exists()
