"""`baby train | finetune | generate | info | runs | serve | import | export-original`: parse the arguments,
call littlebaby.api, print.

A BabyError is printed as one line, ``error: <message>``, on stderr, with the options it names turned into the
flags that set them (``flag_advice``), and the exit code is 2.
"""

import argparse
import importlib.util
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import typing

from littlebaby import api, parallel, report
from littlebaby import config as configlib
from littlebaby.device import DEVICES
from littlebaby.errors import BabyError
from littlebaby.model import Config
from littlebaby.training import DEFAULT_STEPS, TrainConfig

DESCRIPTION = """\
The Little Baby: a GPT-style language model in NumPy, every gradient written by hand.

  baby train                           train on the built-in Shakespeare corpus (a few minutes)
  baby train --data input.txt --steps 500 --n-layers 2
  baby generate --prompt "ROMEO:"      the pretrained baby that ships with littlebaby; `last`: your latest run
  baby train --age 24m                 a preset of growing size: 3m, 6m, 12m, 24m, 48m
  baby finetune last --data more.txt --steps 200
  baby runs                            list the runs in the current directory
  baby info last                       config, parameters by component, FLOPs, losses of a run
  baby serve last                      a local page: stream generation, see why each token came out
  baby import TheLittleBaby/           bring in a run of the original notebook (v0.0.5-v0.0.9)
  baby export-original last            write a run back in the original's v0.0.9 format
  baby export last --format hf gpt2-mine   a Hugging Face GPT-2 folder (transformers loads it)
  baby import-hf path/to/gpt2          a Hugging Face GPT-2 folder as a new run: generate, finetune

Each run is tagged by a GUID: configs/config_G.json, models/model_G.safetensors, models/tokenizer_G.json,
outputs/report_G.json, outputs/report_G.png, outputs/completion_G.txt. RUN is a GUID, a unique prefix of
one, or `last`."""


GROUPS = {   # the headings of the option flags in `baby train --help`, in order; see littlebaby.config.option
    "age": "age: a preset that grows with the baby (the flags below, given with it, win)",
    "model": "model",
    "switches": "architecture switches (see the README's parameter guide)",
    "budget": f"budget (one of; default {DEFAULT_STEPS} steps)",
    "training": "training",
}


def add_training_options(p, finetune=False):
    """--data, --config, then one flag per option of Config and TrainConfig, made from the field: its type
    gives the argument (Literal: choices, bool: --x / --no-x, int or float: a value), its help and default the
    help. A finetune has no flags for the options it takes from its parent's training (the tokenizer)."""
    p.add_argument("--data", metavar="PATH", help="UTF-8 text file to train on (default: built-in Shakespeare)")
    p.add_argument("--config", metavar="FILE.json",
                   help="JSON of options with underscores ({\"n_ctx\": 64, \"steps\": 500}) or a config_G.json; "
                        "flags override it")
    groups = {name: option_group(p, name, finetune) for name in GROUPS}   # listed in GROUPS' order; argparse
    for cls, home in ((Config, "model"), (TrainConfig, "training")):      # leaves out a group with no flags
        hints = typing.get_type_hints(cls)
        for field in configlib.options(cls):
            if finetune and cls is TrainConfig and not configlib.finetune_sets(cls, field):
                continue
            name = field.metadata["group"] or home
            groups[name].add_argument("--" + field.name.replace("_", "-"), help=flag_help(field),
                                      **flag_kind(hints[field.name], field))
    p.add_argument("--out", default=".", metavar="DIR", help="where configs/ models/ outputs/ live (default .)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def option_group(p, name, finetune):
    """The argparse group of heading GROUPS[name]; the budget flags exclude each other."""
    title = GROUPS[name]
    if finetune and name == "model":
        settable = [f.name for f in configlib.options(Config) if configlib.finetune_sets(Config, f)]
        title += f" (a finetune keeps the parent's, but for {', '.join(settable)})"
    group = p.add_argument_group(title)
    return group.add_mutually_exclusive_group() if name == "budget" else group


def flag_kind(annotation, field) -> dict:
    """The add_argument keywords of a field of type ``annotation``; the default is None, so an option not given
    is left to the config file or the field's default."""
    if typing.get_origin(annotation) is typing.Literal:
        return {"choices": typing.get_args(annotation)}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    (kind,) = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]  # int | None -> int
    return {"type": kind, "metavar": field.metadata["metavar"] or ("N" if kind is int else "F")}


def flag_help(field) -> str:
    """The field's help and its default (or what leaving it unset means)."""
    default = field.metadata["unset"] if field.default is None else field.default
    if isinstance(default, bool):
        default = "on" if default else "off"
    text = field.metadata["help"] + (f" (default: {default})" if default is not None else "")
    return text.replace("%", "%%")   # argparse formats help with %


