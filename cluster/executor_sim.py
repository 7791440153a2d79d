#!/usr/bin/env python3
"""Stand-in for Argo's executor (argoexec's ``wait`` container) on kwok's simulated pods.

kwok plays the kubelet, but nothing runs inside its pods, so no ``wait`` container ever reports a
step's outputs, and the real workflow-controller waits forever for a template's declared output
parameters ("required outputs are not yet set"). This process does what argoexec does at the end
of a pod: it creates the pod's ``WorkflowTaskResult`` (name = node id, label
``report-outputs-completed=true``) with the main container's exit code and a value for each output
parameter the template (env ``ARGO_TEMPLATE`` of the init container) declares. Only pods on kwok's
nodes: a real node (cluster/node.sh) next to them runs argoexec, which reports for itself. The value comes from
the pod annotation ``c2d.test/output-<name>``, else the parameter's ``valueFrom.default``, else "".

Standard library only; started by cluster.sh (component "executor-sim"). Env: KUBE_APISERVER_URL,
KUBE_TOKEN_FILE, KUBE_CA_FILE, EXECSIM_PORT (health endpoint on 127.0.0.1).
"""

from __future__ import annotations

import http.server
import json
import os
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

API = os.environ["KUBE_APISERVER_URL"]
TOKEN = open(os.environ["KUBE_TOKEN_FILE"]).read().strip()  # noqa: SIM115
CONTEXT = ssl.create_default_context(cafile=os.environ["KUBE_CA_FILE"])
SELECTOR = "workflows.argoproj.io/workflow"
KWOK_NODE_PREFIX = "kwok-node-"  # cluster.sh's fake nodes; a real node's pods report through argoexec
reported: set[str] = set()


def call(method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(API + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    request.add_header("Content-Type", "application/json")
    return urllib.request.urlopen(request, context=CONTEXT, timeout=timeout)


def outputs(pod: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = {}
    for container in pod["spec"].get("initContainers", []):
        for env in container.get("env", []):
            if env["name"] == "ARGO_TEMPLATE":
                template = json.loads(env["value"])
    annotations = pod["metadata"].get("annotations") or {}
    parameters = []
    for parameter in (template.get("outputs") or {}).get("parameters") or []:
        name = parameter["name"]
        default = (parameter.get("valueFrom") or {}).get("default", "")
        parameters.append({"name": name, "value": annotations.get(f"c2d.test/output-{name}", default)})
    code = "0"
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status["name"] == "main" and "terminated" in (status.get("state") or {}):
            code = str(status["state"]["terminated"]["exitCode"])
    result: dict[str, Any] = {"exitCode": code}
    if parameters:
        result["parameters"] = parameters
    return result


def report(pod: dict[str, Any]) -> None:
    meta = pod["metadata"]
    if meta["uid"] in reported or (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
        return
    if not str((pod.get("spec") or {}).get("nodeName") or "").startswith(KWOK_NODE_PREFIX):
        return
    node_id = (meta.get("annotations") or {}).get("workflows.argoproj.io/node-id")
    if not node_id:
        return
    body = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTaskResult",
        "metadata": {
            "name": node_id,
            "namespace": meta["namespace"],
            "labels": {SELECTOR: meta["labels"][SELECTOR], "workflows.argoproj.io/report-outputs-completed": "true"},
            "ownerReferences": meta.get("ownerReferences") or [],
        },
        "outputs": outputs(pod),
    }
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{meta['namespace']}/workflowtaskresults"
    try:
        call("POST", path, body).close()
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            print(f"executor-sim: {meta['name']}: HTTP {exc.code} {exc.read()[:200]!r}", file=sys.stderr, flush=True)
            return
    reported.add(meta["uid"])


def run() -> None:
    query = urllib.parse.urlencode({"labelSelector": SELECTOR})
    while True:
        try:
            with call("GET", f"/api/v1/pods?{query}") as response:
                listing = json.load(response)
            for pod in listing["items"]:
                report(pod)
            version = listing["metadata"]["resourceVersion"]
            watch = urllib.parse.urlencode(
                {"labelSelector": SELECTOR, "watch": "1", "resourceVersion": version, "timeoutSeconds": "300"}
            )
            with call("GET", f"/api/v1/pods?{watch}", timeout=330) as stream:
                for line in stream:
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        report(event["object"])
        except (OSError, ValueError, KeyError) as exc:
            print(f"executor-sim: {exc!r}; listing again", file=sys.stderr, flush=True)
            time.sleep(1)


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["EXECSIM_PORT"])), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    run()
