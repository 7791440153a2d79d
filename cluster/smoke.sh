#!/usr/bin/env bash
# Smoke test for the cluster started by cluster/cluster.sh up (real Argo controller + kwok pods).
#   a) 3-step DAG fetch -> algo -> publish: Succeeded, three Pod nodes Succeeded, in order
#   b) same DAG, algo annotated c2d.test/exit-code=3: workflow Failed, algo Failed,
#      algo outputs.exitCode "3", publish never ran
#   c) long-running workflow submitted via the Argo Server REST API, terminated with
#      PUT /api/v1/workflows/<ns>/<name>/terminate: ends Failed
#   d) same with PUT .../stop: ends Failed
#   e) template activeDeadlineSeconds=2 on a long step: node Failed after ~2s (kwok pod-deadline)
#   plus GET /api/v1/workflows/<ns> answers and lists the workflows.
# Exit 0 when every check passes. Env: CLUSTER_DIR, ARGO_SERVER_PORT as for cluster.sh;
# SMOKE_TIMEOUT (s per workflow, default 120); KEEP=1 keeps the workflows afterwards.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CLUSTER_DIR="${CLUSTER_DIR:-$REPO/.cache/cluster/run}"
ARGO_SERVER_PORT="${ARGO_SERVER_PORT:-2746}"
NS="${ARGO_NAMESPACE:-argo}"
API="http://127.0.0.1:$ARGO_SERVER_PORT/api/v1"
TIMEOUT="${SMOKE_TIMEOUT:-120}"
export KUBECONFIG="$CLUSTER_DIR/admin.kubeconfig"
RUN_ID="$(date +%s)"

PASS=0; FAILN=0; CREATED=()
ok()   { echo "  ok   - $*"; PASS=$((PASS + 1)); }
bad()  { echo "  FAIL - $*"; FAILN=$((FAILN + 1)); }
check() { local desc="$1"; shift; if "$@"; then ok "$desc"; else bad "$desc"; fi; }

[[ -f "$KUBECONFIG" ]] || { echo "no kubeconfig at $KUBECONFIG: run cluster/cluster.sh up" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq is required" >&2; exit 1; }

wf_json() { kubectl -n "$NS" get workflow "$1" -o json; }

# wait_phase NAME PHASE... : waits until the workflow phase is one of PHASE; prints the phase
wait_phase() {
  local name="$1"; shift
  local t0=$SECONDS phase=""
  while (( SECONDS - t0 < TIMEOUT )); do
    phase="$(kubectl -n "$NS" get workflow "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    local p; for p in "$@"; do [[ "$phase" == "$p" ]] && { echo "$phase"; return 0; }; done
    sleep 0.5
  done
  echo "${phase:-<none>}"; return 1
}

# node_field WFJSON DISPLAYNAME JQFIELD
node_field() { jq -r --arg d "$2" "[.status.nodes[] | select(.displayName == \$d and .type == \"Pod\")][0] | $3 // empty" <<< "$1"; }

dag_yaml() { # NAME ALGO_ANNOTATIONS_YAML
  cat <<EOF
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: $1
  namespace: $NS
  labels: {c2d.test/smoke: "$RUN_ID"}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: fetch, template: fetch}
      - {name: algo, template: algo, depends: fetch}
      - {name: publish, template: publish, depends: algo}
  - name: fetch
    metadata: {annotations: {c2d.test/duration-ms: "500"}}
    container: {image: "c2d-test/fetch:1", command: [fetch]}
  - name: algo
    metadata: {annotations: {$2}}
    container: {image: "c2d-test/algo:1", command: [run-algo]}
  - name: publish
    container: {image: "c2d-test/publish:1", command: [publish]}
EOF
}

long_json() { # NAME EXTRA_TEMPLATE_JSON
  cat <<EOF
{"workflow": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
  "metadata": {"name": "$1", "namespace": "$NS", "labels": {"c2d.test/smoke": "$RUN_ID"}},
  "spec": {"entrypoint": "long", "templates": [{"name": "long",
     "metadata": {"annotations": {"c2d.test/duration-ms": "600000"}},
     "container": {"image": "c2d-test/long:1", "command": ["sleep"]} $2 }]}}}
EOF
}

rest_create() { # NAME EXTRA_TEMPLATE_JSON : POST a long-running workflow via the Argo Server
  curl -sf -X POST -H 'Content-Type: application/json' -d "$(long_json "$1" "$2")" "$API/workflows/$NS" \
    | jq -e --arg n "$1" '.metadata.name == $n' >/dev/null
}
rest_put() { # NAME ACTION(terminate|stop)
  curl -sf -X PUT -H 'Content-Type: application/json' -d "{\"name\":\"$1\",\"namespace\":\"$NS\"}" \
    "$API/workflows/$NS/$1/$2" | jq -e --arg n "$1" '.metadata.name == $n' >/dev/null
}

wait_node_running() { # NAME : until the pod node is Running
  local t0=$SECONDS
  while (( SECONDS - t0 < TIMEOUT )); do
    [[ "$(kubectl -n "$NS" get workflow "$1" -o json 2>/dev/null \
          | jq -r '[.status.nodes // {} | .[] | select(.type=="Pod") | .phase] | first // empty')" == Running ]] && return 0
    sleep 0.5
  done
  return 1
}

