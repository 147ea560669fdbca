"""`python -m bench [name ...]`: run the benchmarks (all by default) and print their tables."""

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
    for name in names or BENCHMARKS:
        print(f"\n== {name}")
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