def training_options(args) -> dict:
    """The option flags of a parsed `baby train` or `baby finetune`: field name -> value, None where not given."""
    fields = configlib.options(Config) + configlib.options(TrainConfig)
    return {f.name: getattr(args, f.name) for f in fields if hasattr(args, f.name)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baby", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = commands    # flag_advice reads the flags of every command

    train = commands.add_parser("train", help="train a new model (or --resume a stopped run)",
                                description="Train a model from scratch on plain text.")
    add_training_options(train)
    train.add_argument("--resume", metavar="RUN", help="continue a stopped run where it stopped, with its own "
                       "settings; only --device, --threads and --kernels may change")
    train.add_argument("--workers", type=int, default=1, metavar="K",
                       help="train as K MPI ranks started here by mpiexec (needs the mpi extra); on one "
                            "machine the default already trains on every core, see --threads")

    finetune = commands.add_parser("finetune", help="train a run further on new text, as RUN_finetuned",
                                   description="Continue training a run on new text; writes <guid>_finetuned "
                                               "files and never touches the parent's.")
    finetune.add_argument("run", metavar="RUN", help="GUID, unique prefix, last, or pretrained (the shipped baby)")
    add_training_options(finetune, finetune=True)
    finetune.add_argument("--overwrite", action="store_true", help="replace an existing <guid>_finetuned run")

    generate = commands.add_parser("generate", help="sample text from a run, streamed to stdout",
                                   description="Sample text from a trained run; also saved under outputs/.")
    generate.add_argument("run", metavar="RUN", nargs="?", default="pretrained",
                          help="GUID, unique prefix, last, or pretrained (the default: the baby that ships with "
                               "littlebaby, trained by `baby train --age 24m`)")
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
    generate.add_argument("--kernels", choices=("auto", "numpy", "numba"), default="auto",
                          help="auto (default): the compiled decode step when numba works (for the pretrained "
                               "baby, small enough that it starts sooner without: numpy); numpy: the NumPy "
                               "layers; the text is the same to float rounding")
    generate.add_argument("--no-cache", action="store_true",
                          help="recompute the context at each step instead of using the KV cache (same text)")
    generate.add_argument("--out", default=".", metavar="DIR", help="where the runs live (default .)")

    info = commands.add_parser("info", help="a run's config, parameters by component, FLOPs, losses")
    info.add_argument("run", metavar="RUN", help="GUID, unique prefix, last, or pretrained (the shipped baby)")
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

    serve = commands.add_parser("serve", help="a local web page: runs, streamed generation, why each token",
                                description="Serve a page on this machine that lists the runs, streams "
                                            "generation, and shows the distributions, attention and logit lens "
                                            "behind every token (needs the serve extra).")
    serve.add_argument("run", nargs="?", metavar="RUN", help="the run the page opens with (GUID, unique prefix, "
                                                           "last, or pretrained; default: pick one on the page)")
    serve.add_argument("--port", type=int, default=8000, metavar="N", help="TCP port (8000; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                       help="address to listen on (127.0.0.1, this machine only; another address warns)")
    serve.add_argument("--out", default=".", metavar="DIR", help="where the runs live (default .)")

    imports = commands.add_parser("import", help="bring in a run of the original The Little Baby notebook",
                                  description="Read a run of the original notebook (v0.0.5-v0.0.9: its JSON "
                                              "config, tokenizer and model) into a new run here, with a new GUID. "
                                              "Pickles are refused, never opened. See docs/IMPORT.md.")
    imports.add_argument("path", metavar="PATH", help="the original's folder (configs/, tokenizers/, models/) or "
                         "its models/model_<GUID>.json (or .weights)")
    imports.add_argument("--corpus", metavar="FILE", help="the training text, to rebuild the vocabulary of a run "
                         "older than v0.0.5 (which has no tokenizer file)")
    imports.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                         help="float32 (default, what the original computes with once loaded) or float64 (the "
                              "stored numbers exactly)")
    imports.add_argument("--out", default=".", metavar="DIR", help="where to write the new run (default .)")

    export = commands.add_parser("export-original", help="write a run in the original notebook's v0.0.9 format",
                                 description="Write a run as the original notebook's configs/, tokenizers/ and "
                                             "models/ JSON files, named by the run's GUID. Refused for what the "
                                             "original does not have (sparse experts, Q, K, V or gate biases, BPE).")
    export.add_argument("run", metavar="RUN", help="GUID, unique prefix, or last")
    export.add_argument("--to", default="original", metavar="DIR",
                        help="folder to write to (default: original, in the current directory)")
    export.add_argument("--out", default=".", metavar="DIR", help="where the runs live (default .)")
    return parser


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


OPTION_NAME = re.compile(r"`(?P<name>[a-z][a-z0-9_]*)(?:=(?P<value>[^`]*))?`")   # `n_ctx`, `tokenizer='bpe'`


def flag_advice(message: str, parser) -> str:
    """A BabyError's message as the command line says it. The Python API names the options that would fix a
    problem as keywords in backquotes (`n_ctx`, `overwrite=True`, `tokenizer='bpe'`); here they become the
    flags that set them (--n-ctx, --overwrite, --tokenizer bpe). Backquoted words that are no flag stay."""
    known = {action.dest for command in parser.commands.choices.values() for action in command._actions}

    def as_flag(match):
        name, value = match["name"], match["value"]
        if name not in known:
            return match[0]
        flag = "--" + name.replace("_", "-")
        if value is None or value == "True":
            return flag
        if value == "False":
            return "--no-" + flag[2:]
        return f"{flag} {value.strip(chr(39))}"

    return OPTION_NAME.sub(as_flag, message)


def command_line(argv) -> str:
    """The command as a shell would run it again: ``baby`` and the arguments, quoted where they need it."""
    return shlex.join(["baby", *argv])


def out_flag(out) -> str:
    """" --out DIR" for a command to print, or "" for the current directory."""
    return "" if pathlib.Path(out) == pathlib.Path(".") else f" --out {out}"


def resume_command(guid, out) -> str:
    return f"baby train --resume {guid}" + ("" if pathlib.Path(out) == pathlib.Path(".") else f" --out {out}")


def serve_command(args) -> int:
    """`baby serve`: the web server is an extra; without it, say what to install."""
    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise BabyError(f"baby serve needs the serve extra ({' and '.join(missing)} not installed): "
                        f"pip install -e \".[serve]\"")
    if not 0 <= args.port <= 65535:
        raise BabyError(f"--port must be 0 to 65535, got {args.port}")
    from littlebaby.serve.server import serve
    return serve(args.run, args.out, args.host, args.port)


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show a character gets "?", not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train" and args.workers != 1 and not parallel.launched_by_mpi():
            if args.workers < 1:
                raise BabyError(f"--workers must be at least 1, got {args.workers}")
            return run_workers(args.workers, argv)
        if args.command in ("train", "finetune"):
            if args.command == "train":
                run = api.train(data=args.data, config=args.config, out=args.out, quiet=args.quiet,
                                resume=args.resume, command=command_line(argv), **training_options(args))
            else:
                run = api.finetune(args.run, data=args.data, config=args.config, out=args.out,
                                   overwrite=args.overwrite, quiet=args.quiet, command=command_line(argv),
                                   **training_options(args))
            if not args.quiet and parallel.world().is_root:   # under MPI rank 0 speaks for all
                print(report.summary_lines(run.report, run.paths, resume_command(run.guid, args.out)),
                      file=sys.stderr)
        elif args.command == "generate":
            # a prompt the terminal's locale could not decode arrives with surrogates: read its bytes as UTF-8
            prompt = os.fsencode(args.prompt).decode("utf-8", errors="replace")
            result = api.generate(args.run, prompt=prompt, max_tokens=args.max_tokens,
                                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                  seed=args.seed, cache=not args.no_cache, out=args.out, stream=sys.stdout,
                                  num_samples=args.num_samples, device_name=args.device, kernels=args.kernels)
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
            print(f"imported {args.dir} as run {run.guid} ({run.gpt.num_params():,} parameters, "
                  f"{run.tokenizer.kind} tokenizer of {run.tokenizer.vocab_size:,} tokens)\n"
                  f"  baby generate {run.guid}{out_flag(args.out)} --prompt \"...\"")
        elif args.command == "runs":
            print(report.runs_table(args.out))
        elif args.command == "serve":
            return serve_command(args)
        elif args.command == "import":
            run = api.import_original(args.path, out=args.out, corpus=args.corpus, dtype=args.dtype)
            print(report.import_summary(run, out_flag(args.out)))
        elif args.command == "export-original":
            model = api.export_original(args.run, out=args.out, to=args.to)
            print(f"wrote the run in the original's v0.0.9 format: {model}, with its config and tokenizer in "
                  f"{model.parent.parent / 'configs'} and {model.parent.parent / 'tokenizers'}")
    except BabyError as e:
        print("error: " + " ".join(flag_advice(str(e), parser).split()), file=sys.stderr)   # one line, always
        return 2
    except MemoryError:
        print("error: not enough memory for this model; use a smaller --n-emb, --n-layers, --n-ctx or "
              "--batch-size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\naborted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # `baby generate | head`: the reader has what it wanted; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())                       # so the flush at exit cannot raise again
        return 141                                                  # what a shell reports for SIGPIPE
    return 0


if __name__ == "__main__":
    sys.exit(main())
