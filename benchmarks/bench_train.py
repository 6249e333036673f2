"""Train-step speed of littlebaby against the PyTorch reference model, on identical shapes, in one run.

    python benchmarks/bench_train.py          # S, M (20 timed steps), L (5), generation, 100 MB corpus
    python benchmarks/bench_train.py --configs S --steps 5 --skip-generate --skip-corpus   # a quick look

littlebaby runs as "default": exactly what ``baby train`` runs with no flags (the compiled kernels of
``littlebaby.kernels`` when numba works, every core through the worker processes of ``littlebaby.workers``,
each product on cores // workers BLAS threads); "numpy": the NumPy layers of ``littlebaby.nn`` in this one
process, BLAS on every core (the readable reference path); "mpiK": K MPI ranks of one BLAS thread each
(``mpiexec -n K baby train``, benchmarks/mpi_ranks.py; needs the mpi extra). The header names the CPU and
the SIMD extensions it has: NumPy's element-wise speed depends on them (AVX-512 or only AVX2).

For each config the contestants take turns, one train step each (forward + backward + AdamW), so a burst of
load on the shared machine lands on all of them; who goes first rotates. Each timed step starts after ``--gap``
seconds of idle: both libraries keep their worker threads spinning for a while after a call (OpenBLAS for about
0.1 s), and without the gap those spinning threads take a core from whichever model runs next.

The table reports median step times, tokens/s, the ratio (>1: littlebaby is faster), our achieved GFLOP/s from
``littlebaby.model.flops_per_token`` and its fraction of the float32 matmul ceiling (the best of several large
``np.matmul`` runs in this process), and the peak RSS of each contestant's warm-up steps on their own (the
kernel's high-water mark, reset before each; for worker processes and MPI ranks the sum of their peaks). Then
generation tokens/s (``littlebaby.sampling.sample_ids``) and the peak RSS of preparing a generated 100 MB text
file the way ``baby train`` does, in a fresh process.

The PyTorch side is ``tests/torch_reference.py`` (plain eager torch, default thread count, no compile), with
its own AdamW (decay on matrices only, like ours) and ``torch.nn.functional.dropout`` for dropout, so that it
pays no NumPy mask cost. littlebaby uses its own seeded masks.
"""

import argparse
import contextlib
import dataclasses
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from littlebaby.model import GPT, Config, flops_per_token  # noqa: E402
from littlebaby.optim import AdamW  # noqa: E402
from littlebaby import kernels  # noqa: E402
from littlebaby.workers import Workers, plan_threads  # noqa: E402
from mpi_ranks import MPIRanks, mpi_available  # noqa: E402
from peak_rss import peak_rss_mb, reset_peak_rss  # noqa: E402

# The three shapes; vocabulary 65 (Tiny Shakespeare's characters).
CONFIGS = {
    "S": dict(n_ctx=64, n_emb=128, head_size=128, n_heads=16, n_layers=4, batch_size=16, dropout=0.1),
    "M": dict(n_ctx=64, n_emb=128, head_size=128, n_heads=4, n_layers=4, batch_size=12, dropout=0.0),
    "L": dict(n_ctx=256, n_emb=384, head_size=384, n_heads=6, n_layers=6, batch_size=64, dropout=0.2),
}
VOCAB = 65
LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.99), 1e-8, 0.1
ADAMW = dict(lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)


@dataclasses.dataclass
class Result:
    name: str                 # config name
    variant: str              # how littlebaby ran: one thread, data parallel over threads or over MPI ranks
    ours_s: float             # median seconds per train step
    torch_s: float
    tokens: int               # tokens per step, B * n_ctx
    flops_per_token: int
    ours_rss_mb: float        # peak RSS while only this variant's steps ran; MPI ranks: the sum of their peaks
    torch_rss_mb: float


# --- the ceiling ---------------------------------------------------------------------------------------------

