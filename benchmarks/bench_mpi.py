"""Data parallelism over MPI on one machine: 2 ranks x 1 BLAS thread against 1 rank x 2 BLAS threads.

    python benchmarks/bench_mpi.py                       # configs S and M, 200 steps, 3 rounds
    python benchmarks/bench_mpi.py --configs M --steps 100 --rounds 1

Each round trains the same run both ways (alternating which goes first, so machine noise falls on both) and
reads the training throughput from the run's report (mean step time on rank 0, the Allreduce included).
Prints the median tokens/s of each way and their ratio. Needs the mpi extra (pip install -e ".[mpi]").
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

CONFIGS = {
    "S": dict(n_ctx=64, n_emb=128, head_size=128, n_heads=16, n_layers=4, batch_size=16, dropout=0.1),
    "M": dict(n_ctx=64, n_emb=128, head_size=128, n_heads=4, n_layers=4, batch_size=12, dropout=0.0),
}
DATA = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tinyshakespeare.txt"


def tokens_per_s(command, threads, options, out):
    """Train once; return the report's tokens/s."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    data = options.pop("data")
    config = out / "options.json"
    config.write_text(json.dumps(options), encoding="utf-8")
    subprocess.run([*command, sys.executable, "-m", "littlebaby", "train", "--data", str(data),
                    "--config", str(config), "--out", str(out), "--quiet"], check=True, env=env)
    (report,) = (out / "outputs").glob("report_*.json")
    return json.loads(report.read_text(encoding="utf-8"))["tokens_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="S,M")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    ways = {"1 rank x 2 threads": ([], 2), "2 ranks x 1 thread": (["mpiexec", "-n", "2"], 1)}
    print(f"{'config':<7}{'way':<22}{'tokens/s (median)':>20}{'runs':>40}")
    for name in args.configs.split(","):
        options = dict(CONFIGS[name], steps=args.steps, eval_every=args.steps, eval_batches=2, completion_tokens=0)
        results = {way: [] for way in ways}
        for round_ in range(args.rounds):
            order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
            for way in order:
                out = pathlib.Path(tempfile.mkdtemp(prefix="bench-mpi-"))
                command, threads = ways[way]
                results[way].append(tokens_per_s(command, threads, dict(options, data=args.data), out))
                shutil.rmtree(out)
        medians = {way: statistics.median(runs) for way, runs in results.items()}
        for way, runs in results.items():
            print(f"{name:<7}{way:<22}{medians[way]:>20,.0f}{', '.join(f'{r:,.0f}' for r in runs):>40}")
        one, two = medians.values()
        print(f"{name:<7}{'ratio (2 ranks / 1)':<22}{two / one:>20.2f}x")


if __name__ == "__main__":
    main()
