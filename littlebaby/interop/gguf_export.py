"""``baby export RUN --format gguf DIR``: DIR/model.gguf for llama.cpp's GPT-2 ("gpt2" architecture), float32.

The same model as the Hugging Face export (hf.py: GPT-2's shape, or refused), under llama.cpp's names. GGUF
stores a matrix as PyTorch's Linear does, (out, in), so our (in, out) weights are transposed; embeddings are
(rows, C) in both:

    ours                    GGUF                        ours                    GGUF
    wte (V, C)              token_embd.weight (V, C)    wpe (n_ctx, C)          position_embd.weight
    blocks.{i}.ln_1.w, .b   blk.{i}.attn_norm.weight, .bias
    attn.w_qkv (C, 3C), .b  blk.{i}.attn_qkv.weight (3C, C), .bias
    attn.w_proj (C, C), .b  blk.{i}.attn_output.*       ln_2.w, .b              blk.{i}.ffn_norm.*
    mlp.w_fc (C, 4C), .b    blk.{i}.ffn_up.* (4C, C)    mlp.w_proj (4C, C), .b  blk.{i}.ffn_down.* (C, 4C)
    ln_f.w, .b              output_norm.weight, .bias   lm_head.w (C, V)        output.weight (V, C)
A tied head is written as output.weight too, a copy of token_embd.weight, as llama.cpp's own converter does for
GPT-2 (its loader looks for output.weight).

The tokenizer must be GPT-2's (kind gpt2, from ``baby import-hf``): GGUF names its pre-split by one of
llama.cpp's built-in regexes ("gpt-2") instead of carrying one, and littlebaby's own BPE split and the char
tokenizer are not among them, so llama.cpp would cut their text differently. Needs the ``gguf`` package
(the ``gguf`` extra).
"""

import pathlib

import numpy as np

from littlebaby.errors import BabyError
from littlebaby.interop.hf import check_target, staging_folder, why_not_gpt2
from littlebaby.nn.layernorm import EPS
from littlebaby.tokenizers import GPT2Tokenizer

FILE = "model.gguf"
BLOCK_NAMES = {"ln_1.w": "attn_norm.weight", "ln_1.b": "attn_norm.bias", "attn.w_qkv": "attn_qkv.weight",
               "attn.b_qkv": "attn_qkv.bias", "attn.w_proj": "attn_output.weight", "attn.b_proj": "attn_output.bias",
               "ln_2.w": "ffn_norm.weight", "ln_2.b": "ffn_norm.bias", "mlp.w_fc": "ffn_up.weight",
               "mlp.b_fc": "ffn_up.bias", "mlp.w_proj": "ffn_down.weight", "mlp.b_proj": "ffn_down.bias"}


def gguf_names(config) -> dict[str, str]:
    """Our parameter name -> llama.cpp's tensor name (see the table above)."""
    names = {"wte": "token_embd.weight", "wpe": "position_embd.weight"}
    for i in range(config.n_layers):
        names.update({f"blocks.{i}.{ours}": f"blk.{i}.{theirs}" for ours, theirs in BLOCK_NAMES.items()})
    names.update({"ln_f.w": "output_norm.weight", "ln_f.b": "output_norm.bias"})
    if not config.weight_tying:
        names["lm_head.w"] = "output.weight"
    return names


def gguf_tensors(params, config) -> dict:
    """Our parameters under llama.cpp's names, float32, matrices (out, in); output.weight always there."""
    tensors = {theirs: np.ascontiguousarray(params[ours].T if params[ours].ndim == 2 and ours not in ("wte", "wpe")
                                            else params[ours], dtype=np.float32)
               for ours, theirs in gguf_names(config).items()}
    if config.weight_tying:
        tensors["output.weight"] = tensors["token_embd.weight"]   # the tied head is wte itself
    return tensors


def export_gguf(run, folder, out=".", overwrite=False) -> pathlib.Path:
    """Write run ``run`` as DIR/model.gguf; everything is checked before anything is written."""
    try:
        import gguf
    except ImportError:
        raise BabyError("GGUF export needs the gguf package: pip install -e \".[gguf]\"") from None
    from littlebaby.api import load_run
    loaded = load_run(run, out)
    config, params, tok = loaded.gpt.config, loaded.gpt.params, loaded.tokenizer
    reason = why_not_gpt2(config, params)
    if reason:
        raise BabyError(f"run {loaded.guid} cannot be exported as GPT-2: {reason}")
    if not isinstance(tok, GPT2Tokenizer):
        raise BabyError(f"run {loaded.guid} has a {tok.kind} tokenizer, whose pre-split is not one of llama.cpp's "
                        f"built-in ones, so GGUF cannot carry it exactly; export it as a Hugging Face folder instead (GGUF needs "
                        f"GPT-2's tokenizer, as in a run made by baby import-hf)")
    folder = pathlib.Path(folder)
    check_target(folder, overwrite)
    with staging_folder(folder) as stage:
        writer = gguf.GGUFWriter(stage / FILE, "gpt2")
        writer.add_name(f"littlebaby {loaded.guid}")
        writer.add_context_length(config.n_ctx)
        writer.add_embedding_length(config.n_emb)
        writer.add_feed_forward_length(4 * config.n_emb)
        writer.add_block_count(config.n_layers)
        writer.add_head_count(config.n_heads)
        writer.add_layer_norm_eps(EPS)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(tok.tokens)
        special = set(tok.special)
        writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                                for i in range(tok.vocab_size)])
        writer.add_token_merges([f"{tok.tokens[a]} {tok.tokens[b]}" for a, b in tok.merges])
        end = next((i for i in tok.special if tok.tokens[i] == "<|endoftext|>"), None)
        if end is not None:
            writer.add_bos_token_id(end)
            writer.add_eos_token_id(end)
        for name, array in gguf_tensors(params, config).items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return folder
