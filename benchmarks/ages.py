"""The ages' growth chart: train every age through the real `baby train`, write the table into README.md, print it.

    python benchmarks/ages.py                  every age, youngest first (50 minutes on 2 cores)
    python benchmarks/ages.py --ship 24m       ... and copy the 24m run into littlebaby/pretrained/
    python benchmarks/ages.py --table-only     rebuild the table from the runs already in --out

Each age runs as `baby train --age AGE --seed 0 --threads 2` in its own folder under --out (default
benchmarks/ages_runs/), so the config of every run records exactly that command. The time is the command's wall
clock (corpus, training, evals, the completion and the quality figures); the rest comes from the run's report
(littlebaby.quality for the compression, words, speakers and score). The table goes between the markers
AGES_START and AGES_END of README.md.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from littlebaby import ages, builtin  # noqa: E402
from littlebaby.report import cpu_description  # noqa: E402
from littlebaby.runs import RunPaths, run_ids  # noqa: E402

README = ROOT / "README.md"
AGES_START, AGES_END = "<!-- ages:start (written by benchmarks/ages.py) -->", "<!-- ages:end -->"
COMMAND = ["--seed", "0", "--threads", "2"]   # seed and threads fixed: the recorded command reruns the same numbers


def train_age(age, out) -> float:
    """Run `baby train --age AGE` in out/AGE (emptied first); return its wall-clock seconds."""
    folder = out / age
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    baby = pathlib.Path(sys.executable).with_name("baby")
    start = time.perf_counter()
    subprocess.run([str(baby), "train", "--age", age, *COMMAND], cwd=folder, check=True)
    seconds = time.perf_counter() - start
    (folder / "wall_seconds.json").write_text(json.dumps({"seconds": seconds}), encoding="utf-8")
    return seconds


def the_run(folder) -> RunPaths:
    (guid,) = run_ids(folder)
    return RunPaths(folder, guid)


def one_line(text, width=60) -> str:
    """The start of a sample on one line: newlines as " / ", cut at a word near ``width`` characters."""
    flat = " / ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    if len(flat) > width:
        flat = flat[:width].rsplit(" ", 1)[0] + " ..."
    return flat.replace("|", "\\|")


def row(age, folder) -> list[str]:
    """The table row of the age trained in ``folder``."""
    paths = the_run(folder)
    rep = json.loads(paths.report_json.read_text(encoding="utf-8"))
    q = rep["quality"]
    seconds = json.loads((folder / "wall_seconds.json").read_text(encoding="utf-8"))["seconds"]
    minutes = f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
    sample = paths.completion.read_text(encoding="utf-8")
    return [f"`{age}` {ages.ages()[age]['title'].split(': ', 1)[1]}", minutes, f"{rep['tokens_per_s']:,.0f}",
            f"{rep['num_params']:,}", f"{rep['final_val_loss']:.3f}", f"{q['model_bpc']:.3f}",
            f"{q['vs_gzip']:.2f}x", f"{q['real_word_share']:.0%}", f"{q['speaker_share']:.0%}",
            f"{q['score']:.1f}", one_line(sample)]


HEADER = ["age", "time", "tokens/s", "parameters", "val loss", "bits/char", "vs gzip", "real words",
          "speaker lines", "score", "sample"]


def table(rows, gzip_note) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + gzip_note


def write_between_markers(text, block) -> str:
    """``text`` with what lies between AGES_START and AGES_END replaced by ``block``."""
    head, found, rest = text.partition(AGES_START)
    if not found or AGES_END not in rest:
        raise SystemExit(f"README.md lacks the markers {AGES_START} ... {AGES_END}")
    return head + AGES_START + "\n" + block + "\n" + AGES_END + rest.split(AGES_END, 1)[1]


def ship(folder) -> None:
    """Copy the run in ``folder`` into littlebaby/pretrained/: config, weights, tokenizer, report, completion."""
    paths = the_run(folder)
    target = builtin.FOLDER
    shutil.rmtree(target, ignore_errors=True)
    shipped = RunPaths(target, paths.guid)
    for name in ("config", "model", "tokenizer", "report_json", "completion"):
        getattr(shipped, name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(getattr(paths, name), getattr(shipped, name))
    print(f"shipped run {paths.guid} ({folder.name}) in {target}", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "ages_runs")
    parser.add_argument("--ages", default=",".join(ages.ages()), help="comma-separated ages to train")
    parser.add_argument("--ship", metavar="AGE", help="copy this age's run into littlebaby/pretrained/")
    parser.add_argument("--table-only", action="store_true", help="train nothing; tabulate the runs in --out")
    args = parser.parse_args(argv)
    chosen = args.ages.split(",")
    for age in chosen:
        ages.check_age(age)
    if not args.table_only:
        for age in chosen:
            print(f"training {age}: baby train --age {age} {' '.join(COMMAND)}", file=sys.stderr, flush=True)
            train_age(age, args.out.resolve())
    done = [age for age in ages.ages() if (args.out / age / "wall_seconds.json").exists()]
    rows = [row(age, args.out / age) for age in done]
    q = json.loads(the_run(args.out / done[-1]).report_json.read_text(encoding="utf-8"))["quality"]
    c = q["compressor_bpc"]
    note = (f"Bits/char on the first {q['val_chars']:,} characters of the built-in corpus's validation split, where "
            f"gzip -9 needs {c['gzip']:.3f}, bz2 -9 {c['bz2']:.3f} and xz -9 {c['xz']:.3f}; \"vs gzip\" is gzip's "
            f"bits over the baby's. Real words and speaker lines are rough signals read from a "
            f"{quality_tokens(args.out / done[-1]):,}-token sample of each run (the corpus: "
            f"{q['corpus_speaker_share']:.0%} speaker lines); the score is docs/QUALITY.md's. "
            f"Measured by `python benchmarks/ages.py` on {machine()}, {time.strftime('%Y-%m-%d')}.")
    block = table(rows, note)
    README.write_text(write_between_markers(README.read_text(encoding="utf-8"), block), encoding="utf-8")
    print(block)
    if args.ship:
        ship(args.out / args.ship)
    return 0


def quality_tokens(folder) -> int:
    """The quality sample's length in the config of the run in ``folder``."""
    return json.loads(the_run(folder).config.read_text(encoding="utf-8"))["training"]["quality_tokens"]


def machine() -> str:
    return f"{cpu_description()}; {len(os.sched_getaffinity(0))} cores"


if __name__ == "__main__":
    sys.exit(main())
