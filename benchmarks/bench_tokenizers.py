"""Time the tokenizers on a text file (default: tinyshakespeare) and print a small table.

    python benchmarks/bench_tokenizers.py [PATH] [--merges 512] [--repeats 5]

Each figure is the median of ``--repeats`` runs. "cold" encode starts from an empty chunk cache (a freshly
loaded tokenizer); "warm" encodes the same text again with the cache filled.
"""

import argparse
import statistics
import time
from pathlib import Path

from littlebaby.tokenizers import BPETokenizer, tokenizer_from_dict, train_tokenizer

DEFAULT_PATH = Path("/work/shared/data/tinyshakespeare.txt")


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH, help="UTF-8 text file")
    parser.add_argument("--merges", type=int, default=512, help="BPE merges to learn (vocab = 256 + merges)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure; the median is shown")
    args = parser.parse_args(argv)

    text = args.path.read_text(encoding="utf-8")
    megabytes = len(text.encode("utf-8")) / 1e6
    vocab_size = 256 + args.merges
    bpe = train_tokenizer("bpe", text, vocab_size=vocab_size)
    char = train_tokenizer("char", text)
    bpe_ids = bpe.encode(text)
    char_ids = char.encode(text)

    def encode_cold():
        tokenizer_from_dict(bpe.to_dict()).encode(text)

    rows = [
        (f"bpe train ({bpe.vocab_size - 256} merges)", median_seconds(
            lambda: BPETokenizer.train(text, vocab_size), args.repeats)),
        ("bpe encode, cold cache", median_seconds(encode_cold, args.repeats)),
        ("bpe encode, warm cache", median_seconds(lambda: bpe.encode(text), args.repeats)),
        ("bpe decode", median_seconds(lambda: bpe.decode(bpe_ids), args.repeats)),
        ("char train", median_seconds(lambda: train_tokenizer("char", text), args.repeats)),
        ("char encode", median_seconds(lambda: char.encode(text), args.repeats)),
        ("char decode", median_seconds(lambda: char.decode(char_ids), args.repeats)),
    ]
    print(f"{args.path} ({megabytes:.2f} MB, {len(text):,} characters), median of {args.repeats} runs")
    print(f"bpe: vocab {bpe.vocab_size}, {len(bpe_ids):,} tokens, {len(text) / len(bpe_ids):.2f} chars/token")
    print(f"char: vocab {char.vocab_size}, {len(char_ids):,} tokens")
    print(f"{'step':<28} {'seconds':>8} {'MB/s':>8}")
    for name, seconds in rows:
        print(f"{name:<28} {seconds:>8.3f} {megabytes / seconds:>8.1f}")


if __name__ == "__main__":
    main()
