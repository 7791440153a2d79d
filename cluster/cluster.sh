#!/usr/bin/env bash
# Docker-free Kubernetes control plane + real Argo Workflows for tests.
#
#   cluster/cluster.sh up       start (idempotent; components already healthy are left alone)
#   cluster/cluster.sh down     stop everything this script started (idempotent)
#   cluster/cluster.sh status   one line per component (exit 1 when something is not healthy)
#   cluster/cluster.sh env      print shell exports (KUBECONFIG, ARGO_SERVER_URL, ...)
#   cluster/cluster.sh clean    down + delete $CLUSTER_DIR (etcd data, certs, logs)
#
# Components (host processes, 127.0.0.1 only, each in its own process group, pid files in
# $CLUSTER_DIR/pids, logs in $CLUSTER_DIR/logs):
#   etcd -> kube-apiserver -> kube-controller-manager -> kube-scheduler -> kwok (fake nodes and
#   pod lifecycle from cluster/stages.yaml) -> workflow-controller -> argo server
# Binaries come from cluster/build.sh ($BIN_DIR).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE_ROOT="${CACHE_ROOT:-$REPO/.cache}"
BIN_DIR="${BIN_DIR:-$CACHE_ROOT/cluster/bin}"
CRD_DIR="${CRD_DIR:-$CACHE_ROOT/cluster/crds}"
CLUSTER_DIR="${CLUSTER_DIR:-$CACHE_ROOT/cluster/run}"
STAGES_FILE="${STAGES_FILE:-$HERE/stages.yaml}"

# ---- ports (all bound to 127.0.0.1) -----------------------------------------------------------
ETCD_PORT="${ETCD_PORT:-12379}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-12380}"
APISERVER_PORT="${APISERVER_PORT:-16443}"
KCM_PORT="${KCM_PORT:-20257}"
SCHEDULER_PORT="${SCHEDULER_PORT:-20259}"
KWOK_PORT="${KWOK_PORT:-20247}"
ARGO_HEALTHZ_PORT="${ARGO_HEALTHZ_PORT:-16060}"
ARGO_METRICS_PORT="${ARGO_METRICS_PORT:-19090}"
ARGO_SERVER_PORT="${ARGO_SERVER_PORT:-2746}"
EXECSIM_PORT="${EXECSIM_PORT:-16061}"

# ---- knobs -------------------------------------------------------------------------------------
KWOK_NODES="${KWOK_NODES:-1}"                 # number of fake nodes (each: 1k cpu, 1Ti memory, 1Pi ephemeral storage, 1M pods; 0 with a real node)
ARGO_NAMESPACE="${ARGO_NAMESPACE:-argo}"
ARGO_CRDS="${ARGO_CRDS:-minimal}"              # minimal | full (full is applied server-side)
ARGO_NAMESPACED="${ARGO_NAMESPACED:-0}"        # 1: controller/server watch only $ARGO_NAMESPACE
ARGO_REQUEUE_TIME="${ARGO_REQUEUE_TIME:-1s}"   # controller requeue period (upstream 10s: each kwok step took 10s)
POD_CIDR="${POD_CIDR:-10.0.0.0/16}"            # fake pod IPs written into pod status (never dialled)
EXECSIM="${EXECSIM:-1}"                       # 0: no executor-sim (a real node runs argoexec: cluster/node.sh)
ARGO_EXECUTOR_IMAGE="${ARGO_EXECUTOR_IMAGE:-}" # set: the controller's executor image (IfNotPresent), e.g. localhost/c2d-argoexec:v4.0.7
START_TIMEOUT="${START_TIMEOUT:-90}"           # seconds per component
LOG_LEVEL="${LOG_LEVEL:-2}"                    # klog -v for k8s components

PIDS="$CLUSTER_DIR/pids"
LOGS="$CLUSTER_DIR/logs"
PKI="$CLUSTER_DIR/pki"
KUBECONFIG_FILE="$CLUSTER_DIR/admin.kubeconfig"
ARGO_SERVER_URL="http://127.0.0.1:$ARGO_SERVER_PORT"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok workflow-controller executor-sim argo-server)

