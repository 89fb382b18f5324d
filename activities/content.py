"""The content store: large text kept outside workflow history, behind `ContentRef`s (see workflows/content.py).

The edges store and resolve: `ConversationClient` stores a large tool result, user message or edited argument before
it is sent and resolves references in what it reads (events, history, approvals); the LLM activity resolves what
goes into a request and stores what the model wrote; the archive activity stores the older part of a transcript at
continue-as-new. Texts are stored as payloads through a `StorageDriver` (activities/payload_drivers.py), so the
same backend serves Temporal's external payload storage.

Recently used texts are cached in memory (they are immutable: the key is their hash), so an LLM call does not
fetch the same transcript segment or file again on every step; so are recently read transcript segments, parsed, so
that it does not parse them again either (a full 128k-token window spans several segments).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)
from temporalio.exceptions import ApplicationError

from activities.payload_drivers import ContentStoreUnavailable
from workflows.content import (
    INLINE_ARGUMENTS_LIMIT,
    INLINE_TEXT_LIMIT,
    OFFLOAD_VALUE_MIN,
    PREVIEW_CHARS,
    Content,
    json_size,
    ref_marker,
    refs_in,
    substitute_refs,
)
from workflows.model import (
    ARCHIVE_TRANSCRIPT_ACTIVITY,
    CONTENT_STORE_UNAVAILABLE_ERROR,
    ArchiveTranscriptInput,
    ChatMessage,
    ContentRef,
    PendingApproval,
    StreamChunk,
    ToolCall,
    TranscriptArchive,
    TranscriptSegment,
)

_ENCODING = b"binary/plain"
# Texts kept in memory per process, in characters (~128 MB of Python strings at most).
DEFAULT_CACHE_CHARS = 64 * 1024 * 1024
# Parsed transcript segments kept in memory per process, by the characters of their JSON (~20 MB parsed at most; a
# segment is ~72k characters, and a full 128k-token window spans about five).
DEFAULT_SEGMENT_CACHE_CHARS = 8 * 1024 * 1024


class ContentStore:
    """Store and read texts by reference through one storage driver.

    Args:
        driver: Where the texts live.
        cache_chars: How many characters of recently used texts to keep in memory.
        segment_cache_chars: How many characters (of their JSON) of recently read transcript segments to keep in
            memory parsed.
    """

    def __init__(
        self,
        driver: StorageDriver,
        *,
        cache_chars: int = DEFAULT_CACHE_CHARS,
        segment_cache_chars: int = DEFAULT_SEGMENT_CACHE_CHARS,
    ) -> None:
        self.driver = driver
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_chars = 0
        self._cache_limit = cache_chars
        self._segments: OrderedDict[str, tuple[TranscriptSegment, int]] = OrderedDict()
        self._segment_chars = 0
        self._segment_limit = segment_cache_chars

    # --- texts ---

    async def put(self, text: str, *, media: str = "text") -> ContentRef:
        """Store a text; the reference is the same for the same text."""
        data = text.encode("utf-8", "surrogatepass")
        payload = Payload(metadata={"encoding": _ENCODING}, data=data)
        [claim] = await self.driver.store(StorageDriverStoreContext(), [payload])
        sha256 = hashlib.sha256(data).hexdigest()
        self._remember(sha256, text)
        return ContentRef(
            driver=self.driver.name(),
            claim=dict(claim.claim_data),
            sha256=sha256,
            size=len(text),
            preview=text[:PREVIEW_CHARS],
            media="json" if media == "json" else "text",
        )

    async def get(self, ref: ContentRef) -> str:
        return (await self.get_many([ref]))[ref.sha256]

    async def get_many(self, refs: Iterable[ContentRef]) -> dict[str, str]:
        """The texts of `refs`, keyed by their sha256 (one driver call for all that are not cached)."""
        texts: dict[str, str] = {}
        missing: dict[str, ContentRef] = {}
        for ref in refs:
            cached = self._cache.get(ref.sha256)
            if cached is not None:
                self._cache.move_to_end(ref.sha256)
                texts[ref.sha256] = cached
            else:
                missing[ref.sha256] = ref
        if missing:
            claims = [StorageDriverClaim(claim_data=ref.claim) for ref in missing.values()]
            payloads = await self.driver.retrieve(StorageDriverRetrieveContext(), claims)
            for sha256, payload in zip(missing, payloads, strict=True):
                text = payload.data.decode("utf-8", "surrogatepass")
                texts[sha256] = text
                self._remember(sha256, text)
        return texts

    def _remember(self, sha256: str, text: str) -> None:
        if len(text) > self._cache_limit // 4 or sha256 in self._cache:
            return
        self._cache[sha256] = text
        self._cache_chars += len(text)
        while self._cache_chars > self._cache_limit:
            _, dropped = self._cache.popitem(last=False)
            self._cache_chars -= len(dropped)

    # --- storing what an edge receives ---

    async def offload_text(self, text: Content, limit: int = INLINE_TEXT_LIMIT) -> Content:
        """`text` itself when it is short, else its reference."""
        if isinstance(text, str) and len(text) > limit:
            return await self.put(text)
        return text

    async def offload_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Tool arguments with their largest string values stored by reference until their JSON fits inline.

        Arguments that are still too large with every long string referenced (a huge array of short items) are
        stored whole, as one JSON reference.
        """
        size = json_size(arguments)
        if size <= INLINE_ARGUMENTS_LIMIT:
            return arguments
        result = dict(arguments)
        for key, value in sorted(result.items(), key=lambda item: -json_size(item[1])):
            if size <= INLINE_ARGUMENTS_LIMIT:
                break
            if isinstance(value, str) and len(value) >= OFFLOAD_VALUE_MIN:
                marker = ref_marker(await self.put(value))
                size += json_size(marker) - json_size(value)
                result[key] = marker
        if size > INLINE_ARGUMENTS_LIMIT:
            return ref_marker(await self.put(json.dumps(arguments, ensure_ascii=False), media="json"))
        return result

    async def offload_calls(self, calls: list[ToolCall]) -> list[ToolCall]:
        return [call.model_copy(update={"arguments": await self.offload_arguments(call.arguments)}) for call in calls]

    # --- resolving what a person, an IDE or a provider is handed ---

    async def resolve_text(self, content: Content) -> str | None:
        if isinstance(content, ContentRef):
            return await self.get(content)
        return content

    async def resolve_value(self, value: Any) -> Any:
        """A JSON-like value with every reference marker replaced by its content (a whole-arguments reference too)."""
        refs = refs_in(value)
        if not refs:
            return value
        return substitute_refs(value, await self.get_many(refs))

    async def resolve_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        resolved = await self.resolve_value(arguments)
        return resolved if isinstance(resolved, dict) else {"value": resolved}

    async def resolve_message(self, message: ChatMessage) -> ChatMessage:
        update: dict[str, Any] = {}
        if isinstance(message.content, ContentRef):
            update["content"] = await self.get(message.content)
        if any(refs_in(call.arguments) for call in message.tool_calls):
            update["tool_calls"] = [
                call.model_copy(update={"arguments": await self.resolve_arguments(call.arguments)})
                for call in message.tool_calls
            ]
        return message.model_copy(update=update) if update else message

    async def resolve_messages(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        refs = [m.content for m in messages if isinstance(m.content, ContentRef)]
        refs += [ref for m in messages for call in m.tool_calls for ref in refs_in(call.arguments)]
        if refs:
            await self.get_many(refs)  # one round trip; resolve_message then reads from the cache
        return [await self.resolve_message(message) for message in messages]

    async def resolve_chunk(self, chunk: StreamChunk) -> StreamChunk:
        update: dict[str, Any] = {}
        for name in ("content", "token"):
            value = getattr(chunk, name)
            if isinstance(value, ContentRef):
                update[name] = await self.get(value)
        for name in ("arguments", "metadata"):
            value = getattr(chunk, name)
            if value and refs_in(value):
                update[name] = await self.resolve_value(value)
        return chunk.model_copy(update=update) if update else chunk

    async def resolve_approval(self, approval: PendingApproval) -> PendingApproval:
        update: dict[str, Any] = {}
        if refs_in(approval.arguments):
            update["arguments"] = await self.resolve_arguments(approval.arguments)
        if approval.edited_arguments and refs_in(approval.edited_arguments):
            update["edited_arguments"] = await self.resolve_arguments(approval.edited_arguments)
        return approval.model_copy(update=update) if update else approval

    # --- archived transcripts ---

    async def archive(self, request: ArchiveTranscriptInput) -> TranscriptArchive:
        """Store `request.messages` as the newest segment of the session's archived transcript."""
        segment = TranscriptSegment(first_seq=request.first_seq, messages=request.messages, previous=request.previous)
        head = await self.put(segment.model_dump_json(), media="json")
        previous = request.previous
        return TranscriptArchive(
            head=head,
            message_count=request.first_seq + len(request.messages),
            segments=(previous.segments if previous else 0) + 1,
        )

    async def segment(self, archive: TranscriptArchive) -> TranscriptSegment:
        """The newest segment of `archive`, parsed. Recently read segments are kept parsed (they are immutable, like
        every text here), so the result is shared with other readers: read it, never change it."""
        head = archive.head
        cached = self._segments.get(head.sha256)
        if cached is not None:
            self._segments.move_to_end(head.sha256)
            return cached[0]
        segment = TranscriptSegment.model_validate_json(await self.get(head))
        if head.size <= self._segment_limit // 4:
            self._segments[head.sha256] = segment, head.size
            self._segment_chars += head.size
            while self._segment_chars > self._segment_limit:
                _, (_, size) = self._segments.popitem(last=False)
                self._segment_chars -= size
        return segment

    async def read_transcript(self, archive: TranscriptArchive | None) -> list[ChatMessage]:
        """Every archived message, oldest first (message heads: content may still be referenced); the caller's own
        copies (not the shared parsed segments), which it may change."""
        segments: list[TranscriptSegment] = []
        while archive is not None:
            segment = TranscriptSegment.model_validate_json(await self.get(archive.head))
            segments.append(segment)
            archive = segment.previous
        return [message for segment in reversed(segments) for message in segment.messages]


class ContentActivities:
    """The content store's activity: archiving the older part of a transcript at continue-as-new."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store

    @activity.defn(name=ARCHIVE_TRANSCRIPT_ACTIVITY)
    async def archive_transcript(self, request: ArchiveTranscriptInput) -> TranscriptArchive:
        """Store the messages as one transcript segment after `request.previous`.

        Raises:
            ApplicationError: `ContentStoreUnavailable` (retryable) while the store cannot be reached.
        """
        try:
            return await self._store.archive(request)
        except ContentStoreUnavailable as err:
            raise ApplicationError(str(err), type=CONTENT_STORE_UNAVAILABLE_ERROR) from err
