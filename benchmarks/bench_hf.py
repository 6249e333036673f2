"""Import a GPT-2 124M-shaped Hugging Face folder (random weights) and generate from it; print one row.

    nice -n 10 python benchmarks/bench_hf.py [--tokens 32] [--keep DIR]

The folder is written here with NumPy and safetensors alone (no torch, no download): config.json of GPT-2 124M
(12 layers, 12 heads, 768 wide, context 1024, 50,257 tokens, tied head without bias), model.safetensors under
transformers' names with N(0, 0.02) weights, and a byte-level BPE tokenizer.json of 256 bytes, 50,000 two-byte
merges and <|endoftext|>. Then, in this process: ``import_hf`` timed with its peak RSS (the kernel's high-water
mark, reset just before), and ``generate`` with the KV cache: "gen tok/s" is what ``baby generate`` reports
(the prompt and the per-generation folding of the weights included; the best of 3 generations), "decode tok/s"
the rate of each further token (generations of 1 and N tokens, timed whole, the fastest of 3 each, differenced). Memory is also given in
copies of the weights (497 MB in float32): the import should hold about two (the weights it keeps, and the
pages of the file that safe_open maps while reading them).
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np
import safetensors.numpy

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from peak_rss import peak_rss_mb, reset_peak_rss  # noqa: E402

from littlebaby.api import generate  # noqa: E402
from littlebaby.interop import hf  # noqa: E402
from littlebaby.interop.hf_tokenizer import to_tokenizer_json  # noqa: E402
from littlebaby.model import Config, num_params  # noqa: E402
from littlebaby.tokenizers import GPT2Tokenizer  # noqa: E402
from littlebaby.tokenizers.gpt2 import token_text  # noqa: E402

GPT2_124M = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)


def rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def synthetic_tokenizer() -> GPT2Tokenizer:
    """256 byte tokens, 50,000 merges of two bytes each (every pair of bytes, in order, until there are enough),
    and <|endoftext|>: a valid byte-level BPE of GPT-2's size."""
    pairs = [(a, b) for a in range(256) for b in range(256)][:50000]
    tokens = [token_text(bytes([b])) for b in range(256)] + [token_text(bytes(p)) for p in pairs]
    return GPT2Tokenizer(tokens + ["<|endoftext|>"], pairs, [len(tokens)])


def write_folder(folder: pathlib.Path) -> int:
    """A GPT-2 124M folder with random weights; returns the number of parameters."""
    rng = np.random.default_rng(0)
    config = Config(vocab_size=50257, n_ctx=1024, n_emb=768, head_size=768, n_heads=12, n_layers=12,
                    weight_tying=True, lm_head_bias=False)
    hf_config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], **GPT2_124M,
                 "activation_function": "gelu_new", "tie_word_embeddings": True}
    tensors = {}
    for ours, theirs in hf.hf_names(config).items():
        shape = {"wte": (50257, 768), "wpe": (1024, 768)}.get(ours) or hf.param_shapes(config)[ours]
        tensors[theirs] = (rng.standard_normal(shape, dtype=np.float32) * 0.02 if len(shape) == 2
                           else np.ones(shape, np.float32) if ours.endswith(".w") else np.zeros(shape, np.float32))
    safetensors.numpy.save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config))
    (folder / "tokenizer.json").write_text(json.dumps(to_tokenizer_json(synthetic_tokenizer())))
    return num_params(config)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32, help="tokens to generate (default 32)")
    parser.add_argument("--keep", type=pathlib.Path, help="write the folder and the run here and keep them")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or pathlib.Path(scratch)
        (work / "gpt2").mkdir(parents=True, exist_ok=True)
        n = write_folder(work / "gpt2")
        weights_mb = n * 4 / 2**20
        before = rss_mb()
        reset_peak_rss()
        start = time.perf_counter()
        run = hf.import_hf(work / "gpt2", out=work / "runs")
        import_s = time.perf_counter() - start
        peak = peak_rss_mb()
        del run
        seconds = {}
        # first an untimed token: the decode kernel compiles or loads from numba's cache once per process, which
        # is no cost of a generation; then one token (the fixed cost: load, prompt, folding the weights) and N,
        # each the fastest of 3: loading 497 MB of weights varies by more than the N tokens take
        generate("last", prompt="Hello, my name is", max_tokens=1, temperature=0.0, out=work / "runs")
        seconds, rates = {}, []
        for tokens in (1, args.tokens):
            times = []
            for _ in range(3):
                start = time.perf_counter()
                result = generate("last", prompt="Hello, my name is", max_tokens=tokens, temperature=0.0,
                                  out=work / "runs")
                times.append(time.perf_counter() - start)
                rates.append(result.tokens_per_s)
            seconds[tokens] = min(times)
        decode_rate = (args.tokens - 1) / (seconds[args.tokens] - seconds[1])
    print(f"{'model':<26} {'params':>12} {'import s':>9} {'peak RSS MB':>12} {'+ copies':>9} {'gen tok/s':>10} "
          f"{'decode tok/s':>13}")
    print(f"{'GPT-2 124M shape, random':<26} {n:>12,} {import_s:>9.1f} {peak:>12,.0f} "
          f"{(peak - before) / weights_mb:>9.2f} {max(rates[3:]):>10.1f} {decode_rate:>13.1f}")


if __name__ == "__main__":
    main()
