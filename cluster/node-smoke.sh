#!/usr/bin/env bash
# Smoke test of the real node (cluster/node.sh) next to cluster/cluster.sh's control plane: in a namespace
# of its own with the "restricted" Pod Security Standard (as the project's namespace c2d), it runs
#   1. a pod that prints something (its output read back with `kubectl logs`),
#   2. a 2-step Argo Workflow (emissary executor from localhost/c2d-argoexec; step 1's output parameter
#      is read by argoexec's wait container and passed to step 2),
#   3. with NETPOL=1, a deny-all-egress NetworkPolicy check (kube-router --run-firewall),
# prints the timings and deletes the namespace. Exit 1 on the first failure (with the pod's state).
#
# Env: as cluster.sh / node.sh (CLUSTER_DIR, APISERVER_PORT, ...); SMOKE_IMAGE (default
# localhost/c2d-python:3.11 when the node has it, tools/images); SMOKE_NS (default c2d-node-smoke);
# TIMEOUT (seconds per wait, default 120). The control plane must run with EXECSIM=0 and
# ARGO_EXECUTOR_IMAGE=localhost/c2d-argoexec:v4.0.7 (see cluster/README.md "Real node").
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE_ROOT="${CACHE_ROOT:-$REPO/.cache}"
BIN_DIR="${BIN_DIR:-$CACHE_ROOT/cluster/bin}"
CLUSTER_DIR="${CLUSTER_DIR:-$CACHE_ROOT/cluster/run}"
KUBECONFIG_FILE="${KUBECONFIG_FILE:-$CLUSTER_DIR/admin.kubeconfig}"
NS="${SMOKE_NS:-c2d-node-smoke}"
IMAGE="${SMOKE_IMAGE:-localhost/c2d-python:3.11}"
# the real node carries the taint c2d.test/node=real:NoSchedule (node.sh): kwok's fake nodes may be next to it
SELECT='{c2d.test/node: real}'
TOLERATE='[{key: c2d.test/node, operator: Exists, effect: NoSchedule}]'
TIMEOUT="${TIMEOUT:-120}"
NETPOL="${NETPOL:-0}"

say()  { printf '[node-smoke %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { printf '[node-smoke %s] FAIL: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }
kc() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=15s "$@"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# run_pod NAME LABELS PYTHON: a pod on the real node (restricted securityContext) that runs PYTHON with the image's python3
run_pod() {
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $NS, labels: $2}
spec:
  restartPolicy: Never
  nodeSelector: $SELECT
  tolerations: $TOLERATE
  containers:
  - name: main
    image: $IMAGE
    imagePullPolicy: Never
    command: [python3, -c, $(python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$3")]
    $SEC
EOF
}

# wait_phase KIND NAME PHASE... : until .status.phase is one of PHASE (the first one = success)
wait_phase() {
  local kind="$1" name="$2"; shift 2
  local want="$1" t0=$SECONDS ph
  while :; do
    ph="$(kc -n "$NS" get "$kind" "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    [[ "$ph" == "$want" ]] && return 0
    local p; for p in "$@"; do [[ "$ph" == "$p" ]] && {
      kc -n "$NS" get "$kind" "$name" -o yaml | sed -n '/^status:/,$p' | head -60 >&2
      fail "$kind/$name ended $ph"; }; done
    if (( SECONDS - t0 > TIMEOUT )); then
      kc -n "$NS" get "$kind" "$name" -o yaml | sed -n '/^status:/,$p' | head -60 >&2 || true
      kc -n "$NS" get events --sort-by=.lastTimestamp | tail -15 >&2 || true
      fail "$kind/$name not $want after ${TIMEOUT}s (phase '$ph')"
    fi
    sleep 0.1
  done
}

kc get node -o wide >/dev/null || fail "apiserver not reachable with $KUBECONFIG_FILE"
[[ "$(kc get node -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}')" == *realnode* || -n "${NODE_NAME:-}" ]] \
  || say "warning: no node named realnode (NODE_NAME unset); pods go wherever the scheduler puts them"
ex="$(kc -n "${ARGO_NAMESPACE:-argo}" get configmap workflow-controller-configmap -o jsonpath='{.data.executor}' 2>/dev/null || true)"
grep -q '^image: ' <<< "$ex" || fail "the controller has no executor image (cluster.sh up with ARGO_EXECUTOR_IMAGE=localhost/c2d-argoexec:v4.0.7)"

say "namespace $NS (restricted PSS), executor RBAC; image $IMAGE"
kc delete namespace "$NS" --ignore-not-found --wait=true --timeout=60s >/dev/null
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: smoke-executor, namespace: $NS}
rules:
- apiGroups: [argoproj.io]
  resources: [workflowtaskresults]
  verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: smoke-executor, namespace: $NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: smoke-executor}