LOG_TAG=cluster BUILD_HINT=cluster/build.sh
# shellcheck source=cluster/lib.sh
source "$HERE/lib.sh"   # say fail alive pid_of start_component stop_component

kc() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

binary_of() {
  case "$1" in
    argo-server) echo "$BIN_DIR/argo" ;;
    executor-sim) echo "$HERE/executor_sim.py" ;;
    *) echo "$BIN_DIR/$1" ;;
  esac
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- health probes (exit 0 when healthy) ------------------------------------------------------
TOKEN_FILE="$CLUSTER_DIR/admin.token"
probe() {
  local c="$1"
  case "$c" in
    etcd) curl -sf -m 3 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"' ;;
    kube-apiserver) curl -sf -m 3 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$TOKEN_FILE")" \
                      "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -qx ok ;;
    kube-controller-manager) curl -sfk -m 3 "https://127.0.0.1:$KCM_PORT/healthz" | grep -qx ok ;;
    kube-scheduler) curl -sfk -m 3 "https://127.0.0.1:$SCHEDULER_PORT/healthz" | grep -qx ok ;;
    kwok) curl -sfk -m 3 "https://127.0.0.1:$KWOK_PORT/healthz" | grep -qx ok ;;
    workflow-controller) curl -sf -m 3 -o /dev/null "http://127.0.0.1:$ARGO_HEALTHZ_PORT/healthz" ;;
    argo-server) curl -sf -m 3 "$ARGO_SERVER_URL/api/v1/version" | grep -q '"version"' ;;
    executor-sim) curl -sf -m 3 "http://127.0.0.1:$EXECSIM_PORT/" | grep -qx ok ;;
  esac
}

# start_listening NAME PORT [K=V...] -- CMD ARGS... : start_component, refusing a port another process holds
start_listening() {
  local name="$1" port="$2"; shift 2
  if [[ -z "$(pid_of "$name")" ]] && port_in_use "$port"; then
    fail "$name: port 127.0.0.1:$port is already in use by another process (set the port env var, see cluster/README.md)"
  fi
  start_component "$name" "$@"
}

