"""A failure in words for people, and its raw detail for operators.

A storage server's own error text (S3's `code`, `resource`, `request_id`, `host_id`, ...) helps
whoever reads the logs, /ops or the API's `error_detail`; on a job card it is noise that
hides what happened. Every message a job shows goes through `plain_words`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from backend.models import SkippedFile, SkipReason
from backend.storage import NoSuchObject, StorageError

# Longer messages are cut: a card has room for a sentence, not a stack of causes.
MAX_WORDS_LENGTH = 240
# miniopy-async's S3Error: "S3 operation failed; code: X, message: Y, resource: ..., request_id:
# ..., host_id: ..."; botocore's and others' "(RequestId: ...)" and "<RequestId>" fragments.
_S3_DUMP = re.compile(r"S3 operation failed; code: [^,]*, message: (?P<message>[^,]*)(?:,.*)?")
_SERVER_IDS = re.compile(
    r"[,;(\s]*\b(request_?id|host_?id|x-amz-request-id|x-amz-id-2|resource|bucket_name|"
    r"object_name)\b\s*[:=].*$",
    re.IGNORECASE,
)
_XML = re.compile(r"<\?xml.*$|<Error>.*$", re.DOTALL)


class Failure(NamedTuple):
    """`message`: a sentence for people; `detail`: the raw text, for logs and operators."""

    message: str
    detail: str


def plain_words(text: str) -> str:
    """`text` without a storage server's dump: its own message kept, ids and XML dropped."""
    text = _XML.sub("", text)
    text = _S3_DUMP.sub(lambda match: match.group("message").strip(), text)
    text = _SERVER_IDS.sub("", text.splitlines()[0] if text.strip() else "").strip(" ,;:(")
    if len(text) > MAX_WORDS_LENGTH:
        text = text[: MAX_WORDS_LENGTH - 1].rstrip() + "…"
    return text


def describe(exc: BaseException) -> Failure:
    """The failure `exc` in words, and its full text as detail."""
    raw = str(exc) or type(exc).__name__
    detail = raw if isinstance(exc, StorageError) else f"{type(exc).__name__}: {raw}"
    if isinstance(exc, NoSuchObject):
        message = "a requested file is no longer available in the file store"
    elif isinstance(exc, StorageError):
        message = plain_words(raw) or "the file store failed"
    else:
        message = plain_words(detail) or type(exc).__name__
    return Failure(message, detail)


# What a person reads for each reason a file was left out.
SKIP_REASON_TEXT: dict[SkipReason, str] = {
    SkipReason.NOT_FOUND: "no longer available",
    SkipReason.UNNAMABLE: "its name cannot be a file name",
}
# A notice names this many files, then counts the rest.
_NAMED_SKIPS = 5


def describe_skipped(skipped: Sequence[SkippedFile]) -> str:
    """`1 file could not be included: invoices-q3.zip (no longer available)`; "" for none."""
    if not skipped:
        return ""
    count = len(skipped)
    named = [
        f"{file.name or f'file {file.file_id}'} ({SKIP_REASON_TEXT.get(file.reason, file.reason)})"
        for file in skipped[:_NAMED_SKIPS]
    ]
    if count > _NAMED_SKIPS:
        named.append(f"and {count - _NAMED_SKIPS} more")
    return f"{count} file{'s' if count != 1 else ''} could not be included: {', '.join(named)}"
