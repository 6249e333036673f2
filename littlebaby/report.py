"""The training analysis (report_G.json), the loss curve (report_G.png) and the `baby runs` table."""

import io
import math
import os
import pathlib
import platform

import numpy as np

from littlebaby import builtin, checkpoint, device, parallel, quality
from littlebaby.errors import BabyError
from littlebaby.nn.backend import array_module
from littlebaby.files import atomic_write_bytes, atomic_write_json, read_json
from littlebaby.runs import RunPaths, load_record, run_ids


def environment(xp=np) -> dict:
    """What the speed figures depend on: NumPy and its BLAS, threads, CPU, Python, the device (array module
    xp's)."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = {k: blas.get(k) for k in ("name", "version", "openblas configuration") if blas.get(k)}
    except Exception:  # the layout of show_config differs across NumPy versions; the rest still matters
        blas = {}
    return {
        "numpy": np.__version__, "blas": blas, "python": platform.python_version(),
        "platform": platform.platform(), "cpu": cpu_name(), "simd": simd_flags(), "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                       if k in os.environ},
        "mpi_ranks": parallel.world().size,   # 1 unless trained under mpiexec / --workers
        "device": device.describe(xp),
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile",
              "asimd", "sve")   # x86 up to AVX-512 and AMX; asimd (NEON) and sve on ARM


def cpu_flags() -> set:
    """The CPU's feature flags as /proc/cpuinfo lists them (an empty set where there is no such file)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def simd_flags() -> list:
    """Which of the SIMD extensions that NumPy's and BLAS's speed depend on this CPU has, e.g. ["avx2", "fma"]."""
    flags = cpu_flags()
    return [flag for flag in SIMD_FLAGS if flag in flags]


def cpu_description() -> str:
    """The CPU in one line for speed figures: model name, family/model and SIMD, e.g.
    "AMD EPYC (family 23, model 1), SIMD sse4_2 avx avx2 fma, no AVX-512"."""
    family = model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key == "cpu family" and family is None:
                    family = line.split(":", 1)[1].strip()
                elif key == "model" and model is None:
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    where = f" (family {family}, model {model})" if family and model else ""
    simd = simd_flags()
    wide = "with AVX-512" if "avx512f" in simd else "no AVX-512"
    return f"{cpu_name()}{where}, SIMD {' '.join(simd) or 'unknown'}, {wide}"


QUALITY_CHARS = 100_000   # the quality figures read the first 100,000 characters of the validation split
QUALITY_BATCH = 32        # windows a batch of that pass