def matmul_ceiling_gflops(n=2048, repeats=7):
    """Best-of-repeats GFLOP/s of one (n, n) @ (n, n) float32 product: what BLAS can do on this machine."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)              # (n, n)
    b = rng.standard_normal((n, n), dtype=np.float32)              # (n, n)
    out = np.empty((n, n), dtype=np.float32)                       # (n, n)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(times) / 1e9


# --- one train step of each model ----------------------------------------------------------------------------

def make_ours(cfg, variant, running):
    """A train step of littlebaby as ``variant`` runs it: "default" or "numpy" (see the module docstring).
    ``running`` (an ExitStack) keeps the worker processes alive until the config's turn is over."""
    gpt = GPT(cfg, seed=0)
    opt = AdamW(gpt.params, **ADAMW)
    if variant == "numpy":
        def step(idx, targets):
            kernels.use("numpy")
            _, grads = gpt.loss_and_grads(idx, targets)
            opt.step(gpt.params, grads)
        return step
    n_workers, blas_threads = plan_threads(cfg.batch_size)
    rngs = [gpt.rng] + [np.random.default_rng([0, w]) for w in range(1, n_workers)]
    kernels.use("auto")   # before the fork: the worker processes inherit the kernels in use
    workers = running.enter_context(Workers(gpt, n_workers, rngs, cfg.batch_size, blas_threads))

    def step(idx, targets):
        kernels.use("auto")   # the numpy variant may have switched them off since
        _, grads = workers.loss_and_grads(idx, targets)
        opt.step(gpt.params, grads)
    step.workers = workers
    return step


def default_label():
    """How the default variant runs on this machine, e.g. "2 worker processes x 1 BLAS thread, numba"."""
    n_workers, blas_threads = plan_threads(1 << 20)
    kernel_set, _ = kernels.resolve("auto")
    return f"{n_workers} workers x {blas_threads} BLAS, {kernel_set}"


def make_torch(cfg, params):
    import torch
    import torch.nn.functional as F
    from torch_reference import TorchGPT, block, layer_norm

    ref = TorchGPT(cfg, params)
    decay = [t for t in ref.params.values() if t.ndim >= 2]
    no_decay = [t for t in ref.params.values() if t.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS, eps=EPS)
    p = cfg.dropout

    def drop(x):
        return F.dropout(x, p, training=True) if p > 0 else x

    def forward(idx):
        # the reference's forward, with torch's own dropout in place of its shared NumPy masks
        x = ref.params["wte"][idx] + ref.params["wpe"][:idx.shape[1]]  # (B, T, C)
        for i in range(cfg.n_layers):
            x = block(x, ref.block_params(i), cfg.n_heads, drop)       # (B, T, C)
        x = layer_norm(x, ref.params["ln_f.w"], ref.params["ln_f.b"])  # (B, T, C)
        return x @ ref.params["lm_head.w"] + ref.params["lm_head.b"]  # (B, T, V)

    def step(idx, targets):
        idx_t, targets_t = torch.from_numpy(idx), torch.from_numpy(targets)
        logits = forward(idx_t)                                        # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets_t.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


class InProcess:
    """A contestant driven from this process: ``step(b)`` trains on batches[b]; its peak RSS is this process's
    and its worker processes' (the default variant's), summed."""

    def __init__(self, train_step, batches):
        self.train_step, self.batches = train_step, batches
        workers = getattr(train_step, "workers", None)
        self.pids = ["self"] + ([pid for pid, *_ in workers.children] if workers is not None else [])

    def step(self, b):
        self.train_step(*self.batches[b])

    def warm_up(self, steps):
        """Run the warmup steps alone and return their peak RSS in MB."""
        for pid in self.pids:
            reset_peak_rss(pid)
        for i in range(steps):
            self.step(i % len(self.batches))
        return sum(peak_rss_mb(pid) for pid in self.pids)


def timed(contestant, b, gap):
    time.sleep(gap)  # let the other library's idle threads stop spinning first (see the module docstring)
    start = time.perf_counter()
    contestant.step(b)
    return time.perf_counter() - start


def variant_label(variant):
    """"default" -> what it runs here, "numpy" -> "numpy, 1 process", "mpi2" -> "2 MPI ranks"."""
    if variant.startswith("mpi"):
        return "1 MPI rank" if variant == "mpi1" else f"{variant[3:]} MPI ranks"
    return f"default ({default_label()})" if variant == "default" else "numpy layers, 1 process"


