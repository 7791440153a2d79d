"""The one configuration object of the node.

Every setting is read from the environment (prefix ``C2D_``, nested groups joined with ``__``, e.g.
``C2D_CHAIN__RPC_URL``) or from a ``.env`` file, once, by :func:`load_settings`, and then passed down.
Nothing in the code base reads the environment at import time.
"""

from __future__ import annotations

import site
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from c2d.environments import ComputeEnvironment, default_environments
from c2d.exceptions import UnsupportedImageError
from c2d.images import node_image
from c2d.placement import Toleration

# Anvil's well-known development keys (mnemonic "test test ... junk"). They are public: the node
# refuses to use them against any chain but the embedded one (see Settings._refuse_dev_keys).
ANVIL_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
)
EMBEDDED_CHAIN_ID = 8996  # Ocean's development chain id (barge); ocean.py maps it to "development"


def _default_data_dir() -> Path:
    """``<checkout>/.c2d`` when running from a source checkout, else ``~/.c2d``."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / ".git").exists():
        return checkout / ".c2d"
    return Path.home() / ".c2d"


def _default_npm_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "node_modules"


class PostgresSettings(BaseModel):
    """Postgres: the source of truth for jobs, nonces and used orders."""

    dsn: str | None = Field(
        default=None,
        description="Use an external server (libpq DSN). Unset: start the embedded server in the data dir.",
    )
    port: int = Field(default=55432, ge=1, le=65535, description="Port of the embedded server.")
    database: str = "c2d"
    user: str = "c2d"
    bin_dir: Path | None = Field(
        default=None, description="Folder with initdb/postgres; default: found via pg_config or Debian paths."
    )
    pool_size: int = Field(default=10, ge=1, le=200)


class ChainSettings(BaseModel):
    """The EVM chain holding datatokens, orders and DDOs."""

    rpc_url: str | None = Field(default=None, description="External chain RPC. Unset: start embedded anvil.")
    port: int = Field(default=8545, ge=1, le=65535, description="Port of the embedded anvil chain.")
    chain_id: int = EMBEDDED_CHAIN_ID
    deployer_key: SecretStr = Field(
        default=SecretStr(ANVIL_KEYS[0]), description="Key that deploys the Ocean contracts (embedded chain)."
    )
    address_file: Path | None = Field(
        default=None, description="Ocean address.json; default <data_dir>/chain/address.json."
    )
    block_time: float = Field(default=0.0, ge=0, description="Anvil block time in seconds; 0 = instant mining.")

    @property
    def embedded(self) -> bool:
        return self.rpc_url is None


class ProviderSettings(BaseModel):
    """The Ocean-compatible HTTP API."""

    port: int = Field(default=8030, ge=1, le=65535)
    private_key: SecretStr = Field(
        default=SecretStr(ANVIL_KEYS[1]),
        description="Provider wallet: signs provider fees, decrypts DDOs. Dev key only on the embedded chain.",
    )
    public_url: str | None = Field(
        default=None, description="URL clients reach the provider at; default http://<host>:<port>."
    )
    legacy_allow_any_algorithm: bool = Field(
        default=False, description="Allow any published algorithm on datasets that list no trusted algorithms."
    )
    authorized_decrypters: list[str] = Field(
        default_factory=list, description="Addresses allowed to call /decrypt (besides the provider itself)."
    )
    keep_alive_seconds: int = Field(
        default=65,
        ge=1,
        description="Idle keep-alive connections are closed after this long. Longer than clients' polling "
        "intervals (and than a load balancer's idle timeout, often 60 s): a poll sent just as the server closes "
        "the idle connection fails.",
    )
    escrow_claim_timeout: int = Field(
        default=3600,
        ge=60,
        description="Escrow locks outlive a job's longest run by this long, seconds: the time the node has to claim "
        "the cost (ocean-node's claimDurationTimeout).",
    )
    escrow_settle_seconds: float = Field(
        default=15.0, gt=0, description="How often finished paid jobs' escrow locks are claimed or given back."
    )
    live_log_max_bytes: int = Field(
        default=64 * 1024**2,
        ge=1024,
        description="Bytes of a running algorithm's output one computeStreamableLogs request streams at most (the "
        "whole log is a result of the job once it ends).",
    )


class S3Settings(BaseModel):
    """An S3-compatible object store (MinIO, AWS S3): dataset inputs from allow-listed buckets, results."""

    endpoint: str | None = Field(
        default=None, description="Endpoint URL, e.g. http://127.0.0.1:9000 or https://s3.amazonaws.com; unset: no S3."
    )
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    region: str | None = None
    results_bucket: str = Field(default="c2d-results", description="Bucket of job results (one prefix per job).")
    input_buckets: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Buckets datasets may be read from, each with the publishers (NFT owners) allowed to use it; "
        '"*" allows any publisher. The results bucket is never readable as an input.',
    )
    presign_results: bool = Field(
        default=False, description="computeResult redirects to a presigned URL instead of streaming through the node."
    )
    presign_seconds: int = Field(default=300, ge=10, le=7 * 86400, description="Lifetime of a presigned URL.")

    @property
    def configured(self) -> bool:
        return bool(self.endpoint and self.access_key and self.secret_key)


class IpfsSettings(BaseModel):
    """A Kubo (IPFS) node reached through its HTTP RPC API: ipfs:// inputs, results."""

    api_url: str | None = Field(default=None, description="Kubo RPC API, e.g. http://127.0.0.1:5001; unset: no IPFS.")
    timeout: float = Field(default=60.0, gt=0, description="Seconds a Kubo call may wait for data.")


