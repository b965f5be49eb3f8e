"""Publishing the result to a Hugging Face Hub dataset repo.

- `check_output_repo` runs before any job (the workflow's onstart): a token that is missing,
  invalid or read-only, or a repo in someone else's namespace, stops the run with one line
  before hours of GPU work; a missing repo is created (private unless configured otherwise).
- `publish` uploads the chunk files, stats.json and the card in as few commits as possible
  (one per `MAX_FILES_PER_COMMIT` files), skips files the repo already has (the client compares
  content hashes, so an unchanged rerun makes no commit), and retries the commit itself on 429
  and 5xx, which huggingface_hub does not do on its non-Xet path.

The token comes from the usual places (`HF_TOKEN`, `hf auth login`) and is never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataforge import layout
from dataforge.errors import RETRY_STATUS, DataforgeError

log = logging.getLogger("dataforge.hub")

MAX_FILES_PER_COMMIT = 1000  # the Hub's guidance: keep a commit to a few thousand files
WRITE_ROLES = {"write", "admin", "fineGrained"}


class HubError(DataforgeError):
    """A Hub problem the user must fix (token, rights, repo)."""


def _status(error: Exception) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def check_output_repo(repo: str, private: bool) -> str:
    """Check the token can write to `repo` (creating it if missing); return `user/name`."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import get_token

    if not get_token():
        raise HubError(
            f"output.repo is {repo!r} but no Hugging Face token was found: set HF_TOKEN or run "
            "`hf auth login` (or set output.repo: null to keep the result local)"
        )
    api = HfApi()
    try:
        me = api.whoami()
    except HfHubHTTPError as e:
        raise HubError(
            f"the Hugging Face token was refused (HTTP {_status(e)}): check HF_TOKEN"
        ) from None
    role = (me.get("auth", {}).get("accessToken") or {}).get("role")
    if role not in WRITE_ROLES:
        raise HubError(
            f"the Hugging Face token of {me['name']!r} is {role or 'not'}-only, it cannot publish "
            f"to {repo!r}: use a token with write access"
        )
    repo_id = repo if "/" in repo else f"{me['name']}/{repo}"
    owner = repo_id.split("/")[0]
    namespaces = {me["name"], *(o.get("name") for o in me.get("orgs", []))}
    if owner not in namespaces:
        raise HubError(
            f"output.repo {repo_id!r} belongs to {owner!r}, which the token of {me['name']!r} "
            f"cannot write to (its namespaces: {', '.join(sorted(n for n in namespaces if n))})"
        )
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    except HfHubHTTPError as e:
        raise HubError(f"cannot create the Hub dataset repo {repo_id!r}: {e}") from None
    return repo_id


def files_to_publish(workdir: Path) -> list[Path]:
    """The chunk files first, then stats.json, the card's figures and the card (last)."""
    data = list(layout.chunk_files(workdir).values())
    figures = [workdir / f for f in layout.FIGURES.values()]
    return [*data, workdir / layout.STATS, *figures, workdir / layout.CARD]


def with_retries(
    call: Callable[[], Any], what: str, attempts: int = 6, sleep: Callable = time.sleep
) -> Any:
    """`call()`, retried with exponential backoff (or `Retry-After`) on 408, 429 and 5xx."""
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(1, attempts + 1):
        try:
            return call()
        except HfHubHTTPError as e:
            status = _status(e)
            if status not in RETRY_STATUS or attempt == attempts:
                raise HubError(f"{what} failed (HTTP {status}): {e}") from None
            headers = getattr(e.response, "headers", {}) or {}
            try:
                delay = float(headers.get("Retry-After", ""))
            except ValueError:
                delay = min(2.0 ** (attempt - 1), 60.0)
            log.warning(
                "%s: HTTP %s from the Hub, retrying in %.1f s (attempt %d of %d)",
                what, status, delay, attempt, attempts,
            )  # fmt: skip
            sleep(delay)
    raise AssertionError("unreachable")


def publish(
    workdir: Path, repo_id: str, message: str, files: list[Path] | None = None
) -> dict[str, Any]:
    """Upload the results of the run in `workdir` (or just `files`, paths under results/);
    return what was committed. Paths in the repo are relative to results/."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    files = files_to_publish(workdir) if files is None else files
    results = workdir / layout.RESULTS
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise HubError(f"cannot publish: missing {', '.join(missing)}")
    commits = []
    batches = [
        files[i : i + MAX_FILES_PER_COMMIT] for i in range(0, len(files), MAX_FILES_PER_COMMIT)
    ]
    for n, batch in enumerate(batches, 1):
        ops = [
            CommitOperationAdd(path_in_repo=str(p.relative_to(results)), path_or_fileobj=str(p))
            for p in batch
        ]
        summary = message if len(batches) == 1 else f"{message} ({n}/{len(batches)})"

        def commit(ops: list = ops, summary: str = summary) -> Any:
            return api.create_commit(repo_id, ops, commit_message=summary, repo_type="dataset")

        info = with_retries(commit, f"commit {n} of {len(batches)} to {repo_id}")
        commits.append(getattr(info, "oid", None))
    url = f"{api.endpoint}/datasets/{repo_id}"
    log.info("published %d files to %s (commits: %s)", len(files), url, commits)
    return {"repo": repo_id, "url": url, "commits": commits, "files": len(files)}


class PartialPublisher:
    """Publishes the chunk files finished so far, each time `every` more are done, from a
    daemon thread of the submitting process (local and Slurm runs alike: it only reads
    results/data/, where every file that exists is complete)."""

    def __init__(self, workdir: Path, repo_id: str, every: int, poll_s: float = 5.0) -> None:
        import threading

        self.workdir, self.repo_id, self.every, self.poll_s = workdir, repo_id, every, poll_s
        self.published = len(layout.chunk_files(workdir))
        self.thread = threading.Thread(target=self.loop, name="dataforge-publish", daemon=True)

    def start(self) -> PartialPublisher:
        self.thread.start()
        return self

    def loop(self) -> None:
        while True:
            time.sleep(self.poll_s)
            done = list(layout.chunk_files(self.workdir).values())
            if len(done) - self.published < self.every:
                continue
            try:
                publish(self.workdir, self.repo_id, f"dataforge: {len(done)} chunks so far", done)
                self.published = len(done)
            except Exception as e:  # never stop the run for a partial publish
                log.warning("partial publish to %s failed: %s", self.repo_id, e)
