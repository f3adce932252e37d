"""The one upload path to the Hub (model, processor and dataset alike): create the repo, then one ``create_commit``.

Flat, with no package imports, so the model's remote-code copy carries it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["folder_files", "upload_files", "HubUploadError", "is_hub_error", "hub_failure"]


class HubUploadError(ValueError):
    """An upload the Hub did not take: unreachable (no network, a bad ``HF_ENDPOINT``) or refused (token, rights)."""


def is_hub_error(err: BaseException) -> bool:
    """An error of the Hub client: huggingface_hub's HTTP and offline errors, the HTTP library's connection errors
    (they share no base class)."""
    from huggingface_hub import errors as hub_errors

    module = type(err).__module__.split(".")[0]
    return (isinstance(err, (ConnectionError, hub_errors.HfHubHTTPError, hub_errors.OfflineModeIsEnabled))
            or module in ("httpx", "httpx2", "httpcore", "requests", "urllib3"))


def hub_failure(err: BaseException, what: str, endpoint: str) -> BaseException:
    """``err`` as a ``HubUploadError`` saying that ``what`` failed at ``endpoint`` where it is an error of the Hub
    client (``is_hub_error``), else ``err`` itself (raise it as it is)."""
    if not is_hub_error(err):
        return err
    return HubUploadError(f"{what} at {endpoint} failed ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); check the network, HF_ENDPOINT and your "
                          f"token")


def folder_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Every file under ``folder`` (recursively), keyed by its POSIX path relative to the folder, sorted."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def upload_files(repo_id: str, files: Mapping[str, str | os.PathLike | bytes], *, repo_type: str = "model",
                 commit_message: str, commit_description: str | None = None, token: bool | str | None = None,
                 private: bool | None = None, revision: str | None = None, create_pr: bool = False,
                 replace_under: Sequence[str] = ()):
    """Upload ``files`` (path in the repo -> a local file or the bytes to write) to ``repo_id`` in one commit,
    creating the repo (and the ``revision`` branch) where needed; in the same commit, delete the repo's files under
    ``replace_under`` (folder prefixes ending in ``/``) that ``files`` does not hold (an earlier upload's shards).
    Returns ``huggingface_hub``'s ``CommitInfo``."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    if not files:
        raise ValueError(f"upload to {repo_id!r}: no files to upload")
    api = HfApi(token=token)
    try:
        repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
        if revision is not None and not revision.startswith("refs/pr"):
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=path,
                                         path_or_fileobj=data if isinstance(data, bytes) else str(data))
                      for path, data in files.items()]
        if replace_under:
            stale = [path for path in api.list_repo_files(repo_id, repo_type=repo_type, revision=revision)
                     if path.startswith(tuple(replace_under)) and path not in files]
            operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
        return api.create_commit(repo_id, operations, repo_type=repo_type, commit_message=commit_message,
                                 commit_description=commit_description, revision=revision, create_pr=create_pr)
    except Exception as err:
        failure = hub_failure(err, f"upload to the Hub {repo_type} repository {repo_id!r}", api.endpoint)
        if failure is err:
            raise
        raise failure from err