# ---- one-time material: PKI, tokens, kubeconfig -----------------------------------------------
gen_pki() {
  mkdir -p "$PKI"
  [[ -s "$TOKEN_FILE" ]] || { openssl rand -hex 24 > "$TOKEN_FILE"; chmod 600 "$TOKEN_FILE"; }
  local token; token="$(cat "$TOKEN_FILE")"
  echo "$token,admin,admin-uid,system:masters" > "$PKI/tokens.csv"; chmod 600 "$PKI/tokens.csv"
  if [[ ! -s "$PKI/ca.crt" ]]; then
    say "generating PKI in $PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=c2d-test-ca" \
      -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
    # serving cert for kube-apiserver and kwok (kubelet-like server)
    cat > "$PKI/serving.ext" <<'EOF'
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=kube-apiserver" \
      -keyout "$PKI/serving.key" -out "$PKI/serving.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/serving.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$PKI/serving.ext" -out "$PKI/serving.crt" 2>/dev/null
    # client cert (system:masters) used by kube-apiserver to talk to kwok's kubelet endpoint
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > "$PKI/client.ext"
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/O=system:masters/CN=admin" \
      -keyout "$PKI/admin.key" -out "$PKI/admin.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/admin.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$PKI/client.ext" -out "$PKI/admin.crt" 2>/dev/null
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    chmod 600 "$PKI"/*.key
  fi
  # kubeconfig (token auth, CA-verified TLS)
  local ca_b64; ca_b64="$(base64 -w0 "$PKI/ca.crt")"
  cat > "$KUBECONFIG_FILE.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: c2d-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $ca_b64
users:
- name: admin
  user:
    token: $token
contexts:
- name: c2d-test
  context:
    cluster: c2d-test
    user: admin
    namespace: $ARGO_NAMESPACE
current-context: c2d-test
EOF
  chmod 600 "$KUBECONFIG_FILE.tmp"; mv "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"
  write_env
}

write_env() {
  cat > "$CLUSTER_DIR/cluster.env" <<EOF
export KUBECONFIG=$KUBECONFIG_FILE
export ARGO_SERVER_URL=$ARGO_SERVER_URL
export ARGO_NAMESPACE=$ARGO_NAMESPACE
export KUBE_APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
export KUBE_TOKEN_FILE=$TOKEN_FILE
export KUBE_CA_FILE=$PKI/ca.crt
export CLUSTER_DIR=$CLUSTER_DIR
export KWOK_POD_LOG_LINE="$POD_LOG_LINE"
export PATH=$BIN_DIR:\$PATH
EOF
}

# ---- Kubernetes objects ------------------------------------------------------------------------
bootstrap_objects() {
  local i nodes=""
  for ((i = 0; i < KWOK_NODES; i++)); do
    nodes+="---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: \"\"
    type: kwok
spec: {}
"
  done
  [[ -n "$nodes" ]] || { say "nodes: no fake nodes (KWOK_NODES=0)"; return 0; }
  printf '%s' "$nodes" | kc apply -f - >/dev/null
  say "nodes: $KWOK_NODES fake node(s) applied"
}

bootstrap_argo() {
  [[ -d "$CRD_DIR/$ARGO_CRDS" ]] || fail "argo CRDs not found in $CRD_DIR/$ARGO_CRDS; run cluster/build.sh"
  kc create namespace "$ARGO_NAMESPACE" --dry-run=client -o yaml | kc apply -f - >/dev/null
  if [[ "$ARGO_CRDS" == full ]]; then
    kc apply --server-side --force-conflicts -f "$CRD_DIR/full" >/dev/null
  else
    kc apply -f "$CRD_DIR/minimal" >/dev/null
  fi
  kc wait --for=condition=Established --timeout=60s crd --all >/dev/null \
    || fail "argo CRDs not Established; log: $LOGS/kube-apiserver.log"
  say "argo: CRDs ($ARGO_CRDS, $(cat "$CRD_DIR/.version" 2>/dev/null)) established, namespace $ARGO_NAMESPACE"
  # the node's controller settings (manifests/argo), plus this machine's metrics port
  kc -n "$ARGO_NAMESPACE" apply -k "$REPO/manifests/argo" >/dev/null
  kc -n "$ARGO_NAMESPACE" patch configmap workflow-controller-configmap --type merge \
    -p "{\"data\":{\"metricsConfig\":\"enabled: true\\nport: $ARGO_METRICS_PORT\\nsecure: false\\n\",\"telemetryConfig\":\"enabled: false\\n\"}}" >/dev/null
  if [[ -n "$ARGO_EXECUTOR_IMAGE" ]]; then
    # real node: argoexec runs from this image (never pulled); the rest of `executor` is kept
    local ex; ex="$(kc -n "$ARGO_NAMESPACE" get configmap workflow-controller-configmap -o jsonpath='{.data.executor}')"
    ex="$(printf '%s\n' "$ex" | grep -vE '^(image|imagePullPolicy):' || true)"
    kc -n "$ARGO_NAMESPACE" patch configmap workflow-controller-configmap --type merge -p "$(EX="image: $ARGO_EXECUTOR_IMAGE
imagePullPolicy: IfNotPresent
$ex" python3 -c 'import json, os; print(json.dumps({"data": {"executor": os.environ["EX"]}}))')" >/dev/null
    say "argo: executor image $ARGO_EXECUTOR_IMAGE"
  fi
  # the pods' ServiceAccount is created by kube-controller-manager; wait for it
  local t0=$SECONDS
  until kc -n "$ARGO_NAMESPACE" get serviceaccount default >/dev/null 2>&1; do
    (( SECONDS - t0 > 60 )) && fail "serviceaccount $ARGO_NAMESPACE/default never appeared; log: $LOGS/kube-controller-manager.log"
    sleep 0.5
  done
}

# kwok config = the stages + a ClusterLogs object: every pod's "main" container log is served (through
# the apiserver's pods/log) from one CRI-format file, so log reading is testable without a kubelet.
POD_LOG_LINE="c2d-kwok: simulated output of the main container"
kwok_config() {
  local config="$CLUSTER_DIR/kwok.yaml" log="$CLUSTER_DIR/pod-main.log"
  printf '%s stdout F %s\n' "2026-01-01T00:00:00.000000000Z" "$POD_LOG_LINE" > "$log"
  { cat "$STAGES_FILE"; printf -- '---\napiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterLogs\nmetadata:\n  name: main-container-logs\nspec:\n  selector: {}\n  logs:\n  - containers: [main]\n    logsFile: %s\n' "$log"; } > "$config"
  echo "$config"
}

# ---- up / down / status ----------------------------------------------------------------------
cmd_up() {
  [[ -x "$BIN_DIR/kubectl" ]] || fail "kubectl missing in $BIN_DIR; run cluster/build.sh"
  local b; for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok workflow-controller argo; do
    [[ -x "$BIN_DIR/$b" ]] || fail "binary $BIN_DIR/$b missing; run cluster/build.sh"
  done
  mkdir -p "$PIDS" "$LOGS" "$CLUSTER_DIR/etcd"
  local T0=$SECONDS
  say "up: CLUSTER_DIR=$CLUSTER_DIR"
  gen_pki

  start_listening etcd "$ETCD_PORT" GOMAXPROCS=2 -- "$BIN_DIR/etcd" \
    --name c2d --data-dir "$CLUSTER_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "c2d=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --auto-compaction-mode periodic --auto-compaction-retention 5m --quota-backend-bytes 4294967296 \
    --unsafe-no-fsync --snapshot-count 10000 --log-level warn

  start_listening kube-apiserver "$APISERVER_PORT" -- "$BIN_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/serving.crt" --tls-private-key-file "$PKI/serving.key" \
    --client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --authorization-mode Node,RBAC --service-cluster-ip-range 10.96.0.0/16 \
    --endpoint-reconciler-type none --allow-privileged=true \
    --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
    --kubelet-preferred-address-types InternalIP \
    --enable-priority-and-fairness=false --max-requests-inflight 0 --max-mutating-requests-inflight 0 \
    --v "$LOG_LEVEL"

  start_listening kube-controller-manager "$KCM_PORT" -- "$BIN_DIR/kube-controller-manager" \
    --kubeconfig "$KUBECONFIG_FILE" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials=false \
    --controllers '*,-nodeipam,-service-lb-controller,-route,-cloud-node-lifecycle' \
    --kube-api-qps 200 --kube-api-burst 400 --concurrent-gc-syncs 20 \
    --v "$LOG_LEVEL"

  cat > "$CLUSTER_DIR/scheduler-config.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: false
clientConnection:
  kubeconfig: $KUBECONFIG_FILE
  qps: 200
  burst: 400
EOF
  start_listening kube-scheduler "$SCHEDULER_PORT" -- "$BIN_DIR/kube-scheduler" \
    --config "$CLUSTER_DIR/scheduler-config.yaml" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --v "$LOG_LEVEL"

  start_listening kwok "$KWOK_PORT" -- "$BIN_DIR/kwok" \
    --kubeconfig "$KUBECONFIG_FILE" --config "$(kwok_config)" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 --node-port "$KWOK_PORT" --cidr "$POD_CIDR" \
    --server-address "127.0.0.1:$KWOK_PORT" \
    --tls-cert-file "$PKI/serving.crt" --tls-private-key-file "$PKI/serving.key" \
    --node-lease-duration-seconds 40 --v "$LOG_LEVEL"

  bootstrap_objects
  # wait for every fake node to be Ready (kwok node-initialize stage)
  if (( KWOK_NODES > 0 )); then
    kc wait --for=condition=Ready --timeout=60s node -l type=kwok >/dev/null \
      || fail "kwok nodes not Ready; log: $LOGS/kwok.log"
    say "nodes: Ready"
  fi
  bootstrap_argo

  local nsflags=()
  if [[ "$ARGO_NAMESPACED" == 1 ]]; then nsflags=(--namespaced --managed-namespace "$ARGO_NAMESPACE"); fi
  start_listening workflow-controller "$ARGO_HEALTHZ_PORT" \
      LEADER_ELECTION_DISABLE=true ARGO_BIND_ADDRESS=127.0.0.1 ARGO_HEALTHZ_PORT="$ARGO_HEALTHZ_PORT" \
      DEFAULT_REQUEUE_TIME="$ARGO_REQUEUE_TIME" -- \
    "$BIN_DIR/workflow-controller" --kubeconfig "$KUBECONFIG_FILE" --namespace "$ARGO_NAMESPACE" \
    --configmap workflow-controller-configmap "${nsflags[@]}" \
    --qps 200 --burst 400 --workflow-workers 16 --pod-cleanup-workers 8 \
    --loglevel info --log-format text

  # kwok pods run nothing: this stands in for argoexec's output reporting (see executor_sim.py)
  if [[ "$EXECSIM" == 0 ]]; then say "executor-sim: skipped (EXECSIM=0)"; else
  start_listening executor-sim "$EXECSIM_PORT" KUBE_APISERVER_URL="https://127.0.0.1:$APISERVER_PORT" \
      KUBE_TOKEN_FILE="$TOKEN_FILE" KUBE_CA_FILE="$PKI/ca.crt" EXECSIM_PORT="$EXECSIM_PORT" -- \
    python3 "$HERE/executor_sim.py"
  fi

  start_listening argo-server "$ARGO_SERVER_PORT" ARGO_BIND_ADDRESS=127.0.0.1 -- \
    "$BIN_DIR/argo" server --kubeconfig "$KUBECONFIG_FILE" --namespace "$ARGO_NAMESPACE" \
    "${nsflags[@]}" --auth-mode=server --secure=false --port "$ARGO_SERVER_PORT" \
    --kube-api-qps 100 --kube-api-burst 200 --loglevel info --log-format text

  say "up: all components healthy in $((SECONDS - T0))s"
  say "  KUBECONFIG=$KUBECONFIG_FILE"
  say "  ARGO_SERVER_URL=$ARGO_SERVER_URL   (auth-mode=server: no token needed)"
  say "  source $CLUSTER_DIR/cluster.env"
}

cmd_down() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop_component "${COMPONENTS[$i]}"; done
}

cmd_status() {
  local c pid ok=0
  for c in "${COMPONENTS[@]}"; do
    [[ "$c" == executor-sim && "$EXECSIM" == 0 ]] && continue
    pid="$(pid_of "$c")"
    if [[ -z "$pid" ]]; then printf '%-24s stopped\n' "$c"; ok=1
    elif probe "$c"; then printf '%-24s healthy  pid %-8s log %s\n' "$c" "$pid" "$LOGS/$c.log"
    else printf '%-24s UNHEALTHY pid %-8s log %s\n' "$c" "$pid" "$LOGS/$c.log"; ok=1; fi
  done
  return $ok
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) [[ -f "$CLUSTER_DIR/cluster.env" ]] || { mkdir -p "$CLUSTER_DIR"; write_env; }; cat "$CLUSTER_DIR/cluster.env" ;;
  clean) cmd_down; rm -rf "$CLUSTER_DIR"; say "removed $CLUSTER_DIR" ;;
  *) echo "usage: $0 up|down|status|env|clean" >&2; exit 2 ;;
esac
