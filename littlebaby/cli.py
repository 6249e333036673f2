"""`baby train | finetune | generate | runs`: parse the arguments, call littlebaby.api, print.

A BabyError is printed as one line, ``error: <message>``, on stderr, and the exit code is 2.
"""

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys

from littlebaby import api, parallel, report
from littlebaby.device import DEVICES
from littlebaby.errors import BabyError
from littlebaby.train import DEFAULT_STEPS

DESCRIPTION = """\
The Little Baby: a GPT-style language model in NumPy, every gradient written by hand.

  baby train                           train on the built-in Shakespeare corpus (a few minutes)
  baby train --data input.txt --steps 500 --n-layers 2
  baby generate last --prompt "ROMEO:"
  baby finetune last --data more.txt --steps 200
  baby runs                            list the runs in the current directory
  baby info last                       config, parameters by component, FLOPs, losses of a run
  baby export last --format hf gpt2-mine   a Hugging Face GPT-2 folder (transformers loads it)
  baby import-hf path/to/gpt2          a Hugging Face GPT-2 folder as a new run: generate, finetune

Each run is tagged by a GUID: configs/config_G.json, models/model_G.safetensors, models/tokenizer_G.json,
outputs/report_G.json, outputs/report_G.png, outputs/completion_G.txt. RUN is a GUID, a unique prefix of
one, or `last`."""


