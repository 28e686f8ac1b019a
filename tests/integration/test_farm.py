"""The build farm (issue 15): three builder hosts and a registry host, each in its own network
namespace, sharing one build cache. The scenario and its checks are ``farm.py`` (a script that
also runs on its own); this runs it and shows its report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the farm needs root (network namespaces)"),
    pytest.mark.skipif(shutil.which("docker-registry") is None,
                       reason="docker-registry is not installed"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("nsenter") is None,
                       reason="iproute2 and util-linux (ip, nsenter) are needed"),
]


def test_build_farm_shares_one_cache() -> None:
    done = subprocess.run([sys.executable, str(HERE / "farm.py")], capture_output=True,
                          text=True, timeout=1500)
    report = done.stdout + done.stderr
    print(report)
    assert done.returncode != 77, report
    assert done.returncode == 0, report
    assert "FAIL" not in report
    assert report.count("ok   ") == 25
