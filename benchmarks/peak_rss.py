"""A process's peak RSS: the kernel's high-water mark (VmHWM), which Linux lets a process reset. Used by
bench_train.py for its own process and its worker processes, and by each MPI rank of benchmarks/mpi_ranks.py
for its own."""


def reset_peak_rss(pid="self"):
    """Writing 5 to clear_refs resets VmHWM (Linux >= 4.0); elsewhere the peak is simply never reset."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb(pid="self"):
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status: peak RSS needs Linux")
