"""Files in an S3-compatible bucket (AWS S3, R2, Garage, SeaweedFS, Ceph RGW, MinIO), with
aiobotocore: botocore's requests and errors, sent with aiohttp on this event loop.

Keys: ``<prefix>/uploads/<name>`` (uploads and their thumbnails), ``<prefix>/reports/<name>``.
A PUT is atomic (S3 shows the whole object or the old one), so a file is made in a local
temporary file (under DATA_DIR/tmp), checked there, then PUT from that file in chunks read in a
thread. Downloads go the other way, chunk by chunk to a temporary file. Nothing on this path
reads a file on the event loop: botocore's data files are loaded in a thread at start, and the
request body is an async iterator whose reads run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from service.store.files import make_folders
from service.store.storage import (
    CONTENT_TYPES,
    Area,
    Download,
    StorageStartError,
    StorageUnavailableError,
    is_bare_name,
    new_temp_name,
    remove_quietly,
)
from service.store.storage.local import delete_older_than
from settings import Settings, bucket_and_prefix

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

CHUNK_SIZE = 256 * 1024
CHECK_TIMEOUT = 1.5  # /health answers within 2 s whatever storage does
DELETES_AT_ONCE = 10
MISSING = {"NoSuchKey", "404", "NotFound"}


def client_config() -> AioConfig:
    """What every S3-compatible server accepts.

    Path-style addressing (``endpoint/bucket/key``) works without wildcard DNS. Checksums and
    payload signing only when an operation requires them: botocore would otherwise read the
    whole body on the event loop to hash it before sending, and several S3-compatible servers
    refuse botocore's newer default checksums. The TCP and TLS layers check the bytes, and S3
    refuses a body shorter than its Content-Length, so a PUT is still whole or nothing.
    """
    return AioConfig(
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "total_max_attempts": 3},
        connect_timeout=5,
        read_timeout=30,
        ignore_configured_endpoint_urls=True,  # only S3_ENDPOINT_URL, never AWS_ENDPOINT_URL
    )


class FileBody:
    """A PUT's body read from a local file of ``size`` bytes, chunk by chunk in a thread.

    botocore takes any object with ``read`` as a stream and aiohttp sends an async iterable
    chunk by chunk; ``seek(0)`` lets botocore retry the request from the start. aiohttp stops
    iterating once it has sent Content-Length bytes, so the file is closed as the last chunk
    is read, not when the iteration ends (which it may never do).
    """

    def __init__(self, path: Path, size: int) -> None:
        self._path = path
        self._size = size

    def read(self, size: int = -1) -> bytes:
        raise TypeError("FileBody is read asynchronously (async for), never with read()")

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise ValueError("FileBody only rewinds to its start")
        return 0  # every iteration starts at the beginning

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        source = await asyncio.to_thread(self._path.open, "rb")
        try:
            left = self._size
            while left > 0:
                chunk = await asyncio.to_thread(source.read, min(CHUNK_SIZE, left))
                if not chunk:
                    return
                left -= len(chunk)
                if left <= 0:
                    source.close()  # a read-only file: closing it does not wait on the disk
                yield chunk
        finally:
            source.close()


class S3Storage:
    """A bucket and a prefix in it."""

    def __init__(
        self,
        client: S3Client,
        stack: AsyncExitStack,
        settings: Settings,
        list_page_size: int,
    ) -> None:
        assert settings.storage_url is not None
        self._client = client
        self._stack = stack
        self._bucket, prefix = bucket_and_prefix(settings.storage_url)
        self._prefix = f"{prefix}/" if prefix else ""
        self._scratch = scratch_folder(settings)
        self._page_size = list_page_size
        self._endpoint = settings.s3_endpoint_url or f"AWS S3 in {settings.s3_region}"
        self.where = f"s3://{self._bucket}/{self._prefix}"

    @classmethod
    async def open(cls, settings: Settings, *, list_page_size: int) -> S3Storage:
        """Connect and list the prefix once: a wrong endpoint, bucket, key or secret stops the
        process here, with a message naming the setting, rather than at the first upload."""
        try:
            await asyncio.to_thread(make_folders, scratch_folder(settings))
        except OSError as exc:
            raise StorageStartError(
                f"file storage: DATA_DIR={settings.data_dir}: cannot make the temporary"
                f" folder for S3 transfers there ({exc.strerror or exc})"
            ) from None
        session = AioSession()
        # botocore reads its JSON models and config files when first asked: here, in a thread
        await asyncio.to_thread(_load_botocore_data, session)
        secret = settings.aws_secret_access_key
        stack = AsyncExitStack()
        client: S3Client = await stack.enter_async_context(
            session.create_client(
                "s3",
                region_name=settings.s3_region,
                endpoint_url=settings.s3_endpoint_url,
                aws_access_key_id=settings.aws_access_key_id,
                aws_secret_access_key=secret.get_secret_value() if secret else None,
                config=client_config(),
            )
        )
        storage = cls(client, stack, settings, list_page_size)
        try:
            await storage._list_one()
        except (
            ClientError,
            BotoCoreError,
            aiohttp.ClientError,
            ConnectionError,
            TimeoutError,
        ) as exc:
            await stack.aclose()
            raise StorageStartError(start_error_message(settings, exc)) from None
        return storage

    def _key(self, area: Area, name: str) -> str:
        if not is_bare_name(name):
            raise ValueError(f"not a bare file name: {name!r}")
        return f"{self._prefix}{area}/{name}"

    async def _list_one(self, area: Area = "uploads") -> None:
        await self._client.list_objects_v2(
            Bucket=self._bucket, Prefix=f"{self._prefix}{area}/", MaxKeys=1
        )

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """botocore's and aiohttp's errors as StorageUnavailableError (a missing object as
        FileNotFoundError), with a reason fit for a job's status: no keys, no paths."""
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "?"))
            if code in MISSING:
                raise FileNotFoundError(what) from None
            reason = f"{self.where}: {what}: the server answered {code}"
            raise StorageUnavailableError(reason) from None
        except (BotoCoreError, aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            # a local file's OSError (a full disk) is not the server's: it passes as it is
            raise StorageUnavailableError(
                f"{self.where}: {what}: cannot reach {self._endpoint} ({type(exc).__name__})"
            ) from None

    def temp_path(self, area: Area, prefix: str = ".tmp-", suffix: str = "") -> Path:
        return self._scratch / new_temp_name(prefix, suffix)

    async def store(self, area: Area, name: str, temp: Path) -> None:
        key = self._key(area, name)
        size = (await asyncio.to_thread(temp.stat)).st_size
        with self._calling(f"storing {name}"):
            await self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=FileBody(temp, size),  # type: ignore[arg-type]  # a stream, read by aiohttp
                ContentLength=size,
                ContentType=CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream"),
            )

    async def discard(self, temp: Path) -> None:
        await remove_quietly(temp)

    @asynccontextmanager
    async def local_copy(self, area: Area, name: str) -> AsyncIterator[Path]:
        """Downloaded chunk by chunk to a temporary file, removed on exit: the object is
        never whole in memory."""
        temp = self.temp_path(area, ".download-", Path(name).suffix)
        try:
            with self._calling(f"reading {name}"):
                response = await self._client.get_object(
                    Bucket=self._bucket, Key=self._key(area, name)
                )
                body = response["Body"]
                out: BinaryIO = await asyncio.to_thread(temp.open, "xb")
                try:
                    async for chunk in body.iter_chunks(CHUNK_SIZE):
                        await asyncio.to_thread(out.write, chunk)
                finally:
                    body.close()
                    await asyncio.to_thread(out.close)
            yield temp
        finally:
            await remove_quietly(temp)

    @asynccontextmanager
    async def reader(self, area: Area, name: str) -> AsyncIterator[Download | None]:
        try:
            with self._calling(f"reading {name}"):
                response = await self._client.get_object(
                    Bucket=self._bucket, Key=self._key(area, name)
                )
        except FileNotFoundError:
            response = None
        if response is None:
            yield None
            return
        body = response["Body"]
        try:
            download = Download(
                response["ContentLength"],
                response["LastModified"].timestamp(),
                self._relayed(body.iter_chunks(CHUNK_SIZE), name),
            )
            yield download
        finally:
            body.close()

    async def _relayed(self, chunks: AsyncIterator[bytes], name: str) -> AsyncIterator[bytes]:
        with self._calling(f"reading {name}"):
            async for chunk in chunks:
                yield chunk

    async def delete(self, area: Area, name: str) -> None:
        with self._calling(f"deleting {name}"):
            await self._client.delete_object(Bucket=self._bucket, Key=self._key(area, name))

    async def delete_older_than(self, area: Area, cutoff: float) -> int:
        """One listing page at a time (``list_page_size`` keys), its old objects deleted
        before the next page is asked for; only keys directly under ``<prefix>/<area>/``.

        DeleteObject one key at a time (ten at once) rather than DeleteObjects: that one needs
        a body checksum that several S3-compatible servers do not accept. Temporary files that
        a killed process left in DATA_DIR/tmp go too, as the folders' cleanup takes them there.
        """
        area_prefix = f"{self._prefix}{area}/"
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self._bucket,
            Prefix=area_prefix,
            Delimiter="/",  # "sub-folders" come back as CommonPrefixes: never entered
            PaginationConfig={"PageSize": self._page_size},
        )
        deleted = 0
        limit = asyncio.Semaphore(DELETES_AT_ONCE)

        async def delete(key: str) -> None:
            async with limit:
                await self._client.delete_object(Bucket=self._bucket, Key=key)

        with self._calling("cleaning up"):
            async for page in pages:
                old = [
                    item["Key"]
                    for item in page.get("Contents", [])
                    if _directly_in(item["Key"], area_prefix)
                    and item["LastModified"].timestamp() < cutoff
                ]
                outcomes = await asyncio.gather(*map(delete, old), return_exceptions=True)
                failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
                if failed:
                    raise failed[0]
                deleted += len(old)
        if area == "uploads":
            deleted += await asyncio.to_thread(delete_older_than, self._scratch, cutoff)
        return deleted

    async def check(self) -> None:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await self._list_one()

    async def close(self) -> None:
        await self._stack.aclose()