def add_training_options(p, finetune=False):
    p.add_argument("--data", metavar="PATH", help="UTF-8 text file to train on (default: built-in Shakespeare)")
    p.add_argument("--config", metavar="FILE.json",
                   help="JSON of options with underscores ({\"n_ctx\": 64, \"steps\": 500}) or a config_G.json; "
                        "flags override it")
    model = p.add_argument_group("model" + (" (a finetune keeps the parent's shape)" if finetune else ""))
    for flag, kind, text in (("--n-ctx", int, "context length in tokens"),
                             ("--n-emb", int, "width of the residual stream"),
                             ("--head-size", int, "total width of Q, K, V across heads"),
                             ("--n-heads", int, "attention heads (must divide head-size)"),
                             ("--n-layers", int, "transformer blocks"),
                             ("--dropout", float, "dropout probability in training"),
                             ("--batch-size", int, "sequences per step"),
                             ("--lr", float, "peak learning rate")):
        model.add_argument(flag, type=kind, metavar="N" if kind is int else "F", help=text)
    switches = p.add_argument_group("architecture switches (see the README's parameter guide)")
    switches.add_argument("--c-sequence", choices=("pre", "post"), help="LayerNorm before sublayers (pre, default) "
                          "or after each residual add (post)")
    switches.add_argument("--c-attention", choices=("mha", "moh"), help="multi-head attention (mha, default) or "
                          "mixture of heads (moh)")
    switches.add_argument("--c-network", choices=("mlp", "moe"), help="one MLP (default) or a mixture of experts")
    switches.add_argument("--n-experts", type=int, metavar="N", help="experts per block with moe (default 4)")
    switches.add_argument("--moe-top-k", type=int, metavar="K", help="0: dense soft gate (default); K: each token "
                          "runs only its K best experts")
    switches.add_argument("--moe-expansion", type=int, metavar="N", help="an expert's hidden width in n_emb (4)")
    switches.add_argument("--moe-aux-weight", type=float, metavar="F", help="load-balancing loss weight (0.01)")
    switches.add_argument("--weight-tying", action=argparse.BooleanOptionalAction, default=None,
                          help="the LM head reuses the token embedding (default off)")
    switches.add_argument("--lm-head-bias", action=argparse.BooleanOptionalAction, default=None,
                          help="the LM head adds a learned bias (default on; GPT-2 has none: --no-lm-head-bias)")
    budget = p.add_argument_group("budget (one of; default %d steps)" % DEFAULT_STEPS)
    one = budget.add_mutually_exclusive_group()
    one.add_argument("--epochs", type=float, metavar="E", help="passes over the training split")
    one.add_argument("--steps", type=int, metavar="S", help="optimizer steps")
    one.add_argument("--max-time", type=float, metavar="MINUTES",
                     help="wall-clock budget; stops gracefully (complete and resumable)")
    t = p.add_argument_group("training")
    t.add_argument("--eval-every", type=int, metavar="S", help="steps between evals (default: 10 evals per run)")
    t.add_argument("--eval-batches", type=int, metavar="N", help="fixed batches per eval (default 8)")
    t.add_argument("--warmup-steps", type=int, metavar="S", help="linear warmup (default 5%% of steps, max 200)")
    t.add_argument("--min-lr", type=float, metavar="F", help="learning rate at the end (default lr / 10)")
    t.add_argument("--weight-decay", type=float, metavar="F", help="AdamW weight decay (default 0.1)")
    t.add_argument("--grad-clip", type=float, metavar="F", help="global gradient-norm clip (default 1.0)")
    t.add_argument("--seed", type=int, metavar="N", help="seed of init, dropout, batches (default 0)")
    t.add_argument("--device", choices=DEVICES, help="cpu (NumPy, default) or cuda (CuPy on an NVIDIA GPU; "
                   "needs the cuda extra)" + ("; with --resume, the one setting that may change" if not finetune
                                              else ""))
    if not finetune:
        t.add_argument("--tokenizer", choices=("char", "bpe"), help="char (default) or byte-level bpe")
        t.add_argument("--vocab-size", type=int, metavar="N", help="bpe vocabulary size (default 512)")
    p.add_argument("--out", default=".", metavar="DIR", help="where configs/ models/ outputs/ live (default .)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


TRAINING_DESTS = ("n_ctx", "n_emb", "head_size", "n_heads", "n_layers", "dropout", "batch_size", "lr",
                  "c_sequence", "c_attention", "c_network", "n_experts", "moe_top_k", "moe_expansion",
                  "moe_aux_weight", "weight_tying", "lm_head_bias", "epochs",
                  "steps", "max_time", "eval_every", "eval_batches", "warmup_steps", "min_lr", "weight_decay",
                  "grad_clip", "seed", "tokenizer", "vocab_size", "device")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baby", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a new model (or --resume a stopped run)",
                                description="Train a model from scratch on plain text.")
    add_training_options(train)
    train.add_argument("--resume", metavar="RUN", help="continue a stopped run where it stopped")
    train.add_argument("--workers", type=int, default=1, metavar="K",
                       help="train as K MPI ranks of one BLAS thread each (needs the mpi extra); on a 2-core "
                            "machine 2 workers run 1.2-1.35x faster than one process")

    finetune = commands.add_parser("finetune", help="train a run further on new text, as RUN_finetuned",
                                   description="Continue training a run on new text; writes <guid>_finetuned "
                                               "files and never touches the parent's.")
    finetune.add_argument("run", metavar="RUN", help="GUID, unique prefix, or last")
    add_training_options(finetune, finetune=True)
    finetune.add_argument("--overwrite", action="store_true", help="replace an existing <guid>_finetuned run")

    generate = commands.add_parser("generate", help="sample text from a run, streamed to stdout",
                                   description="Sample text from a trained run; also saved under outputs/.")
    generate.add_argument("run", metavar="RUN", help="GUID, unique prefix, or last")
    generate.add_argument("--prompt", default="", help="text to continue (default: empty)")
    generate.add_argument("--max-tokens", type=int, default=500, metavar="N", help="tokens to sample (500)")
    generate.add_argument("--temperature", type=float, default=1.0, metavar="T", help="0 is greedy (1.0)")
    generate.add_argument("--top-k", type=int, metavar="K", help="sample among the K likeliest tokens")
    generate.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling: smallest set with mass P")
    generate.add_argument("--seed", type=int, metavar="N", help="seed for reproducible samples")
    generate.add_argument("--num-samples", type=int, default=1, metavar="N",
                          help="N continuations generated as one batch (1)")
    generate.add_argument("--device", choices=DEVICES, default="cpu",
                          help="cpu (default) or cuda: where the model runs")
    generate.add_argument("--no-cache", action="store_true",
                          help="recompute the context at each step instead of using the KV cache (same text)")
    generate.add_argument("--out", default=".", metavar="DIR", help="where the runs live (default .)")

    info = commands.add_parser("info", help="a run's config, parameters by component, FLOPs, losses")
    info.add_argument("run", metavar="RUN", help="GUID, unique prefix, or last")
    info.add_argument("--out", default=".", metavar="DIR", help="where the runs live (default .)")

    export = commands.add_parser("export", help="write a run as a Hugging Face GPT-2 folder",
                                 description="Write a run as a folder that transformers' GPT2LMHeadModel and "
                                             "AutoTokenizer load: config.json, model.safetensors, tokenizer.json.")
    export.add_argument("run", metavar="RUN", help="GUID, unique prefix, or last")
    export.add_argument("dir", metavar="DIR", help="the folder to write (new, or empty)")
    export.add_argument("--format", choices=("hf", "gguf"), default="hf",
                        help="hf: Hugging Face GPT-2 (default); gguf: DIR/model.gguf for llama.cpp (the gguf extra)")
    export.add_argument("--overwrite", action="store_true", help="replace the files of a folder that is not empty")
    export.add_argument("--out", default=".", metavar="DIR", help="where the runs live (default .)")

    import_hf = commands.add_parser("import-hf", help="read a Hugging Face GPT-2 folder into a new run",
                                    description="Read config.json, model.safetensors and tokenizer.json of a GPT-2 "
                                                "folder into a run you can generate from and finetune.")
    import_hf.add_argument("dir", metavar="DIR", help="the folder that holds config.json and model.safetensors")
    import_hf.add_argument("--tokenizer", metavar="FILE", help="the tokenizer, when DIR has no tokenizer.json")
    import_hf.add_argument("--out", default=".", metavar="DIR", help="where to write the run (default .)")

    runs = commands.add_parser("runs", help="list the runs: GUID, date, config, steps, val loss")
    runs.add_argument("--out", default=".", metavar="DIR", help="where the runs live (default .)")
    return parser


