#!/usr/bin/env bash
# A REAL Kubernetes node (kubelet + containerd + runc, kube-router's NetworkPolicy firewall) next to an
# already running cluster/cluster.sh control plane, so Argo's pods actually run (argoexec, emissary).
#
#   cluster/node.sh up       bring the node up and wait until it is Ready (idempotent)
#   cluster/node.sh down     remove everything `up` made: processes, pod mounts and cgroups, bridge,
#                            nft table + the kubelet's/kube-router's iptables chains and ipsets (idempotent)
#   cluster/node.sh status   one line per component (exit 1 when something is not healthy)
#   cluster/node.sh crash    SIGKILL the kubelet, containerd and every pod process, as a power loss would
#                            (tests); the Node object and all state stay, `up` brings the node back
#   cluster/node.sh env      print shell exports (CONTAINERD_ADDRESS, NODE_NAME, ...)
#
# The control plane is found like cluster.sh finds it: CLUSTER_DIR (its PKI, admin kubeconfig) and
# APISERVER_PORT; start it with ARGO_EXECUTOR_IMAGE=localhost/c2d-argoexec:v4.0.7 (`make node-up` does). kwok's
# fake node may stay: this node carries the taint c2d.test/node=real:NoSchedule, so only pods that tolerate it
# (and select the label c2d.test/node=real) run here.
#
# What `up` makes (all bound to 127.0.0.1 or the bridge; see cluster/README.md "Real node"):
#   * bridge c2dbr0 10.88.0.1/16 (the node IP); CNI bridge plugin with isGateway=false (so it never
#     turns on ip_forward), host-local IPAM with a default route via 10.88.0.1;
#   * nft table inet c2d_node: pods' 10.96.0.1:443 (the kubernetes Service) -> DNAT 10.88.0.1:$APISERVER_PORT,
#     where a socat relay forwards to the apiserver on 127.0.0.1; forwarding out of the bridge dropped;
#   * containerd with its own root/state/sockets under $NODE_DIR (CRI: restrict_oom_score_adj, cgroupfs,
#     sandbox image localhost/c2d-pause:3.10, nothing is ever pulled), images imported from OCI archives
#     (.cache/cluster/node-images/*.oci.tar from build-node.sh, and .cache/images/*.oci.tar if present);
#   * kubelet (cgroup v1 allowed, node IP 10.88.0.1, client cert system:node:$NODE_NAME from the
#     control plane's CA, serving on 10.88.0.1:$KUBELET_PORT, healthz on 127.0.0.1);
#   * kube-router --run-firewall only (NetworkPolicy enforcement with iptables-nft + ipset);
#   * local-path-provisioner behind the default StorageClass c2d-local-path (the jobs' data volumes).
# Only one real node per host (fixed bridge name/subnet and shim socket directory).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE_ROOT="${CACHE_ROOT:-$REPO/.cache}"
BIN_DIR="${BIN_DIR:-$CACHE_ROOT/cluster/bin}"                 # kubectl (cluster/build.sh)
NODE_BIN_DIR="${NODE_BIN_DIR:-$CACHE_ROOT/cluster/node-bin}"  # cluster/build-node.sh
NODE_IMG_DIR="${NODE_IMG_DIR:-$CACHE_ROOT/cluster/node-images}"
EXTRA_IMG_DIR="${EXTRA_IMG_DIR-$CACHE_ROOT/images}"          # the project's own images (tools/images); empty: none
CLUSTER_DIR="${CLUSTER_DIR:-$CACHE_ROOT/cluster/run}"
APISERVER_PORT="${APISERVER_PORT:-16443}"
KUBECONFIG_FILE="${KUBECONFIG_FILE:-$CLUSTER_DIR/admin.kubeconfig}"
PKI="$CLUSTER_DIR/pki"
NODE_DIR="${NODE_DIR:-$CLUSTER_DIR/node}"

