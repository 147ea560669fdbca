"""The brief chaos run (`make chaos` runs the long one): it must end with no violation and nothing lost."""

import subprocess
import sys

from tests.conftest import ROOT


def test_brief_chaos_run_keeps_every_invariant():
    result = subprocess.run(
        [sys.executable, "-m", "tests.chaos.harness"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    report = result.stdout[result.stdout.find("chaos:") :]
    from tests.conftest import FIGURES

    FIGURES.extend(line for line in report.splitlines() if line.strip())
    assert result.returncode == 0, report + result.stderr[-2000:]
    assert "capacity violations: 0" in report and "lost deployments: 0" in report
    assert "duplicate runs: 0 " in report
    assert "unfinished: 0" in report