class StorageSettings(BaseModel):
    """Where results go (per environment: ``storage``; default ``backend``) and the stores inputs come from."""

    backend: Literal["local", "s3", "ipfs"] = "local"
    local_dir: Path | None = Field(default=None, description="Local results store; default <data_dir>/store.")
    s3: S3Settings = S3Settings()
    ipfs: IpfsSettings = IpfsSettings()
    secret_name: str = Field(
        default="c2d-storage",
        description="Kubernetes Secret (keys s3-access-key, s3-secret-key) the fetch/publish steps read S3 "
        "credentials from; the local engine fills it from these settings.",
    )
    cleanup_seconds: float = Field(default=60.0, gt=0, description="Period of the expired-results cleanup.")
    result_asset_owner: Literal["consumer", "provider"] = Field(
        default="consumer", description="Who owns the data NFT of results published as a new asset."
    )


class FetchSettings(BaseModel):
    """How the node fetches URLs it is given (dataset and algorithm files, fileinfo)."""

    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Non-public destinations that may be fetched anyway: IPs or CIDRs (10.0.0.0/8), host names, "
        "each optionally with :port (127.0.0.1:8000, [::1]:8000, files.internal:443). Every other loopback, "
        "private, link-local, shared or metadata address is refused, also after a redirect.",
    )


class RuntimeSettings(BaseModel):
    """How the local engine runs an algorithm image: a host runtime mounted read-only in the sandbox."""

    image_prefix: str = Field(description="Images whose name starts with this use the runtime, e.g. 'python'.")
    paths: list[Path] = Field(description="Host folders mounted read-only at the same place in the sandbox.")
    path_env: str = Field(description="PATH inside the sandbox.")
    hide: list[Path] = Field(
        default_factory=list,
        description="Folders under paths that the sandbox sees empty (e.g. the host interpreter's site-packages).",
    )


def _default_runtimes() -> list[RuntimeSettings]:
    base = Path(sys.base_prefix)
    path_env = ":".join(dict.fromkeys([f"{base}/bin", "/usr/local/bin", "/usr/bin", "/bin"]))  # base may be /usr
    # python:*-slim images hold the interpreter and its standard library only: the host's installed
    # packages stay out of sight (they are none of the algorithm's business, and their .pth hooks would
    # run at every interpreter start).
    site_packages = [Path(p) for p in site.getsitepackages([str(base)]) if Path(p).is_dir()]
    python = RuntimeSettings(image_prefix="python", paths=[base], path_env=path_env, hide=site_packages)
    # Ocean's sample images (oceanprotocol/algo_dockers:python-*) ship data-science packages: the host's
    # installed packages stand in for them.
    ocean = RuntimeSettings(image_prefix="oceanprotocol/algo_dockers:python", paths=[base], path_env=path_env)
    node = RuntimeSettings(image_prefix="node", paths=[], path_env="/usr/local/bin:/usr/bin:/bin")
    return [python, ocean, node]


# The taints the node lifecycle controller puts on a node whose kubelet stopped answering (Ready Unknown) or
# reports NotReady; pods on it are evicted when their toleration of these ends.
NODE_LOST_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")


