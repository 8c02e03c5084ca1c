"""What a request to ``POST /predict`` may hold, read in the HTTP process before any model work.

A photo comes as the raw body (``Content-Type: image/jpeg``, ``image/png``, ...) or as the
``image`` field of a ``multipart/form-data`` body, with an optional ``background`` image field;
options come in the query string or as form fields. The body is read in memory up to a byte limit
(nothing is written to disk: Starlette's own form parser would spool large files to a temporary
file), and every option is checked, so that a bad request is answered at once with a 4xx and a
message, without reaching the model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import ImageColor
from python_multipart.multipart import MultipartParser, parse_options_header

OUTPUTS = ("json", "mask", "cutout", "composite", "all")
OPTIONS = ("output", "background", "feather")
FILE_FIELDS = ("image", "background")  # a form's files: the photo, and an image to put it on
# read by the token check, not an option of the prediction
TOKEN_PARAMETER = "token"


class BadRequest(Exception):  # noqa: N818 (an HTTP answer, named as the status)
    """A request refused before the model: ``status`` (4xx) and a message saying what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may hold: bytes of body, and pixels of each image."""

    max_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class Defaults:
    """The server's defaults for the options a request leaves out."""

    background: tuple[int, int, int]
    feather: float


async def read_body(
    headers: Mapping[str, str], chunks: AsyncIterator[bytes], max_bytes: int
) -> bytes:
    """The whole body, in memory, refused as soon as it passes ``max_bytes``.

    Raises:
        BadRequest: 413 when the declared length or the bytes received pass the limit; 400 for
            an empty body.
    """
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(413, _too_large(int(declared), max_bytes))
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise BadRequest(413, _too_large(None, max_bytes))
    if not body:
        raise BadRequest(400, "The body is empty: send a photo (JPEG or PNG) as the body, or as "
                         "the 'image' field of a multipart form")  # fmt: skip
    return bytes(body)


def _too_large(size: int | None, max_bytes: int) -> str:
    shown = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes"
    return (
        f"The upload is too large ({shown}): at most {max_bytes} bytes (max_bytes in the "
        "server's config)"
    )


def split_form(content_type: str, body: bytes) -> tuple[dict[str, bytes], dict[str, str]]:
    """The files and the text fields of a ``multipart/form-data`` body, in memory.

    Raises:
        BadRequest: 400 for a form without a boundary, a malformed form, or a field twice.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest(400, "A multipart/form-data body needs a boundary in its Content-Type")
    parts: list[tuple[dict[str, str], bytearray]] = []
    header: list[bytes] = [b"", b""]

    def on_part_begin() -> None:
        parts.append(({}, bytearray()))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1][0][header[0].decode("latin-1").lower()] = header[1].decode("latin-1")
        header[:] = [b"", b""]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as err:  # python-multipart's MultipartParseError and the like
        raise BadRequest(400, f"The multipart form cannot be read: {err}") from None
    files: dict[str, bytes] = {}
    fields: dict[str, str] = {}
    for headers, data in parts:
        _, disposition = parse_options_header(headers.get("content-disposition", ""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if name in files or name in fields:
            raise BadRequest(400, f"The form holds the field {name!r} twice: send it once")
        # the photo even when a client omits its file name; a background without one is the
        # colour option (-F background=white), with one an image
        if b"filename" in disposition or name == "image":
            files[name] = bytes(data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return files, fields


def parse_request(
    content_type: str,
    body: bytes,
    query: Mapping[str, str],
    defaults: Defaults,
) -> dict[str, Any]:
    """The payload a model worker gets: ``image`` (bytes), ``background`` (an image's bytes or
    None), ``colour`` (r, g, b), ``output`` and ``feather``.

    Raises:
        BadRequest: 400 for an unknown option, a bad value, or a form without its image.
    """
    options = dict(query)
    background_image = None
    if content_type.lower().startswith("multipart/form-data"):
        files, fields = split_form(content_type, body)
        for name in fields:
            if name in options:
                raise BadRequest(400, f"{name!r} is in the query and in the form: give it once")
        options.update(fields)
        unknown_files = sorted(set(files) - set(FILE_FIELDS))
        if unknown_files:
            raise BadRequest(
                400,
                f"Unknown file field(s) {', '.join(map(repr, unknown_files))}: the form's files "
                "are 'image' (the photo) and 'background' (an image to put the car on)",
            )
        if "image" not in files:
            raise BadRequest(400, "The form has no 'image' file field: send the photo as 'image'")
        image = files["image"]
        background_image = files.get("background")
        if not image:
            raise BadRequest(400, "The 'image' field is empty: send a photo (JPEG or PNG)")
        if background_image is not None and not background_image:
            raise BadRequest(400, "The 'background' field is empty: send an image, or leave it out")
    else:
        image = body
    options.pop(TOKEN_PARAMETER, None)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise BadRequest(
            400,
            f"Unknown option(s) {', '.join(map(repr, unknown))}: the options are "
            f"{', '.join(OPTIONS)} (the model's own settings are in the server's config)",
        )
    output = options.get("output", "json")
    if output not in OUTPUTS:
        raise BadRequest(400, f"output={output!r}: choose one of {', '.join(OUTPUTS)}")
    colour = defaults.background
    if "background" in options:
        if background_image is not None:
            raise BadRequest(400, "Two backgrounds: a colour and an image; give one")
        colour = parse_colour(options["background"])
    feather = defaults.feather
    if "feather" in options:
        try:
            feather = float(options["feather"])
        except ValueError:
            feather = -1.0
        if not 0 <= feather <= 0.5:
            raise BadRequest(400, f"feather={options['feather']!r}: a number from 0 to 0.5")
    return {
        "image": image,
        "background": background_image,
        "colour": colour,
        "output": output,
        "feather": feather,
    }


def parse_colour(text: str) -> tuple[int, int, int]:
    """A colour Pillow names (``white``, ``#f0f0f0``, ``rgb(240,240,240)``) as (r, g, b); never a
    file: a request does not name files on the server.

    Raises:
        BadRequest: 400, not a colour.
    """
    try:
        return tuple(ImageColor.getrgb(text)[:3])
    except ValueError:
        raise BadRequest(
            400,
            f"background={text!r} is not a colour (white, #f0f0f0, rgb(240,240,240)); to put the "
            "car on an image, send it as the 'background' file of a multipart form",
        ) from None