echo "== smoke test (namespace $NS, argo server $API)"

# ---- REST API reachable -------------------------------------------------------------------------
check "argo server GET /api/v1/version" bash -c "curl -sf '$API/version' | jq -e .version >/dev/null"
check "argo server GET /api/v1/workflows/$NS" bash -c "curl -sf '$API/workflows/$NS' | jq -e 'has(\"metadata\")' >/dev/null"

# ---- a) success DAG -------------------------------------------------------------------------------
A="smoke-ok-$RUN_ID"; CREATED+=("$A")
echo "-- a) DAG success: $A"
t0=$SECONDS
dag_yaml "$A" "" | kubectl create -f - >/dev/null
phase="$(wait_phase "$A" Succeeded Failed Error || true)"
check "a: workflow phase Succeeded (got $phase, $((SECONDS - t0))s)" test "$phase" = Succeeded
J="$(wf_json "$A")"
check "a: 3 Pod nodes, all Succeeded" test "$(jq '[.status.nodes[] | select(.type=="Pod" and .phase=="Succeeded")] | length' <<< "$J")" = 3
f_end="$(node_field "$J" fetch .finishedAt)"; a_start="$(node_field "$J" algo .startedAt)"
a_end="$(node_field "$J" algo .finishedAt)"; p_start="$(node_field "$J" publish .startedAt)"
check "a: order fetch($f_end) <= algo($a_start), algo($a_end) <= publish($p_start)" \
  bash -c "[[ -n '$f_end' && -n '$p_start' && ! '$a_start' < '$f_end' && ! '$p_start' < '$a_end' ]]"
check "a: algo outputs.exitCode 0" test "$(node_field "$J" algo .outputs.exitCode)" = 0

# ---- b) failing step ------------------------------------------------------------------------------
B="smoke-fail-$RUN_ID"; CREATED+=("$B")
echo "-- b) DAG with algo exit code 3: $B"
t0=$SECONDS
dag_yaml "$B" 'c2d.test/exit-code: "3"' | kubectl create -f - >/dev/null
phase="$(wait_phase "$B" Succeeded Failed Error || true)"
check "b: workflow phase Failed (got $phase, $((SECONDS - t0))s)" test "$phase" = Failed
J="$(wf_json "$B")"
check "b: fetch Succeeded" test "$(node_field "$J" fetch .phase)" = Succeeded
check "b: algo Failed" test "$(node_field "$J" algo .phase)" = Failed
check "b: algo outputs.exitCode \"3\" (got '$(node_field "$J" algo .outputs.exitCode)')" \
  test "$(node_field "$J" algo .outputs.exitCode)" = 3
echo "     algo message: $(node_field "$J" algo .message)"
check "b: publish did not run" bash -c "[[ -z '$(node_field "$J" publish .phase)' ]]"

# ---- c) terminate via REST ----------------------------------------------------------------------
C="smoke-term-$RUN_ID"; CREATED+=("$C")
echo "-- c) terminate via REST: $C"
check "c: POST /api/v1/workflows/$NS" rest_create "$C" ""
check "c: step Running" wait_node_running "$C"
check "c: PUT .../$C/terminate" rest_put "$C" terminate
t0=$SECONDS
phase="$(wait_phase "$C" Succeeded Failed Error || true)"
check "c: workflow phase Failed after terminate (got $phase, $((SECONDS - t0))s)" test "$phase" = Failed
echo "     message: $(curl -sf "$API/workflows/$NS/$C" | jq -r '.status.message')"

# ---- d) stop via REST -----------------------------------------------------------------------------
D="smoke-stop-$RUN_ID"; CREATED+=("$D")
echo "-- d) stop via REST: $D"
check "d: POST /api/v1/workflows/$NS" rest_create "$D" ""
check "d: step Running" wait_node_running "$D"
check "d: PUT .../$D/stop" rest_put "$D" stop
t0=$SECONDS
phase="$(wait_phase "$D" Succeeded Failed Error || true)"
check "d: workflow phase Failed after stop (got $phase, $((SECONDS - t0))s)" test "$phase" = Failed

# ---- e) template activeDeadlineSeconds -------------------------------------------------------------
E="smoke-deadline-$RUN_ID"; CREATED+=("$E")
echo "-- e) template activeDeadlineSeconds=2: $E"
t0=$SECONDS
check "e: POST /api/v1/workflows/$NS" rest_create "$E" ', "activeDeadlineSeconds": 2'
phase="$(wait_phase "$E" Succeeded Failed Error || true)"
check "e: workflow phase Failed (got $phase, $((SECONDS - t0))s)" test "$phase" = Failed
J="$(wf_json "$E")"
echo "     node message: $(node_field "$J" "$E" .message)"

# ---- listing ----------------------------------------------------------------------------------------
check "GET /api/v1/workflows/$NS lists the smoke workflows" bash -c \
  "curl -sf '$API/workflows/$NS?listOptions.labelSelector=c2d.test/smoke%3D$RUN_ID' | jq -e '(.items | length) == ${#CREATED[@]}' >/dev/null"

if [[ "${KEEP:-0}" != 1 ]]; then
  kubectl -n "$NS" delete workflow "${CREATED[@]}" --wait=false >/dev/null 2>&1 || true
fi
echo "== smoke: $PASS passed, $FAILN failed"
[[ $FAILN -eq 0 ]]