NODE_NAME="${NODE_NAME:-realnode}"
# label c2d.test/node=real; the taint keeps pods that do not ask for this node (kwok's tier) off it
NODE_TAINT="${NODE_TAINT-c2d.test/node=real:NoSchedule}"  # empty: no taint
KUBELET_PORT="${KUBELET_PORT:-20250}"                 # on the bridge IP (the apiserver fetches logs here)
KUBELET_HEALTHZ_PORT="${KUBELET_HEALTHZ_PORT:-20248}" # on 127.0.0.1
BRIDGE="c2dbr0"
BRIDGE_IP="10.88.0.1"
POD_SUBNET="10.88.0.0/16"
SERVICE_IP="10.96.0.1"                                # the kubernetes Service (cluster.sh's service range)
SERVICE_CIDR="10.96.0.0/16"
NFT_TABLE="c2d_node"
PAUSE_IMAGE="localhost/c2d-pause:3.10"
SHIM_SOCKET_DIR="/run/c2d-node/s"                     # short: unix socket paths are limited to 108 bytes
CNI_BIN_DIR="${CNI_BIN_DIR:-/usr/lib/cni}"            # Debian's containernetworking-plugins
START_TIMEOUT="${START_TIMEOUT:-60}"                  # seconds per component
READY_TIMEOUT="${READY_TIMEOUT:-90}"                  # seconds for Node Ready
LOG_LEVEL="${LOG_LEVEL:-2}"

PIDS="$NODE_DIR/pids"
LOGS="$NODE_DIR/logs"
NPKI="$NODE_DIR/pki"
CTRD="$NODE_DIR/containerd"
CONTAINERD_ADDRESS="$CTRD/containerd.sock"
KUBELET_DIR="$NODE_DIR/kubelet"
BEFORE="$NODE_DIR/before"                             # what existed before `up` (so `down` removes only ours)
COMPONENTS=(apiserver-relay containerd kubelet kube-router local-path-provisioner)
VOLUMES_DIR="$NODE_DIR/volumes"                       # local-path-provisioner's volumes (one folder per PVC)
RESULTS_DIR="${RESULTS_DIR:-/var/lib/c2d-dev/results}" # manifests/dev's results PV (hostPath)
HELPER_IMAGE="${HELPER_IMAGE:-localhost/c2d-python:3.11}"  # local-path's helper pods (sh, mkdir, rm)
export PATH="$NODE_BIN_DIR:$PATH:/usr/sbin:/sbin"

LOG_TAG=node BUILD_HINT=cluster/build-node.sh
# shellcheck source=cluster/lib.sh
source "$HERE/lib.sh"   # say warn fail tail_log alive pid_of start_component stop_component

kc() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=10s "$@"; }
ctr_() { "$NODE_BIN_DIR/ctr" --address "$CONTAINERD_ADDRESS" --namespace k8s.io "$@"; }

binary_of() {
  case "$1" in
    apiserver-relay) command -v socat ;;
    *) echo "$NODE_BIN_DIR/$1" ;;
  esac
}

probe() {
  case "$1" in
    apiserver-relay) curl -sf -m 3 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$CLUSTER_DIR/admin.token")" \
                       --resolve "kubernetes:$APISERVER_PORT:$BRIDGE_IP" "https://kubernetes:$APISERVER_PORT/readyz" | grep -qx ok ;;
    containerd) "$NODE_BIN_DIR/ctr" --address "$CONTAINERD_ADDRESS" --timeout 3s version >/dev/null 2>&1 ;;
    kubelet) curl -sf -m 3 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" | grep -qx ok ;;
    kube-router) iptables -t filter -nL KUBE-ROUTER-INPUT >/dev/null 2>&1 ;;
    local-path-provisioner)  # the log since its last start says its controller runs
      awk '/^===== local-path-provisioner start/ {ok = 0} /Started provisioner controller/ {ok = 1} END {exit !ok}' \
        "$LOGS/local-path-provisioner.log" 2>/dev/null ;;
  esac
}