def bench_config(name, steps, warmup, gap, variants, seed=0):
    """(one Result per littlebaby variant, notes); all variants and PyTorch take turns step by step."""
    cfg = Config(vocab_size=VOCAB, lr=LR, dtype="float32", **CONFIGS[name])
    rng = np.random.default_rng(seed)
    shape = (cfg.batch_size, cfg.n_ctx)
    batches = [(rng.integers(0, VOCAB, shape), rng.integers(0, VOCAB, shape)) for _ in range(4)]
    with contextlib.ExitStack() as running:
        contestants = {}
        for variant in variants:
            if variant.startswith("mpi"):   # K processes: see benchmarks/mpi_ranks.py
                contestants[variant] = running.enter_context(MPIRanks(cfg, batches, int(variant[3:]), ADAMW))
            else:
                contestants[variant] = InProcess(make_ours(cfg, variant, running), batches)
        contestants["torch"] = InProcess(make_torch(cfg, GPT(cfg, seed=0).params), batches)
        rss = {key: contestant.warm_up(warmup) for key, contestant in contestants.items()}
        times = {key: [] for key in contestants}
        order = list(contestants)
        for i in range(steps):
            for key in order[i % len(order):] + order[:i % len(order)]:  # rotate who goes first
                times[key].append(timed(contestants[key], i % len(batches), gap))
        notes = []
        for key, contestant in contestants.items():
            if isinstance(contestant, MPIRanks):   # the fairness check: parked ranks should take no CPU
                cpu, wall = contestant.parked()
                notes.append(f"{variant_label(key)}: {cpu * 1e3:.1f} ms of CPU in {wall:.1f} s parked "
                             f"(summed over ranks)")
    torch_s = statistics.median(times["torch"])
    results = [Result(name, variant_label(v), statistics.median(times[v]), torch_s, cfg.batch_size * cfg.n_ctx,
                      flops_per_token(cfg), rss[v], rss["torch"]) for v in variants]
    return results, notes


# --- generation and corpus preparation, when the package offers them ----------------------------------------

def bench_generate(n_tokens):
    """Tokens/s sampling n_tokens from an S-sized model with the KV cache, as ``baby generate`` runs it (the numba
    decode kernel when numba works) and on the NumPy fast path, or a note saying why it was skipped."""
    try:
        from littlebaby.sampling import make_stepper, sample_ids
    except ImportError as e:
        return f"skipped: {e}"
    cfg = Config(vocab_size=VOCAB, dtype="float32", **CONFIGS["S"])
    gpt = GPT(cfg, seed=0)

    def tokens_per_second(**options):
        make_stepper(gpt, **options)  # a kernel compiles (or loads from its cache) here, outside the timing
        rates = []
        for _ in range(3):
            start = time.perf_counter()
            produced = sum(1 for _ in sample_ids(gpt, [0], n_tokens, rng=np.random.default_rng(0), use_cache=True,
                                                 **options))
            rates.append(produced / (time.perf_counter() - start))
        return statistics.median(rates)

    default = tokens_per_second()
    numpy_path = tokens_per_second(kernels="numpy")
    # one token at a time the products are tiny; BLAS threads cost more to wake than they save
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        single = tokens_per_second(kernels="numpy")
    decode = make_stepper(gpt, use_cache=True).make_decode.__name__
    return (f"{default:,.0f} tokens/s with {decode}; the NumPy path {numpy_path:,.0f} tokens/s, {single:,.0f} "
            f"with a one-thread BLAS (median of 3 runs of {n_tokens} tokens each, S-sized model)")


PREPARE_CORPUS = """
import sys, time
from littlebaby.data import encode_to_file, read_text
from littlebaby.tokenizers import train_tokenizer

def peak_rss_mb():  # VmHWM: this process's own high-water mark (ru_maxrss would include the parent's at fork)
    with open("/proc/self/status", encoding="utf-8") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024

before = peak_rss_mb()
start = time.perf_counter()
tokenizer = train_tokenizer("char", read_text(sys.argv[1]))
n_tokens = encode_to_file(sys.argv[1], tokenizer, sys.argv[2])
print(n_tokens, time.perf_counter() - start, before, peak_rss_mb())
"""


