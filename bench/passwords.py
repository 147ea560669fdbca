"""How long a login spends in argon2id: the price of a password check, for users and for guessers."""

import statistics
import time

from shared.identity.passwords import hash_password, verify_password


def _timed(fn, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def run(repeat: int = 30) -> None:
    stored = hash_password("correct horse battery")
    rows = [
        ("hash (register)", _timed(lambda: hash_password("correct horse battery"), repeat)),
        ("verify, right password", _timed(lambda: verify_password(stored, "correct horse battery"), repeat)),
        ("verify, wrong password", _timed(lambda: verify_password(stored, "wrong password"), repeat)),
        ("verify, unknown user (dummy hash)", _timed(lambda: verify_password(None, "whatever"), repeat)),
    ]
    print(f"{'argon2id m=19456 t=2 p=1':<36}{'median ms':>10}{'p95 ms':>10}")
    for label, samples in rows:
        p95 = statistics.quantiles(samples, n=20)[-1]
        print(f"{label:<36}{statistics.median(samples):>10.1f}{p95:>10.1f}")
