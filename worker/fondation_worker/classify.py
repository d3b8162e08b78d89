"""Pure classification of a Claude CLI run: ok, auth, usage_limit, transient or permanent.

The CLI's failure texts are matched with several variants per class, because its wording
changes between versions and its exit codes carry no meaning beyond zero/non-zero (the
texts it recognizes are listed in tests/unit/test_classify.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, ValidationError

from .scrub import drop_tracebacks
from .units import milliseconds

Kind = Literal["ok", "auth", "usage_limit", "transient", "permanent"]

DEFAULT_USAGE_LIMIT_RETRY_MS = 30 * 60 * 1000
MIN_RETRY_MS = 60 * 1000
MAX_RETRY_MS = 8 * 24 * 3600 * 1000


class ClaudeResult(BaseModel):
    """The ``type: "result"`` object printed by ``claude -p --output-format json``."""

    model_config = ConfigDict(extra="allow")

    type: str
    subtype: str | None = None
    is_error: bool = False
    result: str | None = None
    duration_ms: float | None = None
    num_turns: int | None = None
    session_id: str | None = None
    total_cost_usd: float | None = None
    terminal_reason: str | None = None
    api_error_status: int | None = None


@dataclass(frozen=True)
class ClaudeRun:
    """What a finished (or killed) ``claude`` process left behind."""

    exit_code: int | None
    stdout_tail: str
    stderr_tail: str
    timed_out: bool = False
    output_too_large: bool = False


@dataclass(frozen=True)
class Classification:
    kind: Kind
    reason: str
    retry_after_ms: int | None = None
    timed_out: bool = False
    result: ClaudeResult | None = None

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


_AUTH = re.compile(
    r"not logged in|please run /login|invalid api key|oauth token has expired|"
    r"oauth token (?:has been )?revoked|login expired|authentication_failed|"
    r"authentication_error|could not resolve authentication method|invalid x-api-key|"
    r"invalid bearer token|credit balance is too low",
    re.IGNORECASE,
)
_USAGE = re.compile(
    r"hit your (?:\w+ )?limit|session limit|weekly limit|usage limit|"
    r"(?:5|five)-hour limit|opus limit|out of extra usage|limit reached\W+resets?",
    re.IGNORECASE,
)
_PERMANENT_TEXT = re.compile(r"prompt is too long|context length exceeded", re.IGNORECASE)
_PERMANENT_SUBTYPES = frozenset({"error_max_turns", "error_max_budget_usd"})
_FLAG_ERROR = re.compile(
    r"(?im)^\s*error: (?:unknown option|option '.*' argument|missing required argument|"
    r"too many arguments|invalid|unknown command|required option)"
)
_TRANSIENT = re.compile(
    r"overloaded|request timed out|unable to connect to api|connection error|"
    r"econnreset|etimedout|socket hang up|fetch failed|api error: 5\d\d|"
    r"internal server error|service unavailable|bad gateway|rate_limit_error|rate limit",
    re.IGNORECASE,
)
_TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_RESET_EPOCH = re.compile(r"limit reached\|(\d{10})\b", re.IGNORECASE)
_RESET_ISO = re.compile(
    r"resets?\s+(?:at\s+)?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
    r"(?:Z|[+\-]\d{2}:?\d{2})?)",
    re.IGNORECASE,
)
_RESET_TEXT = re.compile(
    r"resets?\s+(?:at\s+|on\s+)?"
    r"(?:(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+"
    r"(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?:at\s+)?)?"
    r"(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)?"
    r"(?:\s*\((?P<tz>[A-Za-z0-9_+\-/]+)\))?",
    re.IGNORECASE,
)


def parse_result(stdout_tail: str) -> ClaudeResult | None:
    """The last JSON object with ``type == "result"`` in the output, if any.

    Handles ``--output-format json`` (one object) and ``stream-json`` (one per line).
    """
    text = stdout_tail.strip()
    if not text:
        return None
    candidates: list[str] = [text]
    candidates.extend(line.strip() for line in reversed(text.splitlines()) if line.strip())
    for candidate in candidates:
        if not candidate.startswith("{"):
            continue
        try:
            data: Any = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("type") == "result":
            try:
                return ClaudeResult.model_validate(data)
            except ValidationError:
                continue
    return None


def _zone(name: str | None, default: tzinfo) -> tzinfo:
    if not name:
        return default
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return default


def parse_reset_time(text: str, now: datetime) -> datetime | None:
    """When a usage limit resets, from texts like "resets 4:20am (Europe/Warsaw)".

    Also "Your limit will reset at 3pm (America/Bogota)", "resets Oct 9, 10am",
    "Claude AI usage limit reached|1750708800" and ISO timestamps. A time of day without a
    date means its next occurrence after ``now``. ``now`` must be timezone-aware; texts
    without a zone are read in ``now``'s zone.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    match = _RESET_EPOCH.search(text)
    if match:
        return datetime.fromtimestamp(int(match.group(1)), tz=UTC)
    match = _RESET_ISO.search(text)
    if match:
        raw = match.group(1).replace(" ", "T").replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=now.tzinfo)
    for match in _RESET_TEXT.finditer(text):
        hour = int(match.group("h"))
        minute = int(match.group("m") or 0)
        ampm = (match.group("ampm") or "").replace(".", "").lower()
        if ampm:
            if not 1 <= hour <= 12:
                continue
            hour = hour % 12 + (12 if ampm == "pm" else 0)
        elif match.group("m") is None and match.group("mon") is None:
            # A bare number ("resets 5") is too ambiguous to trust.
            continue
        if hour > 23 or minute > 59:
            continue
        zone = _zone(match.group("tz"), now.tzinfo)
        local_now = now.astimezone(zone)
        if match.group("mon"):
            month = _MONTHS[match.group("mon").lower()[:3]]
            day = int(match.group("day"))
            try:
                candidate = local_now.replace(
                    month=month, day=day, hour=hour, minute=minute, second=0, microsecond=0
                )
            except ValueError:
                continue
            if candidate < local_now - timedelta(hours=1):
                # A reset is in the future: "Jan 2" said in March means next year.
                candidate = candidate.replace(year=candidate.year + 1)
            return candidate
        candidate = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if candidate <= local_now:
            candidate += timedelta(days=1)
        return candidate
    return None