def bench_corpus(megabytes):
    """Peak RSS to prepare a generated text file of `megabytes` MB as ``baby train`` does (learn the character
    vocabulary from the text, then encode it to token ids on disk), in a fresh Python process so that nothing
    this process allocated before counts."""
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,;:!?'-\n", dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        text_path = pathlib.Path(tmp) / "corpus.txt"
        with open(text_path, "wb") as f:
            for _ in range(megabytes):
                f.write(alphabet[rng.integers(0, alphabet.size, 1 << 20)].tobytes())  # 1 MiB of ASCII
        done = subprocess.run([sys.executable, "-c", PREPARE_CORPUS, str(text_path), str(pathlib.Path(tmp) / "ids")],
                              capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        return f"skipped: preparing the corpus failed: {done.stderr.strip().splitlines()[-1:]}"
    n_tokens, seconds, before, peak = done.stdout.split()
    return (f"peak RSS {float(peak):,.0f} MB for the whole process ({float(before):,.0f} MB after its imports), "
            f"{int(n_tokens):,} tokens in {float(seconds):.1f} s")


# --- the commands users run, end to end ---------------------------------------------------------------------

def run_timed(command, terminal):
    """Wall seconds of a command; with ``terminal`` its stderr is a pseudo-terminal (a progress bar draws, as
    for a user at a terminal), read and dropped as it comes."""
    if not terminal:
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    import pty
    import threading
    master, slave = pty.openpty()
    reader = threading.Thread(target=lambda: _drain(master), daemon=True)
    reader.start()
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=slave)
    seconds = time.perf_counter() - start
    os.close(slave)
    reader.join(timeout=5)
    return seconds


def _drain(fd):
    try:
        while os.read(fd, 65536):
            pass
    except OSError:   # the other end closed
        pass
    finally:
        os.close(fd)


def bench_cli(name, data, short=40, long=240, repeats=3):
    """Seconds per step of the commands themselves: ``baby train`` with no option but the config's shape (evals
    only at its start and end, no completion or quality sample) against benchmarks/torch_loop.py, nanoGPT's loop
    for PyTorch, on the same text and shapes. Each runs for ``short`` and for ``long`` steps; (t_long - t_short)
    / (long - short) leaves out what does not grow with the steps (start-up, encoding the text, the two evals,
    writing the files). Each command runs once untimed first (numba's cache, the text's encoding and the page
    cache are then warm for every timed run), then the two take turns, ``repeats`` times at each length, and
    the medians are compared: a single pair of runs on a shared machine can even give a negative difference."""
    shape = CONFIGS[name]
    flags = ["--n-ctx", shape["n_ctx"], "--n-emb", shape["n_emb"], "--head-size", shape["head_size"],
             "--n-heads", shape["n_heads"], "--n-layers", shape["n_layers"], "--batch-size", shape["batch_size"],
             "--dropout", shape["dropout"], "--lr", LR, "--completion-tokens", 0, "--quality-tokens", 0]
    with tempfile.TemporaryDirectory() as out:
        def baby(steps):
            return [sys.executable, "-m", "littlebaby", "train", "--data", str(data), "--steps", str(steps),
                    "--eval-every", str(steps), "--out", out, *map(str, flags)]

        def torch_loop(steps):
            return [sys.executable, str(ROOT / "benchmarks" / "torch_loop.py"), "--data", str(data),
                    "--config", name, "--steps", str(steps)]

        contestants = (("littlebaby", baby, True), ("torch", torch_loop, False))
        for _, command, terminal in contestants:
            run_timed(command(short), terminal)
        times = {(who, n): [] for who, _, _ in contestants for n in (short, long)}
        for _ in range(repeats):
            for n in (short, long):
                for who, command, terminal in contestants:
                    times[who, n].append(run_timed(command(n), terminal))
    return {who: (statistics.median(times[who, long]) - statistics.median(times[who, short])) / (long - short)
            for who, _, _ in contestants}