class ArgoSettings(BaseModel):
    """The ``argo`` engine: where the Workflow objects go and how job pods are set up on the cluster."""

    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig of the engine's identity; unset: the in-cluster ServiceAccount."
    )
    server_url: str | None = Field(
        default=None, description="Argo Server URL; needed only to read offloaded node status."
    )
    ui_url: str | None = Field(default=None, description="Argo UI base URL for operator links; default server_url.")
    service_account: str = Field(default="c2d-job", description="ServiceAccount of job pods (no token mounted).")
    executor_service_account: str = Field(
        default="c2d-executor", description="ServiceAccount whose token only Argo's executor containers get."
    )
    volume: Literal["pvc", "emptyDir"] = Field(default="pvc", description="Per-job data volume.")
    results_claim: str = Field(
        default="c2d-results", description="PVC of the results store (the provider mounts it as storage.local_dir)."
    )
    storage_class: str | None = Field(
        default=None, description="StorageClass of the per-job data volume; unset: the cluster's default class."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels every job pod must match (e.g. a node pool for jobs)."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints of the job nodes that job pods tolerate (dedicated node pools)."
    )
    node_lost_grace: int = Field(
        default=60,
        ge=0,
        description="Seconds a job pod stays on a node that stopped answering before the cluster evicts it and "
        "the job fails (Kubernetes' default is 300); rendered as the pods' NoExecute tolerations of "
        "node.kubernetes.io/unreachable and not-ready unless `tolerations` names those taints itself.",
    )
    node_check_seconds: float = Field(
        default=10, gt=0, description="How often the watcher looks for job pods evicted from a lost node."
    )
    image_pull_grace: float = Field(
        default=120,
        ge=0,
        description="Seconds a job step may wait for an image its node cannot pull (ErrImagePull, "
        "ImagePullBackOff) before the job fails; an image that may never be pulled fails the job at once.",
    )
    ttl_seconds: int = Field(default=3600, ge=0, description="Workflow objects are deleted this long after the end.")
    submit_batch: int = Field(default=50, ge=1, description="Jobs submitted per dispatcher round.")
    submit_workers: int = Field(default=4, ge=1, le=32, description="Submissions in flight at once.")
    poll_seconds: float = Field(default=0.5, gt=0, description="Dispatcher period (queued jobs, stops, deletes).")
    watch_timeout: int = Field(default=300, ge=10, description="Seconds before a watch is renewed.")

    def job_tolerations(self) -> list[Toleration]:
        """``tolerations``, plus a toleration of each node-lost taint for ``node_lost_grace`` seconds where
        ``tolerations`` does not name that taint."""
        named = {toleration.key for toleration in self.tolerations}
        lost = [
            Toleration(key=key, operator="Exists", effect="NoExecute", toleration_seconds=self.node_lost_grace)
            for key in NODE_LOST_TAINTS
            if key not in named
        ]
        return [*self.tolerations, *lost]


class EngineSettings(BaseModel):
    """Which engine runs the Workflow objects, and how the local engine sandboxes steps."""

    kind: Literal["local", "argo"] = "local"
    max_parallel_jobs: int = Field(default=4, ge=1, description="Jobs the local engine runs at once.")
    runtimes: list[RuntimeSettings] = Field(default_factory=_default_runtimes)
    cgroup_root: Path = Field(
        default=Path("/sys/fs/cgroup"), description="cgroup v1 mount root for memory/pids/cpu limits."
    )
    bwrap: str = Field(default="bwrap", description="bubblewrap binary.")
    step_image: str = Field(
        default=node_image(),
        description="Image of the node's own steps (fetch/publish/filter): the versioned node image (docs/images.md).",
    )
    step_modules: list[str] = Field(
        default_factory=list, description="Python modules whose register(registry) adds pipeline steps."
    )
    namespace: str = Field(default="c2d", description="Kubernetes namespace of the Workflow objects.")
    keep_job_dirs: bool = Field(default=False, description="Keep each job's folder after publish (debugging).")
    sandbox_user: str = Field(
        default="c2d-jobs",
        description="Name whose range in /etc/subuid and /etc/subgid holds the host uids/gids of job sandboxes, one "
        "per running job (tools/setup_system.sh registers it); an engine running as root refuses to start without.",
    )
    warm_steps: bool = Field(
        default=True,
        description="Run the node's own fetch/publish/filter steps as Landlock-confined children of one warm "
        "sandboxed runner (needs Landlock ABI >= 6; otherwise each step is its own sandbox).",
    )
    gpu_dev_dir: Path = Field(
        default=Path("/dev"),
        description="Folder of the host's NVIDIA device nodes (nvidia<N>, nvidiactl, nvidia-uvm) that the local "
        "engine binds into a GPU job's algorithm sandbox (docs/gpu.md).",
    )
    argo: ArgoSettings = ArgoSettings()

    def runtime_for(self, image: str) -> RuntimeSettings:
        """The runtime the local engine runs ``image`` with: the configured one with the longest matching image
        prefix; UnsupportedImageError when none matches (the provider refuses such a job at start)."""
        matches = [runtime for runtime in self.runtimes if image.startswith(runtime.image_prefix)]
        if not matches:
            known = ", ".join(runtime.image_prefix for runtime in self.runtimes) or "none"
            raise UnsupportedImageError(f"image {image!r} has no local runtime (configured prefixes: {known})")
        return max(matches, key=lambda runtime: len(runtime.image_prefix))


