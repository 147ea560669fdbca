"""`python -m bench [name ...]`: run the benchmarks (all by default) and print their tables."""

import subprocess
import sys

from bench import e2e, listing, one_pass, passwords, scheduler

BENCHMARKS = {
    "scheduler": scheduler.run,
    "passwords": passwords.run,
    "listing": listing.run,
    "pass": one_pass.run,
    "e2e": e2e.run,
}


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    selected = names or list(BENCHMARKS)
    if len(selected) > 1:
        # One process each: a benchmark points the settings (cached per process), the engine and Celery's
        # configuration at its own scratch servers, which the next one must not inherit.
        failed = [name for name in selected if subprocess.run([sys.executable, "-m", "bench", name]).returncode]
        return 1 if failed else 0
    print(f"\n== {selected[0]}", flush=True)
    BENCHMARKS[selected[0]]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