def scratch_folder(settings: Settings) -> Path:
    """Local temporary files on their way to or from the bucket."""
    return settings.data_dir / "tmp"


def _directly_in(key: str, area_prefix: str) -> bool:
    """Right under the area, not "below" it; a dot-name too, as the local cleanup has it."""
    name = key[len(area_prefix) :]
    return key.startswith(area_prefix) and bool(name) and "/" not in name


def _load_botocore_data(session: AioSession) -> None:
    cast(Any, session).warm_up_loader_caches("s3")  # aiobotocore 3.x; not in its stubs yet
    session.get_scoped_config()  # reads ~/.aws/config if there is one


def start_error_message(settings: Settings, exc: BaseException) -> str:
    """Which setting is wrong, from the first request's failure; never the secret key."""
    endpoint = (
        f"S3_ENDPOINT_URL={settings.s3_endpoint_url}"
        if settings.s3_endpoint_url
        else (f"AWS S3 in S3_REGION={settings.s3_region}")
    )
    head = f"file storage: STORAGE_URL={settings.storage_url}"
    key_id = _masked(settings.aws_access_key_id or "")
    if not isinstance(exc, ClientError):
        return f"{head}: cannot reach {endpoint} ({type(exc).__name__}: {exc})"
    error: Any = exc.response.get("Error", {})
    code = str(error.get("Code", "?"))
    bucket = bucket_and_prefix(str(settings.storage_url))[0]
    reasons = {
        "NoSuchBucket": f"there is no bucket named {bucket!r} at {endpoint} (NoSuchBucket)",
        "InvalidAccessKeyId": (
            f"AWS_ACCESS_KEY_ID: the server does not know the access key {key_id}"
            " (InvalidAccessKeyId)"
        ),
        "SignatureDoesNotMatch": (
            f"AWS_SECRET_ACCESS_KEY: the server refused the signature: the secret key is not"
            f" the one of access key {key_id} (SignatureDoesNotMatch)"
        ),
        "AccessDenied": (
            f"AWS_ACCESS_KEY_ID: access key {key_id} may not list the bucket (AccessDenied)"
        ),
        "AuthorizationHeaderMalformed": (
            f"S3_REGION={settings.s3_region}: the server expects another region"
            " (AuthorizationHeaderMalformed)"
        ),
        "PermanentRedirect": (
            f"S3_REGION={settings.s3_region}: the bucket is in another region (PermanentRedirect)"
        ),
    }
    reason = reasons.get(code, f"the server answered {code}: {error.get('Message', '')}")
    return f"{head}: {reason}"


def _masked(key_id: str) -> str:
    """Enough of an access key id to tell which one it is."""
    return repr(key_id[:4] + "..." if len(key_id) > 8 else "...")
