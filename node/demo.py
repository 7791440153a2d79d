"""``c2d demo``: the whole Compute-to-Data story on the embedded stack, through the provider API.

A data owner publishes a weather dataset that trusts one algorithm (by DID, files and container
checksums); an algorithm author publishes that algorithm; a consumer initializes the job (signed
provider fees), orders both on chain, starts the job through the API, follows its status, downloads
the result. The dataset never leaves the node; only the summary does.

Then the same node serves the current Ocean client: the unmodified ocean.js 8.6.2 (tests/oceanjs/flow.mjs,
installed by ``make setup``) publishes through the node, runs a free job and an escrow-paid one. For that the
demo's environments get a free tier and prices where they have none.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from eth_account import Account

from c2d.chain.artifacts import Artifacts
from c2d.chain.client import Chain
from c2d.chain.deploy import read_address_file
from c2d.chain.signing import ProviderFee
from c2d.chain.transactions import ONE_TOKEN, mint_datatokens, start_order
from c2d.environments import ComputeEnvironment, FreeTier, ResourceTerms
from c2d.exceptions import C2DError
from c2d.settings import ANVIL_KEYS, Settings
from c2d.stack.stack import Stack

if TYPE_CHECKING:
    from node.wiring import Node
    from provider.client import ProviderClient
    from provider.models import ComputeStatus

Echo = Callable[[str], None]
CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim", "checksum": "sha256:" + "0" * 64}
OCEAN_JS_FLOW = Path(__file__).resolve().parents[1] / "tests" / "oceanjs" / "flow.mjs"
OCEAN_JS_STEPS = ("publish", "envs", "free", "paid")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _serve(folder: Path, host: str) -> Iterator[str]:
    """The data owner's file server (only the node fetches from it)."""
    server = ThreadingHTTPServer((host, 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()


def run_demo(settings: Settings, echo: Echo, timeout: float = 120) -> None:
    from node.wiring import Node

    if not settings.chain.embedded:
        raise C2DError("the demo uses anvil's development accounts: run it on the embedded chain")
    data = resources.files("node") / "demo_data"
    with Stack(settings, echo), resources.as_file(data) as folder, _serve(folder, settings.host) as files_url:
        # The data owner's server is on loopback, which the node refuses to fetch from unless allowed.
        allow = [*settings.fetch.allow_hosts, urlsplit(files_url).netloc]
        fetch = settings.fetch.model_copy(update={"allow_hosts": allow})
        environments = [_with_free_tier_and_prices(env) for env in settings.environments]
        settings = settings.model_copy(update={"fetch": fetch, "environments": environments})
        with Node(settings) as node:
            _publish_order_and_run(settings, folder, files_url, echo, timeout)
            _ocean_js_story(settings, files_url, echo, node)


def _with_free_tier_and_prices(env: ComputeEnvironment) -> ComputeEnvironment:
    """``env`` with a free tier, and a price for its cpu (1 Ocean per core-minute) when it has no prices."""
    update: dict[str, object] = {}
    if env.free is None:
        update["free"] = FreeTier()
    if not any(terms.price for terms in env.resources.values()):
        update["resources"] = {**env.resources, "cpu": ResourceTerms(price=1.0)}
    return env.model_copy(update=update)


def _ocean_js_story(settings: Settings, files_url: str, echo: Echo, node: Node) -> None:
    """ocean.js 8.6.2, unmodified, against the same node: publish, environments, a free job, an escrow-paid job,
    then the node's settlement of that job's escrow lock."""
    node_bin = shutil.which("node")
    if node_bin is None or not (OCEAN_JS_FLOW.parent / "node_modules" / "@oceanprotocol" / "lib").is_dir():
        echo("ocean.js part skipped: it needs Node.js and `make setup` (npm ci in tests/oceanjs)")
        return
    echo("now the current Ocean client, ocean.js 8.6.2 (unmodified), against the same node:")
    env = {
        **os.environ,
        "RPC": settings.rpc_url,
        "NODE_URL": settings.provider_url,
        "ADDRESS_FILE": str(settings.address_file),
        "PUBLISHER_KEY": ANVIL_KEYS[2],
        "CONSUMER_KEY": ANVIL_KEYS[4],
        "OCEAN_MINTER_KEY": settings.chain.deployer_key.get_secret_value(),
        "DATA_URL": f"{files_url}/weather.csv",
        "ALGO_URL": f"{files_url}/count_rows.py",
    }
    with subprocess.Popen(
        [node_bin, str(OCEAN_JS_FLOW), *OCEAN_JS_STEPS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as flow:
        assert flow.stdout is not None
        report: dict[str, object] = {}
        for line in flow.stdout:
            if line.startswith("{"):
                report = json.loads(line)
            elif line.startswith("[ocean.js]") and not line.startswith("[ocean.js]    "):
                echo("  " + line.rstrip())
    if flow.returncode != 0 or "error" in report:
        raise C2DError(f"the ocean.js flow failed: {json.dumps(report.get('error'))}")
    steps = report.get("steps")
    assert isinstance(steps, dict)
    echo(f"  free job {steps['free']['jobId']}: {steps['free']['output']}")
    paid = steps["paid"]
    locked = int(paid["payment"]["amount"]) / 10**18
    echo(
        f"  paid job {paid['jobId']}: {paid['output']}; {locked:g} OCEAN locked in the escrow ({paid['lockTx'][:18]}…)"
    )
    node.settler.run_once()  # what the node does every C2D_PROVIDER__ESCROW_SETTLE_SECONDS
    row = node.settler.payments.locks.get(str(paid["jobId"]))
    if row is not None and row.state == "claimed":
        cost = (row.cost_wei or 0) / 10**18
        echo(
            f"  settled: the node claimed {cost:g} OCEAN for the minute it ran; {locked - cost:g} back to the consumer"
        )


def _publish_order_and_run(settings: Settings, folder: Path, files_url: str, echo: Echo, timeout: float) -> None:
    from provider.assets import container_checksum
    from provider.client import ProviderClient
    from provider.models import ComputeAlgorithm, ComputeInput
    from provider.publishing import publish_asset

    echo(f"provider API on {settings.provider_url} (docs: {settings.provider_url}/api/docs)")
    chain = Chain(settings.rpc_url, Artifacts(settings.npm_dir))
    addresses = read_address_file(settings.address_file)
    assert addresses is not None
    client = ProviderClient(settings.provider_url)
    provider = Account.from_key(settings.provider.private_key.get_secret_value()).address
    publisher, consumer = Account.from_key(ANVIL_KEYS[2]), Account.from_key(ANVIL_KEYS[3])
    env = client.environments(chain.chain_id)[0]

    publish = functools.partial(publish_asset, chain, addresses, client, publisher, settings.provider_url, provider)
    algorithm = publish(
        "weather summary", [f"{files_url}/summary.py"], kind="algorithm", service_type="access", container=CONTAINER
    )
    echo(f"published algorithm {algorithm.did[:24]}… (indexed by the node)")
    trusted = {
        "did": algorithm.did,
        "filesChecksum": hashlib.sha256((folder / "summary.py").read_bytes()).hexdigest(),
        "containerSectionChecksum": container_checksum(CONTAINER),
    }
    compute = {
        "allowRawAlgorithm": False,
        "publisherTrustedAlgorithms": [trusted],
        "publisherTrustedAlgorithmPublishers": [],
    }
    dataset = publish("city weather", [f"{files_url}/weather.csv"], compute=compute)
    echo(f"published dataset {dataset.did[:24]}… trusting only that algorithm")

    answer = client.initialize_compute(
        consumer.address,
        env.id,
        int(time.time()) + 3600,
        [ComputeInput(documentId=dataset.did, serviceId="svc-0")],
        ComputeAlgorithm(documentId=algorithm.did, serviceId="svc-0"),
    )
    txs = []
    for asset, item in ((dataset, answer.datasets[0]), (algorithm, answer.algorithm)):
        assert item is not None and item.provider_fee is not None  # new orders: a fee to pay for each
        fee = ProviderFee.from_wire(item.provider_fee.model_dump(by_alias=True))
        mint_datatokens(chain, publisher, asset.datatoken, consumer.address, ONE_TOKEN)
        tx, _ = start_order(chain, consumer, asset.datatoken, env.consumer_address, 0, fee)
        txs.append(tx)
    echo(f"consumer ordered both (provider fees signed by the node): {txs[0][:18]}…, {txs[1][:18]}…")

    job = client.start_compute(
        consumer,
        env.id,
        ComputeInput(documentId=dataset.did, serviceId="svc-0", transferTxId=txs[0]),
        ComputeAlgorithm(documentId=algorithm.did, serviceId="svc-0", transferTxId=txs[1]),
    )
    echo(f"job {job.job_id} started through the API")
    status = _follow(client, consumer.address, job.job_id, echo, timeout)
    with tempfile.TemporaryDirectory() as tmp:
        for index, result in enumerate(status.results or []):
            name = str(result.filename)
            dest = Path(tmp) / f"{index}-{Path(name).name}"
            size = client.download_result(consumer, job.job_id, index, dest)
            echo(f"  downloaded result {index}: {name} ({result.type}, {size} bytes)")
            if name == "summary.json":
                echo("result summary.json:")
                for line in dest.read_text().splitlines():
                    echo(f"  {line}")
    client.close()


def _follow(client: ProviderClient, consumer: str, job_id: str, echo: Echo, timeout: float) -> ComputeStatus:
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        status = client.status(consumer, job_id)
        if status.status != last:
            last = status.status
            echo(f"  status {status.status:>2}  {status.status_text.strip()}")
        if status.date_finished:
            if status.status != 70:
                raise C2DError(f"the demo job ended with status {status.status}: {status.status_text}")
            return status
        time.sleep(0.1)
    raise C2DError(f"the demo job did not finish within {timeout:.0f} s")