def text_bpc(gpt, tokens, tokenizer, batch=QUALITY_BATCH, loss=None) -> tuple[float, str]:
    """(bits per character the model needs for ``tokens``, their text): the tokens cut into windows of n_ctx
    predicted in evaluation mode (each window's first token is context only), as an arithmetic coder driven by
    the model would spend them. ``loss(x, y)``: the mean loss of a batch, ``gpt.loss`` unless given (a run
    passes its worker processes' ``Workers.loss``)."""
    T = gpt.config.n_ctx
    loss = gpt.loss if loss is None else loss
    n = max(1, (len(tokens) - 1) // T)                                # windows
    ids = np.asarray(tokens[:n * T + 1], dtype=np.int64)
    x, y = ids[:-1].reshape(n, T), ids[1:].reshape(n, T)              # (n, T) each: n windows of inputs, targets
    nats = sum(float(loss(x[i:i + batch], y[i:i + batch])) * len(x[i:i + batch]) * T
               for i in range(0, n, batch))
    text = tokenizer.decode([int(t) for t in y.ravel()])
    return nats / math.log(2) / max(len(text), 1), text


def measure_quality(gpt, tokenizer, val_tokens, completion, train_text, loss=None) -> dict:
    """littlebaby.quality's figures of a finished run: the model on the validation split's first QUALITY_CHARS
    characters beside the compressors (``text_bpc`` with ``loss``), the sample's words and speaker
    lines against the training text."""
    head = [int(t) for t in val_tokens[:10_000]]                      # tokens per character, from a sample
    limit = round(QUALITY_CHARS * len(head) / max(len(tokenizer.decode(head)), 1))
    model_bpc, val_text = text_bpc(gpt, val_tokens[:limit + 1], tokenizer, loss=loss)
    return quality.figures(model_bpc, val_text, completion, train_text)


def build_report(record, state, tokenizer_kind, status, quality_figures=None) -> dict:
    """Every figure of run ``record`` so far, from the TrainingState the loop leaves behind, and the quality
    figures of a finished run (``measure_quality``)."""
    hist, cfg, plan = state.history, state.gpt.config, state.plan
    steps = state.optimizer.step_count
    tokens_per_step = cfg.batch_size * cfg.n_ctx
    step_times = hist["step_time"]
    mean_step = float(np.mean(step_times)) if step_times else float("nan")
    tokens_per_s = tokens_per_step / mean_step if step_times else 0.0
    last = hist["evals"][-1] if hist["evals"] else {}
    return {
        "guid": record.guid, "kind": record.kind, "parent": record.parent, "status": status,
        "steps": steps, "planned_steps": plan.steps, "epochs": steps / plan.steps_per_epoch,
        "tokens_seen": steps * tokens_per_step, "train_tokens": int(state.data.n_train),
        "val_tokens": int(len(state.data.val)),
        "final_train_loss": last.get("train_loss"), "final_val_loss": last.get("val_loss"),
        "final_val_bpc": last.get("val_bpc"), "evals": hist["evals"],
        "tokenizer": tokenizer_kind, "tokens_per_char": state.tokens_per_char,
        "loss_units": "losses are nats per token; val_bpc = val_loss / ln 2 * tokens_per_char, bits per character",
        "loss": hist["loss"], "grad_norm": hist["grad_norm"], "lr": hist["lr"], "step_time": step_times,
        "mean_step_time_s": mean_step, "tokens_per_s": tokens_per_s,
        "total_time_s": hist["train_seconds"], "num_params": state.gpt.num_params(),
        "flops_per_token": state.gpt.flops_per_token(),
        "achieved_gflops": state.gpt.flops_per_token() * tokens_per_s / 1e9,
        "environment": environment(array_module(state.gpt.params["wte"])),
        "quality": quality_figures,
    }


def plot_png(report) -> bytes:
    """The loss curve: per-step training loss (faint), eval train and val loss, against steps."""
    from matplotlib.figure import Figure   # a bare Figure draws with Agg and leaves pyplot's backend alone

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    ax.plot(range(1, len(report["loss"]) + 1), report["loss"], color="tab:blue", alpha=0.25, lw=0.8,
            label="train (batch)")
    evals = report["evals"]
    ax.plot([e["step"] for e in evals], [e["train_loss"] for e in evals], "o-", color="tab:blue", label="train")
    ax.plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o-", color="tab:orange", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title(f"run {report['guid']}")
    ax.grid(alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def save_report(report, json_path, png_path):
    atomic_write_json(json_path, report)
    atomic_write_bytes(png_path, plot_png(report))


def summary_lines(report, paths: RunPaths, resume_command: str) -> str:
    """What the user reads when training ends or stops; ``resume_command`` says how to go on if it stopped."""
    val = report["final_val_loss"]
    lines = [f"run {report['guid']}: {report['status']} after {report['steps']}/{report['planned_steps']} steps "
             f"({report['epochs']:.2f} epochs, {report['tokens_seen']:,} tokens) in {report['total_time_s']:.0f} s, "
             f"{report['tokens_per_s']:,.0f} tokens/s"
             + (f", val loss {val:.4f} ({report['final_val_bpc']:.3f} bits/char)" if val is not None else "")]
    lines += [f"  {p}" for p in (paths.config, paths.model, paths.tokenizer, paths.report_json, paths.report_png)]
    if report["status"] == "complete" and paths.completion.exists():   # none with completion_tokens 0
        lines.append(f"  {paths.completion}")
    if report.get("quality"):
        lines.append(quality.describe(report["quality"])[-1])
    else:
        lines.append(f"resume with: {resume_command}")
    return "\n".join(lines)


def runs_table(out) -> str:
    """One line per run: GUID, date, config summary, steps, final val loss, quality score; then the pretrained
    baby that ships with littlebaby, as a built-in."""
    rows = [("GUID", "DATE (UTC)", "CONFIG", "STEPS", "VAL LOSS", "QUALITY")]
    rows += [run_row(out, guid, guid) for guid in run_ids(out)]
    mine = len(rows) - 1
    try:
        with builtin.shipped_files():   # its weights' header against the file's length, and its tokenizer
            shipped = RunPaths(builtin.folder(), builtin.guid())
            checkpoint.check_file(shipped.model)
            if not shipped.tokenizer.is_file():
                raise BabyError(f"file not found: {shipped.tokenizer}")
            rows.append(run_row(builtin.folder(), builtin.guid(), builtin.NAME, "built-in, "))
    except BabyError:
        rows.append((builtin.NAME, "-", "built-in, missing or damaged: `baby info pretrained` says why", "-", "-",
                     "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
    return table if mine else f"no runs in {out}; the built-in one:\n{table}"


def run_row(out, guid, name, note="") -> tuple:
    """The `baby runs` row of run ``guid`` under ``out``, named ``name``."""
    record = load_record(out, guid)
    m = record.model
    summary = (note + f"{record.tokenizer.get('kind', '?')} V={m['vocab_size']} ctx={m['n_ctx']} emb={m['n_emb']} "
               f"L={m['n_layers']} H={m['n_heads']}" + (f" from {record.parent[:8]}" if record.parent else "")
               + (f" imported from {record.source.get('guid', '?')[:8]}" if record.source else "")
               + (f" age {record.age.get('name')}" if record.age else ""))
    report_path = RunPaths(pathlib.Path(out), guid).report_json
    steps, val, score = "-", "-", "-"
    if report_path.exists():
        rep = read_json(report_path, "report")
        steps = f"{rep['steps']}/{rep['planned_steps']}"
        if rep.get("final_val_loss") is not None and math.isfinite(rep["final_val_loss"]):
            val = f"{rep['final_val_loss']:.4f}"
        if rep.get("quality"):
            score = f"{rep['quality']['score']:.1f}"
    return (name, record.created[:19].replace("T", " "), summary, steps, val, score)


def import_summary(run, out_flag: str) -> str:
    """What ``baby import`` prints: where the run came from, its files, what to do next."""
    source = run.record.source
    lines = [f"imported run {source['guid']} of the original ({source['version']}) as run {run.guid}",
             *(f"  {p}" for p in (run.paths.config, run.paths.model, run.paths.tokenizer)),
             f"next: baby generate {run.guid[:8]}{out_flag} --prompt \"...\"   or   baby finetune {run.guid[:8]}"
             f"{out_flag} --data FILE"]
    return "\n".join(lines)


def params_by_component(config) -> dict:
    """Parameter count per component: embeddings, each block's parts summed over blocks, final norm, head."""
    from littlebaby.model import param_shapes
    counts = {}
    for name, shape in param_shapes(config).items():
        parts = name.split(".")
        component = {"wte": "token embedding (wte)", "wpe": "position embedding (wpe)"}.get(name) or (
            f"blocks: {parts[2]} (x{config.n_layers})" if parts[0] == "blocks" else parts[0])
        counts[component] = counts.get(component, 0) + math.prod(shape)
    return counts


def info_text(run) -> str:
    """``baby info RUN``: the config, parameters by component, FLOPs per token and the losses of a loaded run."""
    gpt, record = run.gpt, run.record
    sizes = (f" ({record.data['chars']:,} characters, {record.data.get('tokens', 0):,} tokens)"
             if "chars" in record.data else "")
    lines = [f"run {run.guid} ({record.kind}{', from ' + record.parent if record.parent else ''}), "
             f"created {record.created[:19].replace('T', ' ')} UTC"]
    if record.source:
        lines.append(f"source: run {record.source.get('guid')} of the original The Little Baby notebook "
                     f"({record.source.get('version')}), {record.source.get('path')}")
    if run.builtin:
        lines.append(f"the pretrained baby that ships with littlebaby ({run.paths.out})")
    if record.command:
        lines.append(f"command: {record.command} (seed {record.seed})")
    if record.age:   # a hand-edited record may lack parts: say what is there
        overridden = record.age.get("overridden")
        won = "; ".join(f"{key} {v.get('used')} won over the preset's {v.get('preset')}"
                        for key, v in (overridden if isinstance(overridden, dict) else {}).items()
                        if isinstance(v, dict))
        lines.append(f"age: {record.age.get('name')}, {record.age.get('title')}" + (f" ({won})" if won else ""))
    lines += [f"data: {record.data.get('source')}{sizes}; tokenizer: {record.tokenizer.get('kind')} "
              f"V={gpt.config.vocab_size}", "", "model:"]
    lines += [f"  {key:<15} {value}" for key, value in gpt.config.to_dict().items()]
    lines += ["", "parameters:"]
    counts = params_by_component(gpt.config)
    width = max(len(c) for c in counts)
    lines += [f"  {component:<{width}}  {count:>12,}" for component, count in counts.items()]
    lines += [f"  {'total':<{width}}  {gpt.num_params():>12,}", "",
              f"training FLOPs per token: {gpt.flops_per_token():,} (6 per matmul weight + attention's 12 L T H)"]
    if run.paths.report_json.exists():
        rep = run.report
        lines += [f"steps: {rep['steps']}/{rep['planned_steps']} ({rep['status']}), {rep['tokens_seen']:,} tokens, "
                  f"{rep['tokens_per_s']:,.0f} tokens/s"]
        lines += [f"  step {e['step']:>6}: train {e['train_loss']:.4f}  val {e['val_loss']:.4f}"
                  + (f" ({e['val_bpc']:.3f} bits/char)" if e.get("val_bpc") is not None else "")
                  for e in rep["evals"]]
        if rep.get("quality"):
            lines += ["", "quality:"] + [f"  {line}" for line in quality.describe(rep["quality"])]
    return "\n".join(lines)