def retry_after_ms(reset_at: datetime | None, now: datetime) -> int:
    """Milliseconds to wait for a reset, bounded to [1 min, 8 days]; a default when unknown."""
    if reset_at is None:
        return DEFAULT_USAGE_LIMIT_RETRY_MS
    delta = milliseconds((reset_at - now).total_seconds())
    return max(MIN_RETRY_MS, min(MAX_RETRY_MS, delta))


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify(run: ClaudeRun, now: datetime) -> Classification:
    """Classify one ``claude -p`` run. ``now`` (aware) anchors usage-limit reset times."""
    result = parse_result(run.stdout_tail)
    # The reason is stored on the job: a crash's stack frames (install paths) never are.
    stderr = drop_tracebacks(run.stderr_tail)
    if run.output_too_large:
        return Classification("permanent", "claude printed more output than allowed", None)
    if run.timed_out:
        return Classification(
            "transient", "claude step killed by the worker's timeout", timed_out=True
        )

    texts = [stderr]
    if result is not None:
        texts.insert(0, result.result or "")
        texts.append(result.subtype or "")
    else:
        texts.insert(0, run.stdout_tail)
    blob = "\n".join(t for t in texts if t)

    failed = run.exit_code != 0 or result is None or result.is_error
    if not failed:
        assert result is not None
        if result.subtype in _PERMANENT_SUBTYPES:
            return Classification("permanent", f"claude stopped: {result.subtype}", result=result)
        return Classification("ok", "success", result=result)

    status = result.api_error_status if result is not None else None
    detail = _short((result.result if result is not None and result.result else blob) or "")

    if _AUTH.search(blob) or status in (401, 403):
        return Classification("auth", f"claude authentication failed: {detail}", result=result)
    terminal = result.terminal_reason if result is not None else None
    if _USAGE.search(blob) or terminal == "blocking_limit":
        reset = parse_reset_time(blob, now)
        return Classification(
            "usage_limit",
            f"claude usage limit: {detail}",
            retry_after_ms=retry_after_ms(reset, now),
            result=result,
        )
    if result is not None and result.subtype in _PERMANENT_SUBTYPES:
        return Classification("permanent", f"claude stopped: {result.subtype}", result=result)
    if _PERMANENT_TEXT.search(blob):
        return Classification("permanent", f"claude refused the job: {detail}", result=result)
    if result is None and run.exit_code == 1 and _FLAG_ERROR.search(stderr):
        return Classification("permanent", f"claude rejected its arguments: {_short(stderr)}")
    if status in _TRANSIENT_STATUS or _TRANSIENT.search(blob):
        return Classification("transient", f"claude API error: {detail}", result=result)
    if result is None:
        how = (
            f"killed by signal {-run.exit_code}"
            if run.exit_code is not None and run.exit_code < 0
            else f"exit code {run.exit_code}"
        )
        tail = _short(stderr or drop_tracebacks(run.stdout_tail), 200)
        return Classification("transient", f"claude failed without a result ({how}): {tail}")
    return Classification("transient", f"claude reported an error: {detail}", result=result)
