"""A queue double that records every call a JobRunner makes (what would reach Convex)."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from fondation_worker.models import Doc, Offer, PublicJob, RetryReply, Summary


class RecordingQueue:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.docs: list[Doc] = []
        self.fail_upload: Exception | None = None

    def _record(self, name: str, **kw: Any) -> None:
        self.calls.append((name, kw))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def start(self, job_id: str, lease_token: SecretStr) -> None:
        self._record("start")

    def upload_docs(self, job_id: str, lease_token: SecretStr, run_id: str, docs: Any) -> int:
        if self.fail_upload:
            raise self.fail_upload
        self.docs.extend(docs)
        self._record("upload", run_id=run_id, n=len(docs))
        return len(docs)

    def complete(
        self,
        job_id: str,
        lease_token: SecretStr,
        run_id: str,
        summary: Summary,
        docs: Any = (),
        offer: Offer | None = None,
    ) -> None:
        if self.fail_upload:
            raise self.fail_upload
        self.docs.extend(docs)
        self._record("complete", run_id=run_id, summary=summary, n=len(docs), offer=offer)

    def retry_or_fail(
        self,
        job_id: str,
        lease_token: SecretStr,
        error: str,
        kind: str,
        retry_after_ms: int | None = None,
        offer: Offer | None = None,
    ) -> RetryReply:
        self._record(
            "retry_or_fail", error=error, kind=kind, retry_after_ms=retry_after_ms, offer=offer
        )
        status = "pending" if kind in ("auth", "usage_limit", "disk", "shutdown") else "failed"
        if kind in ("permanent", "invalid_repository", "repository_not_found"):
            status = "dead"
        return RetryReply.model_validate({"status": status})

    def release(self, job_id: str, lease_token: SecretStr, reason: str) -> None:
        self._record("release", reason=reason)

    def acknowledge_cancel(
        self, job_id: str, lease_token: SecretStr, offer: Offer | None = None
    ) -> None:
        self._record("acknowledge_cancel", offer=offer)

    def get_job(self, job_id: str, lease_token: SecretStr | None = None) -> PublicJob | None:
        return None
