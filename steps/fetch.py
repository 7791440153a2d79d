"""input-fetch: stream every dataset file and the algorithm into Ocean's /data layout.

Usage: ``python -m steps.fetch --data /data`` with the instructions (a :class:`FetchSpec` as JSON) in
the environment variable ``C2D_FETCH_SPEC``. Exit codes: 0 ok, 31 a dataset failed, 32 the
algorithm failed, 75 a transient failure remained after retries, 2 bad instructions.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from pathlib import Path

from steps.common import ADMINLOGS, DDOS, INPUTS, LAYOUT, TRANSFORMATIONS, human_bytes, setup_logging
from steps.contract import FETCH_SPEC_ENV, did_folder
from steps.download import fetch_file, sources_for
from steps.exceptions import AlgorithmFetchError, FetchError, SpecError, StepError, TransientFetchError
from steps.fetch_plan import FetchPlan, FileToFetch, parse_fetch_spec


class Fetcher:
    def __init__(self, data: Path, spec: FetchPlan, log: logging.Logger) -> None:
        self.data = data
        self.spec = spec
        self.log = log
        self.budget = spec.max_bytes
        self.sources = sources_for(spec.access)

    def _get(self, file: FileToFetch, dest: Path, label: str) -> None:
        fetched = fetch_file(self.sources, file, dest, self.budget, self.log)
        self.budget -= fetched.size
        check = " (size and sha256 verified)" if file.checksum else ""
        self.log.info(f"  {label}: {human_bytes(fetched.size)} sha256 {fetched.sha256}{check}")

    def _write_ddo(self, did: str, ddo: dict[str, object] | None) -> None:
        if ddo is None:
            return
        target = self.data / DDOS / did_folder(did)
        alias = target.with_name(target.name + ".json")
        alias.unlink(missing_ok=True)  # a retried fetch starts over
        target.write_text(json.dumps(ddo, indent=2), encoding="utf-8")
        os.link(target, alias)

    def datasets(self) -> list[StepError]:
        errors: list[StepError] = []
        for dataset in self.spec.datasets:
            folder = self.data / INPUTS / did_folder(dataset.did)
            folder.mkdir(exist_ok=True)
            self.log.info(f"dataset {dataset.did}: {len(dataset.files)} file(s)")
            self._write_ddo(dataset.did, dataset.ddo)
            for index, file in enumerate(dataset.files):
                try:
                    self._get(file, folder / str(index), f"file {index}")
                except FetchError as exc:
                    self.log.error(f"  file {index}: {exc}")
                    errors.append(exc)
        return errors

    def algorithm(self) -> None:
        algo = self.spec.algorithm
        folder = self.data / TRANSFORMATIONS
        if algo.custom_data is not None:
            (self.data / INPUTS / "algoCustomData.json").write_text(json.dumps(algo.custom_data), encoding="utf-8")
        if algo.did:
            self._write_ddo(algo.did, algo.ddo)
        if algo.raw_code is not None:
            (folder / "algorithm").write_text(algo.raw_code, encoding="utf-8")
            self.log.info(f"algorithm: raw code, {len(algo.raw_code.encode())} bytes")
            return
        if not algo.files:
            raise AlgorithmFetchError("the algorithm has neither files nor raw code")
        self.log.info(f"algorithm {algo.did}: {len(algo.files)} file(s)")
        for index, file in enumerate(algo.files):
            name = "algorithm" if index == 0 else str(index)
            try:
                self._get(file, folder / name, f"file {index}")
            except TransientFetchError:
                raise
            except FetchError as exc:
                raise AlgorithmFetchError(f"algorithm file {index}: {exc}") from None

    def run(self) -> int:
        for name in LAYOUT:
            (self.data / name).mkdir(parents=True, exist_ok=True)
        self.log.info(f"input-fetch: {len(self.spec.datasets)} dataset(s), cap {human_bytes(self.spec.max_bytes)}")
        errors = self.datasets()
        if errors:
            transient = all(isinstance(error, TransientFetchError) for error in errors)
            total = sum(len(dataset.files) for dataset in self.spec.datasets)
            self.log.error(f"{len(errors)} of {total} dataset file(s) could not be fetched (see configure.log)")
            return TransientFetchError.exit_code if transient else FetchError.exit_code
        try:
            self.algorithm()
        except TransientFetchError as exc:
            self.log.error(f"the algorithm could not be fetched (transient): {exc}")
            return TransientFetchError.exit_code
        except AlgorithmFetchError as exc:
            self.log.error(f"the algorithm could not be fetched: {exc}")
            return exc.exit_code
        self.log.info("provisioning success")
        return 0


def load_spec(raw: str | None) -> FetchPlan:
    if not raw:
        raise SpecError(f"{FETCH_SPEC_ENV} is not set")
    return parse_fetch_spec(raw)


@functools.cache  # one per process: the warm step runner's children reuse the one it built
def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m steps.fetch", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the job's data volume")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    data: Path = args.data
    log = setup_logging("c2d.fetch", data / ADMINLOGS / "configure.log")
    try:
        spec = load_spec(os.environ.get(FETCH_SPEC_ENV))
        return Fetcher(data, spec, log).run()
    except StepError as exc:
        log.error(str(exc))
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
