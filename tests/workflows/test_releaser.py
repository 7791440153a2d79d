"""The watcher's releaser when the cluster refuses every release (a Role without ``delete`` on Secrets): each
Workflow waits with its finalizer and is tried again, and the log gets one warning a minute, not one per
Workflow and retry. (Releases against a real apiserver: tests/e2e/test_argo_engine.py.)"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from workflows.argo.objects import FINALIZER
from workflows.argo.release import Releaser
from workflows.metrics import ARGO_ERRORS, EngineMetrics

from .kube_loopback import QuietHandler, loopback_client

WORKFLOWS = 10


class _Refuses(QuietHandler):
    def do_DELETE(self) -> None:
        body = json.dumps({"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_refused_releases_wait_and_are_warned_about_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = EngineMetrics("argo", ARGO_ERRORS)
    with loopback_client(_Refuses, tmp_path) as kube:
        releaser = Releaser(kube, metrics)
        for n in range(WORKFLOWS):
            releaser.offer({"metadata": {"name": f"c2d-job{n}", "finalizers": [FINALIZER], "resourceVersion": "1"}})
        with caplog.at_level(logging.DEBUG, logger="workflows.argo.release"):
            assert releaser.release_due() == 0
            time.sleep(1.1)  # the first retry is due after 1 s
            assert releaser.release_due() == 0
    assert releaser.waiting == WORKFLOWS
    errors = metrics.registry.get_sample_value("c2d_engine_errors_total", {"engine": "argo", "kind": "release"})
    assert errors == 2 * WORKFLOWS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{WORKFLOWS} workflow release(s) failed"), warnings
    assert "403" in warnings[0] or "Forbidden" in warnings[0], warnings
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) >= 2 * WORKFLOWS  # each one still in the log