# --- the table -----------------------------------------------------------------------------------------------

def format_table(results, ceiling):
    head = (f"| config | littlebaby runs on | littlebaby ms/step | torch ms/step | littlebaby tok/s | torch tok/s | ratio | "
            f"GFLOP/s | of ceiling | peak RSS ours / torch (MB) |")
    rule = "|" + "|".join("---" for _ in range(10)) + "|"
    rows = [head, rule]
    for r in results:
        gflops = r.flops_per_token * r.tokens / r.ours_s / 1e9
        rows.append(f"| {r.name} | {r.variant} | {r.ours_s * 1e3:.1f} | {r.torch_s * 1e3:.1f} | {r.tokens / r.ours_s:,.0f} | "
                    f"{r.tokens / r.torch_s:,.0f} | {r.torch_s / r.ours_s:.2f}x | {gflops:.1f} | "
                    f"{gflops / ceiling:.0%} | {r.ours_rss_mb:,.0f} / {r.torch_rss_mb:,.0f} |")
    return "\n".join(rows)


def format_cli(args, results):
    """The end-to-end rows: per-step seconds of ``baby train`` and of nanoGPT's loop, and how far the command's
    step is from the core step measured above (the issue allows 10%)."""
    if not pathlib.Path(args.cli_data).is_file():
        return f"end-to-end rows skipped: no text at {args.cli_data} (--cli-data FILE)"
    core = {r.name: r.ours_s for r in results if r.variant.startswith("default")}
    rows = ["| config | `baby train` ms/step | nanoGPT loop (PyTorch) ms/step | ratio | core step ms | command / core |",
            "|---|---|---|---|---|---|"]
    for name in args.names:
        if name == "L":
            continue   # 100 L steps take tens of minutes; the core step above stands for it
        per_step = bench_cli(name, args.cli_data)
        ours, theirs = per_step["littlebaby"], per_step["torch"]
        versus = f"{ours / core[name]:.2f}" if name in core else "-"
        core_ms = f"{core[name] * 1e3:.1f}" if name in core else "-"
        rows.append(f"| {name} | {ours * 1e3:.1f} | {theirs * 1e3:.1f} | {theirs / ours:.2f}x | {core_ms} | {versus} |")
    return "\n".join(["end to end, as commands (200 steps: the median of 3 240-step runs minus that of 3 "
                      "40-step runs; evals off):", "", *rows, ""])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="S,M,L", help="comma-separated subset of S, M, L (default all)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model and config (default 20)")
    parser.add_argument("--l-steps", type=int, default=5, help="timed steps for L, ~10 s each (default 5)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps per model first, at most 2 for L (default 3)")
    parser.add_argument("--variants", default="default,numpy",
                        help="comma-separated littlebaby variants: default (what `baby train` runs), numpy (the "
                             "NumPy layers in one process), mpiK (K MPI ranks of one BLAS thread each; needs the "
                             "mpi extra); default: default,numpy")
    parser.add_argument("--gap", type=float, default=0.3,
                        help="seconds of idle before each timed step, so neither library's spinning threads "
                             "steal the other's cores (default 0.3)")
    parser.add_argument("--gen-tokens", type=int, default=500, help="tokens to generate (default 500)")
    parser.add_argument("--corpus-mb", type=int, default=100, help="size of the generated corpus (default 100)")
    parser.add_argument("--skip-generate", action="store_true", help="skip the generation benchmark")
    parser.add_argument("--skip-corpus", action="store_true", help="skip the corpus preparation benchmark")
    parser.add_argument("--cli-data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"),
                        help="the text the end-to-end rows train on (default ../shared/data/tinyshakespeare.txt)")
    parser.add_argument("--skip-cli", action="store_true", help="skip the end-to-end rows (baby train against "
                        "PyTorch in nanoGPT's loop, as commands)")
    parser.add_argument("--hold-to-avx2", action="store_true",
                        help="on an AVX-512 CPU, run everything (NumPy, OpenBLAS, numba, PyTorch, and the commands "
                             "the end-to-end rows start) with AVX2 at most: an emulation of an AVX2 CPU's "
                             "instructions, not of its caches or clock")
    args = parser.parse_args(argv)
    names = [n.strip().upper() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        parser.error(f"--configs takes a subset of {', '.join(CONFIGS)}, got {args.configs!r}")
    if min(args.steps, args.l_steps, args.warmup) < 1:
        parser.error("--steps, --l-steps and --warmup must be at least 1")
    args.names = names
    args.variants = [w.strip().lower() for w in args.variants.split(",") if w.strip()]
    if not args.variants or not all(v in ("default", "numpy") or (v.startswith("mpi") and v[3:].isdigit() and
                                                                   int(v[3:]) >= 1) for v in args.variants):
        parser.error(f"--variants takes default, numpy or mpiK (K MPI ranks), got {args.variants!r}")
    return args


# What holds each library to AVX2 on an AVX-512 CPU; each is read when the library loads, so they are set
# before this script starts again (``--hold-to-avx2``), and the commands it starts inherit them.
HOLD_TO_AVX2 = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",   # NumPy 2.4's names for its AVX-512 loops
    "OPENBLAS_CORETYPE": "Haswell",                              # OpenBLAS's AVX2 kernels
    "NUMBA_CPU_NAME": "znver1",                                  # numba compiles for Zen 1 (AVX2 and FMA)
    "NUMBA_CACHE_DIR": str(pathlib.Path(tempfile.gettempdir()) / "littlebaby-avx2-numba-cache"),
    "ATEN_CPU_CAPABILITY": "avx2",                               # PyTorch's own kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",                                # and oneDNN's
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def main(argv=None):
    args = parse_args(argv)
    if args.hold_to_avx2 and os.environ.get("LITTLEBABY_HELD_TO_AVX2") != "1":
        env = {**os.environ, **HOLD_TO_AVX2, "LITTLEBABY_HELD_TO_AVX2": "1"}
        os.execve(sys.executable, [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)], env)
    import torch
    from littlebaby.report import cpu_description
    print(f"CPU: {cpu_description()}, {os.cpu_count()} CPUs")
    if os.environ.get("LITTLEBABY_HELD_TO_AVX2") == "1":
        print(f"held to AVX2: {' '.join(f'{k}={v}' for k, v in HOLD_TO_AVX2.items() if k != 'NUMBA_CACHE_DIR')}; "
              f"PyTorch's capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; default = {default_label()}")
    # the ceiling is re-measured before each config and the best kept: a busy moment can only lower it
    ceiling = matmul_ceiling_gflops()
    if not mpi_available() and any(v.startswith("mpi") for v in args.variants):
        print("skipping the MPI variants: they need mpi4py and mpiexec (pip install -e \".[mpi]\")")
        args.variants = [v for v in args.variants if not v.startswith("mpi")]
    results = []
    for name in args.names:
        ceiling = max(ceiling, matmul_ceiling_gflops())
        steps, warmup = (args.l_steps, min(args.warmup, 2)) if name == "L" else (args.steps, args.warmup)
        config_results, notes = bench_config(name, steps, warmup, args.gap, args.variants)
        results += config_results
        print(f"  {name}: done ({steps} timed steps each)" + "".join(f"; {note}" for note in notes), flush=True)
    ceiling = max(ceiling, matmul_ceiling_gflops())
    print(f"float32 matmul ceiling (2048^3 np.matmul, best of 7, at the start, before each config and at "
          f"the end): {ceiling:.1f} GFLOP/s")
    print()
    print(format_table(results, ceiling))
    if any(v.startswith("mpi") for v in args.variants):
        print("(MPI ranks' peak RSS: the sum of the ranks' own peaks; mpiexec and its proxy not counted)")
    print()
    if not args.skip_cli:
        print(format_cli(args, results))
    if not args.skip_generate:
        print(f"generation, {args.gen_tokens} tokens: {bench_generate(args.gen_tokens)}")
    if not args.skip_corpus:
        print(f"corpus preparation, {args.corpus_mb} MB: {bench_corpus(args.corpus_mb)}")


if __name__ == "__main__":
    main()
