"""Drive our node with the unmodified ocean.py 3.1.2 client (run with .venv-ocean/bin/python).

The README's compute-to-data flow: Alice publishes a dataset with a compute service and an algorithm,
trusts the algorithm on the dataset (ocean.py computes the checksums through our fileinfo) and
updates the DDO; Bob pays for the compute service (initializeCompute + startOrder), starts the job,
polls it and reads the output. Prints one JSON line with what happened. Configuration: environment
variables RPC_URL, PROVIDER_URL, ADDRESS_FILE, DATA_URL, ALGO_URL, ALICE_KEY, BOB_KEY.
"""

import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone

from ocean_lib.example_config import get_config_dict
from ocean_lib.models.compute_input import ComputeInput
from ocean_lib.ocean.ocean import Ocean
from ocean_lib.ocean.util import to_wei
from web3 import Web3


def main() -> None:
    config = get_config_dict(os.environ["RPC_URL"])
    config["METADATA_CACHE_URI"] = os.environ["PROVIDER_URL"]
    config["PROVIDER_URL"] = os.environ["PROVIDER_URL"]
    ocean = Ocean(config)
    w3: Web3 = config["web3_instance"]
    alice = w3.eth.account.from_key(os.environ["ALICE_KEY"])
    bob = w3.eth.account.from_key(os.environ["BOB_KEY"])

    (_, data_token, data_ddo) = ocean.assets.create_url_asset(
        "ocean.py dataset", os.environ["DATA_URL"], {"from": alice}, with_compute=True, wait_for_aqua=True
    )
    algo_metadata = {
        "created": "2026-11-22T00:00:00Z",
        "updated": "2026-11-22T00:00:00Z",
        "description": "counts rows",
        "name": "ocean.py algorithm",
        "type": "algorithm",
        "author": "alice",
        "license": "CC0: PublicDomain",
        "algorithm": {
            "language": "python",
            "format": "docker-image",
            "version": "0.1",
            "container": {
                "entrypoint": "python $ALGO",
                "image": "python",
                "tag": "3.11-slim",
                "checksum": "sha256:" + "1" * 64,
            },
        },
    }
    (_, algo_token, algo_ddo) = ocean.assets.create_url_asset(
        "ocean.py algorithm", os.environ["ALGO_URL"], {"from": alice}, metadata=algo_metadata, wait_for_aqua=True
    )
    compute_service = data_ddo.services[1]
    compute_service.add_publisher_trusted_algorithm(algo_ddo)  # checksums through our fileinfo
    data_ddo = ocean.assets.update(data_ddo, {"from": alice})

    data_token.mint(bob, to_wei(5), {"from": alice})
    algo_token.mint(bob, to_wei(5), {"from": alice})
    env = ocean.compute.get_free_c2d_environment(compute_service.service_endpoint, data_ddo.chain_id)
    datasets, algorithm = ocean.assets.pay_for_compute_service(
        datasets=[ComputeInput(data_ddo, compute_service)],
        algorithm_data=ComputeInput(algo_ddo, algo_ddo.services[0]),
        consume_market_order_fee_address=bob.address,
        tx_dict={"from": bob},
        compute_environment=env["id"],
        valid_until=int((datetime.now(timezone.utc) + timedelta(days=1)).timestamp()),  # noqa: UP017 (runs on 3.10)
        consumer_address=env["consumerAddress"],
    )
    job_id = ocean.compute.start(
        consumer_wallet=bob, dataset=datasets[0], compute_environment=env["id"], algorithm=algorithm
    )
    seen = []
    status = {}
    for _ in range(600):
        status = ocean.compute.status(data_ddo, compute_service, job_id, bob)
        if status["status"] not in seen:
            seen.append(status["status"])
        if status.get("dateFinished") and float(status["dateFinished"]) > 0:
            break
        time.sleep(0.1)
    output = ocean.compute.compute_job_result_logs(data_ddo, compute_service, job_id, bob)[0]
    logs = ocean.compute.compute_job_result_logs(data_ddo, compute_service, job_id, bob, "algorithmLog")
    print(
        json.dumps(
            {
                "job_id": job_id,
                "statuses": seen,
                "final": status["status"],
                "output": output.decode(),
                "algorithm_log": logs[0].decode() if logs else None,
                "dataset_did": data_ddo.did,
                "trusted": data_ddo.services[1].compute_values["publisherTrustedAlgorithms"],
            }
        )
    )


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # report the client's own error text to the test
        import traceback

        print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}))
        sys.exit(1)
