"""checkov over what gets deployed (each rendered overlay) and the Dockerfile: no failed
check, and every skipped check is justified in k8s/checkov.yaml next to the skip."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.checkov import checkov_binary
from tests.deploy.conftest import DOCKER, K8S

CONFIG = K8S / "checkov.yaml"
SCAN_TIMEOUT_SECONDS = 600
INSECURE_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: insecure
  namespace: scan-check
spec:
  containers:
    - name: app
      image: busybox:1.36.1
      securityContext:
        privileged: true
"""


@pytest.fixture(scope="session")
def scan(rendered_text: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One checkov run over both overlays, the Dockerfile and a known-insecure pod."""
    out = tmp_path_factory.mktemp("checkov")
    files = []
    for overlay, text in rendered_text.items():
        path = out / f"{overlay}.yaml"
        path.write_text(text)
        files.append(path)
    insecure = out / "insecure.yaml"
    insecure.write_text(INSECURE_POD)
    argv = [checkov_binary(), "--config-file", str(CONFIG), "--skip-download", "-o", "json"]
    argv += ["--framework", "kubernetes", "dockerfile"]
    for path in [*files, insecure, DOCKER / "Dockerfile"]:
        argv += ["-f", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=SCAN_TIMEOUT_SECONDS)
    assert result.stdout.strip(), f"checkov printed no report:\n{result.stderr}"
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def failures(reports: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Failed check ids per scanned file name."""
    failed: dict[str, list[str]] = {}
    for report in reports:
        for check in report["results"]["failed_checks"]:
            failed.setdefault(Path(check["file_path"]).name, []).append(
                f"{check['check_id']} {check['resource']}"
            )
    return failed


def test_no_failed_check_on_the_overlays_and_the_dockerfile(scan: Any) -> None:
    kinds = {report["check_type"] for report in scan}
    assert kinds == {"kubernetes", "dockerfile"}
    passed = {report["check_type"]: report["summary"]["passed"] for report in scan}
    assert passed["kubernetes"] > 100 and passed["dockerfile"] > 10
    failed = failures(scan)
    failed.pop("insecure.yaml")
    assert failed == {}


def test_the_scan_fails_a_privileged_pod(scan: Any) -> None:
    failed = failures(scan)["insecure.yaml"]
    assert any(line.startswith("CKV_K8S_16 ") for line in failed), failed


def test_every_skipped_check_is_justified_next_to_its_skip() -> None:
    lines = CONFIG.read_text().splitlines()
    skips = [i for i, line in enumerate(lines) if re.match(r"\s*- CKV\w+", line)]
    assert skips
    for index in skips:
        above = lines[index - 1].strip()
        assert above.startswith("#") and len(above) > 20, f"unjustified skip: {lines[index]}"