class MetricsSettings(BaseModel):
    """Prometheus metrics (docs/metrics.md). They carry no secret, DID, address or URL, but tell how busy the
    node is: keep them off the public ingress."""

    enabled: bool = Field(
        default=True, description="Collect and serve metrics (the provider's GET /metrics, the engine's port)."
    )
    provider_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve the provider's metrics on this port (bound to C2D_HOST) instead of GET /metrics on the "
        "public API port.",
    )
    engine_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="`c2d engine` serves its metrics on this port (bound to C2D_HOST); unset: not served. An engine "
        "embedded in the provider is in the provider's metrics.",
    )
    cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Job counts read from Postgres are reused this long (a scrape storm costs one read).",
    )


class Settings(BaseSettings):
    """All settings of the node. Environment: ``C2D_<FIELD>`` or ``C2D_<GROUP>__<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="C2D_",
        env_nested_delimiter="__",
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        validate_default=True,
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    host: str = Field(default="127.0.0.1", description="Address every embedded server binds to.")
    npm_dir: Path = Field(
        default_factory=_default_npm_dir, description="node_modules with the Ocean contracts and anvil."
    )
    postgres: PostgresSettings = PostgresSettings()
    chain: ChainSettings = ChainSettings()
    provider: ProviderSettings = ProviderSettings()
    storage: StorageSettings = StorageSettings()
    fetch: FetchSettings = FetchSettings()
    engine: EngineSettings = EngineSettings()
    metrics: MetricsSettings = MetricsSettings()
    environments: list[ComputeEnvironment] = Field(default_factory=default_environments)

    @field_validator("data_dir", "npm_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _refuse_dev_keys(self) -> Settings:
        if self.chain.embedded:
            return self
        for name, secret in (
            ("C2D_PROVIDER__PRIVATE_KEY", self.provider.private_key),
            ("C2D_CHAIN__DEPLOYER_KEY", self.chain.deployer_key),
        ):
            if secret.get_secret_value().lower() in ANVIL_KEYS:
                raise ValueError(f"{name} is a public anvil development key; set a real key to use an external chain")
        return self

    @model_validator(mode="after")
    def _storage_configured(self) -> Settings:
        for env in self.environments:
            kind = self.result_storage(env)
            if kind == "s3" and not self.storage.s3.configured:
                raise ValueError(
                    f"environment {env.id!r} stores results in S3: set C2D_STORAGE__S3__ENDPOINT, "
                    "C2D_STORAGE__S3__ACCESS_KEY and C2D_STORAGE__S3__SECRET_KEY"
                )
            if kind == "ipfs" and not self.storage.ipfs.api_url:
                raise ValueError(f"environment {env.id!r} stores results in IPFS: set C2D_STORAGE__IPFS__API_URL")
        if self.storage.s3.results_bucket in self.storage.s3.input_buckets:
            raise ValueError("C2D_STORAGE__S3__INPUT_BUCKETS must not list the results bucket")
        return self

    def result_storage(self, env: ComputeEnvironment) -> str:
        """Where ``env``'s results go: its own ``storage`` or the node's backend."""
        return env.storage or self.storage.backend

    # Derived locations (one place, so every component agrees on the layout of the data dir).
    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pg_data_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def chain_dir(self) -> Path:
        return self.data_dir / "chain"

    @property
    def address_file(self) -> Path:
        return self.chain.address_file or self.chain_dir / "address.json"

    @property
    def store_dir(self) -> Path:
        return self.storage.local_dir or self.data_dir / "store"

    def environment(self, env_id: str) -> ComputeEnvironment | None:
        return next((env for env in self.environments if env.id == env_id), None)

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def rpc_url(self) -> str:
        return self.chain.rpc_url or f"http://{self.host}:{self.chain.port}"

    @property
    def postgres_dsn(self) -> str:
        if self.postgres.dsn:
            return self.postgres.dsn
        return (
            f"host={self.host} port={self.postgres.port} dbname={self.postgres.database} "
            f"user={self.postgres.user} connect_timeout=5"
        )

    @property
    def provider_url(self) -> str:
        return self.provider.public_url or f"http://{self.host}:{self.provider.port}"


def load_settings(**overrides: object) -> Settings:
    """Read the settings once (environment, ``.env``), with explicit overrides for tests and the CLI."""
    return Settings(**overrides)  # type: ignore[arg-type]