subjects:
- {kind: ServiceAccount, name: default, namespace: $NS}
EOF
t0=$SECONDS
until kc -n "$NS" get serviceaccount default >/dev/null 2>&1; do
  (( SECONDS - t0 > 60 )) && fail "serviceaccount $NS/default never appeared"; sleep 0.3
done

SEC='securityContext: {runAsNonRoot: true, runAsUser: 1000, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}'

# 1. a pod that prints something
t=$(now)
run_pod hello '{}' "print('hello from a real pod')"
wait_phase pod hello Succeeded Failed
POD_S="$(since "$t")"
out="$(kc -n "$NS" logs hello)"
[[ "$out" == "hello from a real pod" ]] || fail "pod log is '$out'"
say "pod: create -> Succeeded ${POD_S}s, kubectl logs: '$out'"

# 2. a 2-step workflow with an output parameter
t=$(now)
kc create -f - >/dev/null <<EOF
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: two-step, namespace: $NS}
spec:
  entrypoint: main
  nodeSelector: $SELECT
  tolerations: $TOLERATE
  securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
  templates:
  - name: main
    steps:
    - - name: produce
        template: produce
    - - name: consume
        template: consume
        arguments:
          parameters:
          - {name: msg, value: "{{steps.produce.outputs.parameters.msg}}"}
  - name: produce
    container:
      image: $IMAGE
      imagePullPolicy: Never
      command: [python3, -c]
      args: ["import pathlib; pathlib.Path('/tmp/msg').write_text('hello from step 1'); print('step 1 ran')"]
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    outputs:
      parameters:
      - name: msg
        valueFrom: {path: /tmp/msg}
  - name: consume
    inputs:
      parameters:
      - name: msg
    container:
      image: $IMAGE
      imagePullPolicy: Never
      command: [python3, -c]
      args: ["import sys; print('step 2 got:', sys.argv[1])", "{{inputs.parameters.msg}}"]
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
EOF
wait_phase workflow two-step Succeeded Failed Error
WF_S="$(since "$t")"
msg="$(kc -n "$NS" get workflow two-step -o jsonpath='{range .status.nodes.*}{.outputs.parameters[*].value}{" "}{end}')"
msg="$(echo $msg)"
[[ "$msg" == *"hello from step 1"* ]] || fail "step 1's output parameter is '$msg'"
say "workflow: create -> Succeeded ${WF_S}s (2 steps; output parameter '$msg')"

# 3. NetworkPolicy: deny-all egress for pods labelled egress=denied
if [[ "$NETPOL" == 1 ]]; then
  kc apply -f - >/dev/null <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: $NS}
spec:
  podSelector: {matchLabels: {egress: denied}}
  policyTypes: [Egress]
  egress: []
EOF
  probe_py="import socket, time
time.sleep(3)  # kube-router adds a new pod's firewall chain about 1 s after it starts
try:
    socket.create_connection(('10.96.0.1', 443), timeout=3); print('CONNECTED')
except OSError as e:
    print('BLOCKED', e)"
  for l in allowed denied; do
    run_pod "np-$l" "{egress: $l}" "$probe_py"
  done
  wait_phase pod np-allowed Succeeded Failed
  wait_phase pod np-denied Succeeded Failed
  a="$(kc -n "$NS" logs np-allowed)"; d="$(kc -n "$NS" logs np-denied)"
  [[ "$a" == CONNECTED ]] || fail "pod without policy could not reach the apiserver: $a"
  [[ "$d" == BLOCKED* ]] || fail "pod under deny-all egress reached the apiserver: $d"
  say "netpol: unlabelled pod '$a', egress=denied pod '$d'"
fi

kc delete namespace "$NS" --wait=false >/dev/null
say "ok: pod ${POD_S}s, workflow ${WF_S}s"