def training_options(args) -> dict:
    return {dest: getattr(args, dest) for dest in TRAINING_DESTS if hasattr(args, dest)}


def without_workers(argv) -> list[str]:
    """argv less its ``--workers K`` / ``--workers=K``: what each MPI rank is started with."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return kept


def run_workers(workers, argv) -> int:
    """Start this same command as ``mpiexec -n K`` ranks, one BLAS thread each; wait for them."""
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None or importlib.util.find_spec("mpi4py") is None:
        raise BabyError("--workers needs MPI: pip install -e \".[mpi]\" (mpi4py and mpiexec)")
    threads = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    command = [mpiexec, "-n", str(workers), sys.executable, "-m", "littlebaby", *without_workers(argv)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the ranks, which save and stop
    try:
        return subprocess.call(command, env={**os.environ, **threads})
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show a character gets "?", not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train" and args.workers != 1 and not parallel.launched_by_mpi():
            if args.workers < 1:
                raise BabyError(f"--workers must be at least 1, got {args.workers}")
            return run_workers(args.workers, argv)
        if args.command == "train":
            api.train(data=args.data, config=args.config, out=args.out, quiet=args.quiet, resume=args.resume,
                      **training_options(args))
        elif args.command == "finetune":
            api.finetune(args.run, data=args.data, config=args.config, out=args.out, overwrite=args.overwrite,
                         quiet=args.quiet, **training_options(args))
        elif args.command == "generate":
            # a prompt the terminal's locale could not decode arrives with surrogates: read its bytes as UTF-8
            prompt = os.fsencode(args.prompt).decode("utf-8", errors="replace")
            result = api.generate(args.run, prompt=prompt, max_tokens=args.max_tokens,
                                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                  seed=args.seed, cache=not args.no_cache, out=args.out, stream=sys.stdout,
                                  num_samples=args.num_samples, device_name=args.device)
            print(file=sys.stdout)
            for i, text in enumerate(result.texts[1:], start=2):
                print(f"\n=== sample {i} of {args.num_samples} ===\n{text}", file=sys.stdout)
            print(f"({result.tokens_per_s:,.0f} tokens/s; saved to {result.path})", file=sys.stderr)
        elif args.command == "info":
            print(report.info_text(api.load_run(args.run, args.out)))
        elif args.command == "export":
            from littlebaby.interop import gguf_export, hf
            if args.format == "gguf":
                folder = gguf_export.export_gguf(args.run, args.dir, out=args.out, overwrite=args.overwrite)
                print(f"wrote {folder / gguf_export.FILE}")
            else:
                folder = hf.export_hf(args.run, args.dir, out=args.out, overwrite=args.overwrite)
                print(f"wrote {folder}: config.json, model.safetensors, tokenizer.json, tokenizer_config.json")
        elif args.command == "import-hf":
            from littlebaby.interop import hf
            run = hf.import_hf(args.dir, out=args.out, tokenizer=args.tokenizer)
            out_flag = "" if args.out == "." else f" --out {args.out}"
            print(f"imported {args.dir} as run {run.guid} ({run.gpt.num_params():,} parameters, "
                  f"{run.tokenizer.kind} tokenizer of {run.tokenizer.vocab_size:,} tokens)\n"
                  f"  baby generate {run.guid}{out_flag} --prompt \"...\"")
        elif args.command == "runs":
            print(report.runs_table(args.out))
    except BabyError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)   # one line, always
        return 2
    except MemoryError:
        print("error: not enough memory for this model; use a smaller --n-emb, --n-layers, --n-ctx or "
              "--batch-size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\naborted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