# ---- certificates: kubelet client (system:node:NAME) + serving, signed by the control plane's CA ------
gen_node_pki() {
  [[ -s "$PKI/ca.crt" && -s "$PKI/ca.key" ]] || fail "control plane PKI not found in $PKI (is cluster.sh up with CLUSTER_DIR=$CLUSTER_DIR?)"
  mkdir -p "$NPKI"
  if [[ -s "$NPKI/kubelet-client.crt" ]] && openssl verify -CAfile "$PKI/ca.crt" "$NPKI/kubelet-client.crt" "$NPKI/kubelet-serving.crt" >/dev/null 2>&1 \
     && openssl x509 -noout -subject -in "$NPKI/kubelet-client.crt" | grep -q "system:node:$NODE_NAME"; then
    :
  else
    say "certificates: kubelet client (system:node:$NODE_NAME) and serving ($BRIDGE_IP), CA $PKI/ca.crt"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > "$NPKI/client.ext"
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/O=system:nodes/CN=system:node:$NODE_NAME" \
      -keyout "$NPKI/kubelet-client.key" -out "$NPKI/kubelet-client.csr" 2>/dev/null
    openssl x509 -req -in "$NPKI/kubelet-client.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$NPKI/client.ext" -out "$NPKI/kubelet-client.crt" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:%s,IP:127.0.0.1,DNS:%s\n' \
      "$BRIDGE_IP" "$NODE_NAME" > "$NPKI/serving.ext"
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$NODE_NAME" \
      -keyout "$NPKI/kubelet-serving.key" -out "$NPKI/kubelet-serving.csr" 2>/dev/null
    openssl x509 -req -in "$NPKI/kubelet-serving.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$NPKI/serving.ext" -out "$NPKI/kubelet-serving.crt" 2>/dev/null
    chmod 600 "$NPKI"/*.key
  fi
  cat > "$NODE_DIR/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: c2d-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: system:node:$NODE_NAME
  user:
    client-certificate: $NPKI/kubelet-client.crt
    client-key: $NPKI/kubelet-client.key
contexts:
- name: node
  context: {cluster: c2d-test, user: "system:node:$NODE_NAME"}
current-context: node
EOF
  chmod 600 "$NODE_DIR/kubelet.kubeconfig"
}

# ---- network: bridge, CNI config, nft table ---------------------------------------------------------
setup_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    if ip -4 route show to match "$BRIDGE_IP" | grep -qv '^default'; then
      fail "network: $POD_SUBNET is already routed on this host: $(ip -4 route show to match "$BRIDGE_IP" | grep -v '^default' | head -1)"
    fi
    ip link add "$BRIDGE" type bridge
    say "network: bridge $BRIDGE created"
  fi
  ip addr show dev "$BRIDGE" | grep -q "inet $BRIDGE_IP/16" || ip addr add "$BRIDGE_IP/16" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  mkdir -p "$NODE_DIR/cni/net.d" "$NODE_DIR/cni/ipam"
  cat > "$NODE_DIR/cni/net.d/10-c2d-node.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "c2d-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "rangeStart": "10.88.0.10", "gateway": "$BRIDGE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0", "gw": "$BRIDGE_IP"}]
      }
    }
  ]
}
EOF
  # pods -> kubernetes Service: DNAT to the relay on the bridge; nothing is forwarded off the bridge
  nft -f - <<EOF
table inet $NFT_TABLE
delete table inet $NFT_TABLE
table inet $NFT_TABLE {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "$BRIDGE" ip daddr $SERVICE_IP tcp dport 443 dnat ip to $BRIDGE_IP:$APISERVER_PORT
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "$BRIDGE" oifname != "$BRIDGE" drop
  }
}
EOF
  say "network: $BRIDGE $BRIDGE_IP/16, nft table inet $NFT_TABLE ($SERVICE_IP:443 -> $BRIDGE_IP:$APISERVER_PORT)," \
      "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)"
}

# ---- containerd -------------------------------------------------------------------------------------
containerd_config() {
  mkdir -p "$CTRD/root" "$CTRD/state" "$CTRD/opt" "$NODE_DIR/runc" "$SHIM_SOCKET_DIR"
  cat > "$CTRD/config.toml" <<EOF
version = 3
root = "$CTRD/root"
state = "$CTRD/state"
imports = []
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CONTAINERD_ADDRESS"
[ttrpc]
  address = "$CONTAINERD_ADDRESS.ttrpc"
[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$CTRD/opt"
  [plugins."io.containerd.shim.v1.manager"]
    socket_dir = "$SHIM_SOCKET_DIR"
  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "$PAUSE_IMAGE"
  [plugins."io.containerd.cri.v1.runtime"]
    # this VM has no CAP_SYS_RESOURCE: runc init cannot lower oom_score_adj (cluster/README.md)
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_unprivileged_ports = true
    enable_unprivileged_icmp = true
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        disable_pause_image_pull = true
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          BinaryName = "$NODE_BIN_DIR/runc"
          Root = "$NODE_DIR/runc"
          SystemdCgroup = false
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["$CNI_BIN_DIR"]
      conf_dir = "$NODE_DIR/cni/net.d"
      max_conf_num = 1
EOF
}

import_images() {
  local f imgs=() extra=() t0=$SECONDS
  for f in "$NODE_IMG_DIR"/*.oci.tar; do [[ -f "$f" ]] && imgs+=("$f"); done
  [[ ${#imgs[@]} -gt 0 ]] || fail "images: no *.oci.tar in $NODE_IMG_DIR; run cluster/build-node.sh images"
  if [[ -d "$EXTRA_IMG_DIR" ]]; then
    for f in "$EXTRA_IMG_DIR"/*.oci.tar; do [[ -f "$f" ]] && extra+=("$f"); done
  fi
  for f in "${imgs[@]}" "${extra[@]}"; do
    local stamp="$CTRD/imported.$(basename "$f").$(stat -c %Y-%s "$f")"
    [[ -f "$stamp" ]] && continue
    local out
    if out="$(ctr_ images import --platform linux/amd64 "$f" 2>&1)"; then
      : > "$stamp"
      say "images: imported $(basename "$f")"
    elif [[ "$f" == "$EXTRA_IMG_DIR"/* ]]; then
      warn "images: could not import $f: $out"
    else
      fail "images: could not import $f: $out"
    fi
  done
  # a digest reference (repo@sha256:...) next to each tag: what a registry pull records, and how DDOs name
  # their algorithm images (e.g. localhost/c2d-python@sha256:...); an import records only the tag
  local ref digest
  while read -r ref digest; do
    [[ "$ref" == *:* && "$ref" != sha256:* && "$ref" != *@* ]] || continue
    ctr_ images ls -q 2>/dev/null | grep -qxF "${ref%:*}@$digest" || ctr_ images tag "$ref" "${ref%:*}@$digest" >/dev/null
  done < <(ctr_ images ls 2>/dev/null | awk 'NR > 1 {print $1, $3}')
  local names; names="$(ctr_ images ls -q 2>/dev/null | grep -v '^sha256:' | grep -v '@' | tr '\n' ' ' || true)"
  [[ " $names" == *" $PAUSE_IMAGE "* ]] || fail "images: sandbox image $PAUSE_IMAGE missing after import (have: $names)"
  say "images: $names($((SECONDS - t0))s)"
}

# ---- kubelet ----------------------------------------------------------------------------------------
kubelet_config() {
  mkdir -p "$KUBELET_DIR" "$NODE_DIR/pod-logs" "$NODE_DIR/volume-plugins"
  cat > "$NODE_DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# this host runs cgroup v1 (deprecated; without this the kubelet refuses to start)
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_ADDRESS
address: $BRIDGE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $NPKI/kubelet-serving.crt
tlsPrivateKeyFile: $NPKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
podLogsDir: $NODE_DIR/pod-logs
volumePluginDir: $NODE_DIR/volume-plugins
failSwapOn: false
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
serializeImagePulls: false
# the imported images must never be garbage-collected (nothing can be pulled back)
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
nodeStatusUpdateFrequency: 4s
nodeStatusReportFrequency: 20s
syncFrequency: 10s
fileCheckFrequency: 20s
maxPods: 110
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
EOF
  if [[ -n "$NODE_TAINT" ]]; then
    local key="${NODE_TAINT%%=*}" rest="${NODE_TAINT#*=}"
    printf 'registerWithTaints:\n- {key: %s, value: %s, effect: %s}\n' "$key" "${rest%%:*}" "${rest#*:}" \
      >> "$NODE_DIR/kubelet-config.yaml"
  fi
}

# ---- volumes: local-path-provisioner (StorageClass c2d-local-path, the default) -------------------
# Argo's volumeClaimTemplates (the per-job data volume) get a folder under $VOLUMES_DIR, made by a helper
# pod (mode 0777: job pods run as uid 65534) and removed with `rm -rf` when the claim goes (reclaim Delete).
# The dev results PV's folder is made here, writable by the job's output-publish (uid 65534).
localpath_objects() {
  mkdir -p "$VOLUMES_DIR" "$RESULTS_DIR"
  chmod 0755 "$VOLUMES_DIR"; chmod 0777 "$RESULTS_DIR"
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: local-path-storage}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-helper, namespace: local-path-storage}
automountServiceAccountToken: false
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: c2d-local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$VOLUMES_DIR"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata: {name: helper-pod}
    spec:
      automountServiceAccountToken: false
      containers:
      - name: helper-pod
        image: $HELPER_IMAGE
        imagePullPolicy: Never
        securityContext: {runAsUser: 0, runAsGroup: 0}
EOF
}

# ---- before/after bookkeeping: what `down` may remove ---------------------------------------------
record_before() {
  [[ -f "$BEFORE/recorded" ]] && return 0
  mkdir -p "$BEFORE"
  nft list tables 2>/dev/null | sort > "$BEFORE/nft-tables"
  ipset list -n 2>/dev/null | sort > "$BEFORE/ipsets"
  local d; : > "$BEFORE/dirs"
  for d in /run/containerd /run/c2d-node /var/lib/cni /var/lib/kubelet /var/log/containers /var/run/netns; do
    [[ -e "$d" ]] && echo "$d" >> "$BEFORE/dirs"
  done
  : > "$BEFORE/recorded"
}
existed_before() { grep -qxF "$1" "$BEFORE/dirs" 2>/dev/null; }

cmd_up() {
  [[ $EUID -eq 0 ]] || fail "must run as root (bridge, nft, containerd, kubelet)"
  local b; for b in containerd ctr containerd-shim-runc-v2 runc kubelet kube-router; do
    [[ -x "$NODE_BIN_DIR/$b" ]] || fail "$NODE_BIN_DIR/$b missing; run cluster/build-node.sh (make node-build)"
  done
  [[ -x "$BIN_DIR/kubectl" ]] || fail "$BIN_DIR/kubectl missing; run cluster/build.sh"
  for b in socat nft ip iptables ipset openssl curl; do command -v "$b" >/dev/null || fail "$b missing (tools/setup_system.sh node)"; done
  [[ -x "$CNI_BIN_DIR/bridge" && -x "$CNI_BIN_DIR/host-local" && -x "$CNI_BIN_DIR/loopback" ]] \
    || fail "CNI plugins missing in $CNI_BIN_DIR (tools/setup_system.sh node)"
  [[ -s "$KUBECONFIG_FILE" ]] || fail "no control plane kubeconfig at $KUBECONFIG_FILE (cluster/cluster.sh up first, same CLUSTER_DIR)"
  kc get --raw /readyz >/dev/null 2>&1 || fail "apiserver at 127.0.0.1:$APISERVER_PORT not ready (cluster/cluster.sh status)"
  local T0=$SECONDS
  say "up: NODE_DIR=$NODE_DIR node $NODE_NAME, apiserver 127.0.0.1:$APISERVER_PORT"
  mkdir -p "$PIDS" "$LOGS"
  record_before
  gen_node_pki
  setup_network

  start_component apiserver-relay -- "$(command -v socat)" \
    "TCP-LISTEN:$APISERVER_PORT,bind=$BRIDGE_IP,reuseaddr,fork" "TCP:127.0.0.1:$APISERVER_PORT"

  containerd_config
  start_component containerd -- "$NODE_BIN_DIR/containerd" --config "$CTRD/config.toml"
  import_images

  kubelet_config
  start_component kubelet -- "$NODE_BIN_DIR/kubelet" \
    --config "$NODE_DIR/kubelet-config.yaml" --kubeconfig "$NODE_DIR/kubelet.kubeconfig" \
    --root-dir "$KUBELET_DIR" --cert-dir "$NPKI" --hostname-override "$NODE_NAME" --node-ip "$BRIDGE_IP" \
    --node-labels "c2d.test/node=real" --v "$LOG_LEVEL"

  say "kubelet: waiting for Node $NODE_NAME to be Ready (timeout ${READY_TIMEOUT}s)"
  local t0=$SECONDS
  until [[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; do
    if [[ -z "$(pid_of kubelet)" ]]; then tail_log "$LOGS/kubelet.log" 30; fail "kubelet exited; log: $LOGS/kubelet.log"; fi
    if (( SECONDS - t0 > READY_TIMEOUT )); then
      kc get node "$NODE_NAME" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.message}{"\n"}{end}' >&2 2>/dev/null || true
      tail_log "$LOGS/kubelet.log" 30
      fail "Node $NODE_NAME not Ready after ${READY_TIMEOUT}s; log: $LOGS/kubelet.log"
    fi
    sleep 0.5
  done
  say "kubelet: Node $NODE_NAME Ready after $((SECONDS - t0))s"
  local others; others="$(kc get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}' 2>/dev/null | tr ' ' '\n' | grep -vx "$NODE_NAME" | tr '\n' ' ' || true)"
  [[ -z "${others// /}" || -n "$NODE_TAINT" ]] || warn "other nodes exist ($others) and this node has no taint: pods may land on either"

  start_component kube-router -- "$NODE_BIN_DIR/kube-router" \
    --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
    --kubeconfig "$KUBECONFIG_FILE" --hostname-override "$NODE_NAME" \
    --service-cluster-ip-range "$SERVICE_CIDR" --enable-ipv6=false \
    --health-port 0 --metrics-port 0 --v 1

  localpath_objects
  start_component local-path-provisioner -- "$NODE_BIN_DIR/local-path-provisioner" --debug start \
    --kubeconfig "$KUBECONFIG_FILE" --namespace local-path-storage --configmap-name local-path-config \
    --service-account-name local-path-helper --provisioner-name rancher.io/local-path --helper-image "$HELPER_IMAGE"

  write_env
  say "up: node $NODE_NAME Ready in $((SECONDS - T0))s (RSS: $(rss_summary))"
}

rss_summary() {
  local c pid out=""
  for c in containerd kubelet kube-router; do
    pid="$(pid_of "$c")"; [[ -n "$pid" ]] || continue
    out+="$c $(( $(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0) / 1024 ))MB "
  done
  echo "${out% }"
}

write_env() {
  mkdir -p "$NODE_DIR"
  cat > "$NODE_DIR/node.env" <<EOF
export NODE_NAME=$NODE_NAME
export NODE_DIR=$NODE_DIR
export CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS
export CONTAINERD_NAMESPACE=k8s.io
export NODE_IP=$BRIDGE_IP
export NODE_APISERVER_ENDPOINT=$BRIDGE_IP:$APISERVER_PORT
export PATH=$NODE_BIN_DIR:\$PATH
EOF
}

# ---- down -------------------------------------------------------------------------------------------
# processes in the pods' cgroups (any v1 hierarchy or the unified one)
kubepods_procs() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d "$d" ]] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
  return 0
}
# shims started by this node's containerd (found by their -address argument)
our_shims() {
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -qF -- "containerd-shim-runc-v2 -namespace k8s.io -address $CONTAINERD_ADDRESS" \
      && echo "${p#/proc/}"
  done
  return 0
}
our_mounts() { # mount points under NODE_DIR (deepest first)
  awk -v root="$NODE_DIR/" 'index($5, root) == 1 {print $5}' /proc/self/mountinfo | awk '{print length, $0}' | sort -rn | cut -d' ' -f2- | uniq
}

cmd_down() {
  local T0=$SECONDS i
  say "down: NODE_DIR=$NODE_DIR node $NODE_NAME"
  stop_component local-path-provisioner
  stop_component kube-router
  # the Node object goes first (its pods then are gone from the API too); best effort
  if [[ -s "$KUBECONFIG_FILE" ]] && kc get node "$NODE_NAME" >/dev/null 2>&1; then
    kc delete node "$NODE_NAME" --wait=false >/dev/null 2>&1 && say "kubelet: Node $NODE_NAME deleted" || true
  fi
  stop_component kubelet
  # every pod container and sandbox: kill + delete through containerd (the shims exit, runc removes cgroups)
  if [[ -n "$(pid_of containerd)" ]]; then
    local ids; ids="$(ctr_ tasks ls -q 2>/dev/null || true)"
    if [[ -n "$ids" ]]; then
      local id
      for id in $ids; do timeout 10 "$NODE_BIN_DIR/ctr" --address "$CONTAINERD_ADDRESS" -n k8s.io tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
      for id in $ids; do timeout 10 "$NODE_BIN_DIR/ctr" --address "$CONTAINERD_ADDRESS" -n k8s.io tasks rm -f "$id" >/dev/null 2>&1 || true; done
      say "containerd: removed $(wc -w <<< "$ids") task(s)"
    fi
  fi
  stop_component containerd
  stop_component apiserver-relay
  # leftovers: shims of this containerd, processes still in the pods' cgroups
  local left; left="$( { our_shims; kubepods_procs; } | sort -u | tr '\n' ' ')"
  if [[ -n "${left// /}" ]]; then
    say "processes left: $left- SIGKILL"
    kill -KILL $left 2>/dev/null || true
    sleep 0.5
  fi
  # mounts (container rootfs, shm, netns, kubelet volumes) under NODE_DIR
  local m n=0
  for ((i = 0; i < 3; i++)); do
    for m in $(our_mounts); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; n=$((n + 1)); done
    [[ -z "$(our_mounts)" ]] && break
  done
  if (( n > 0 )); then say "mounts: unmounted $n under $NODE_DIR"; fi
  [[ -z "$(our_mounts)" ]] || warn "mounts still present: $(our_mounts | tr '\n' ' ')"
  # the pods' cgroups (cgroup v1: one tree per hierarchy), deepest first
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    if [[ -d "$d" ]]; then warn "cgroup $d could not be removed"; fi
  done
  # network: the bridge (pod veths went with their namespaces), our nft table, the kubelet's and
  # kube-router's iptables chains and ipsets, and every nft table that did not exist before `up`
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; say "network: bridge $BRIDGE deleted"; fi
  if nft list table inet "$NFT_TABLE" >/dev/null 2>&1; then nft delete table inet "$NFT_TABLE"; say "network: nft table inet $NFT_TABLE deleted"; fi
  clean_iptables
  # host paths that the runtime hard-codes, when they did not exist before `up`
  local p
  for p in /run/c2d-node /run/containerd /var/lib/cni /var/lib/kubelet /var/run/netns; do
    if [[ -e "$p" ]] && ! existed_before "$p"; then rm -rf "$p"; say "host: removed $p"; fi
  done
  if [[ -d /var/log/containers ]]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$NODE_DIR/*" -delete 2>/dev/null || true
    existed_before /var/log/containers || rmdir /var/log/containers 2>/dev/null || true
  fi
  # state (keep logs and certificates)
  rm -rf "$CTRD" "$KUBELET_DIR" "$NODE_DIR/runc" "$NODE_DIR/cni" "$NODE_DIR/pod-logs" "$NODE_DIR/volume-plugins" "$PIDS" "$BEFORE"
  say "down: done in $((SECONDS - T0))s"
}

clean_iptables() {
  local fam t chains c before_tables
  before_tables="$(cat "$BEFORE/nft-tables" 2>/dev/null || true)"
  for fam in iptables ip6tables; do
    command -v "$fam" >/dev/null || continue
    for t in filter nat mangle raw; do
      "$fam" -t "$t" -S >/dev/null 2>&1 || continue
      # rules that jump to KUBE-* chains, then the chains themselves
      { "$fam" -t "$t" -S 2>/dev/null || true; } | { grep -E '^-A [^ ]+ .*-j KUBE-' || true; } \
        | { grep -vE '^-A KUBE-' || true; } | while read -r _ rest; do
        eval "$fam -t $t -D $rest" 2>/dev/null || true
      done
      chains="$("$fam" -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}')"
      for c in $chains; do "$fam" -t "$t" -F "$c" 2>/dev/null || true; done
      for c in $chains; do "$fam" -t "$t" -X "$c" 2>/dev/null || true; done
    done
  done
  # nft tables created since `up` (iptables-nft makes ip/ip6 filter|nat|mangle on first use)
  local line
  while read -r line; do
    [[ -n "$line" ]] || continue
    grep -qxF "$line" <<< "$before_tables" && continue
    [[ "$line" == "table inet $NFT_TABLE" ]] && continue
    # only when nothing but empty base chains is left (someone else's rules keep the table)
    if nft list $line 2>/dev/null | grep -qvE '^[[:space:]]*(table .*|chain .*|type .*|policy .*|\}|)$'; then
      warn "nft $line has rules that are not ours; left in place"; continue
    fi
    if nft delete $line 2>/dev/null; then say "network: nft $line deleted"; else warn "could not delete nft $line"; fi
  done < <(nft list tables 2>/dev/null | sort || true)
  # kube-router's ipsets created since `up`
  local s before_sets; before_sets="$(cat "$BEFORE/ipsets" 2>/dev/null || true)"
  for s in $(ipset list -n 2>/dev/null || true); do
    grep -qxF "$s" <<< "$before_sets" && continue
    ipset destroy "$s" 2>/dev/null || warn "could not destroy ipset $s"
  done
  return 0
}

# ---- crash ------------------------------------------------------------------------------------------
# What the control plane sees of a node that loses power: its kubelet stops answering, and its containers are
# gone. Nothing is cleaned; `up` restarts the node from this state (its kubelet then ends the pods the cluster
# deleted meanwhile), `down` cleans it.
cmd_crash() {
  local left; left="$( { pid_of kubelet; pid_of containerd; our_shims; kubepods_procs; } | sort -u | tr '\n' ' ')"
  say "crash: SIGKILL ${left:-nothing}"
  if [[ -n "${left// /}" ]]; then kill -KILL $left 2>/dev/null || true; fi
  rm -f "$PIDS/kubelet.pid" "$PIDS/containerd.pid"
}

cmd_status() {
  local c pid ok=0
  for c in "${COMPONENTS[@]}"; do
    pid="$(pid_of "$c")"
    if [[ -z "$pid" ]]; then printf '%-18s stopped\n' "$c"; ok=1
    elif probe "$c"; then printf '%-18s healthy  pid %-8s log %s\n' "$c" "$pid" "$LOGS/$c.log"
    else printf '%-18s UNHEALTHY pid %-8s log %s\n' "$c" "$pid" "$LOGS/$c.log"; ok=1; fi
  done
  local ready; ready="$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
  printf '%-18s %s\n' "node $NODE_NAME" "${ready:-absent}"
  [[ "$ready" == True ]] || ok=1
  return $ok
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  crash) cmd_crash ;;
  env) [[ -f "$NODE_DIR/node.env" ]] || write_env; cat "$NODE_DIR/node.env" ;;
  *) echo "usage: $0 up|down|status|crash|env" >&2; exit 2 ;;
esac
