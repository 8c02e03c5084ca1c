"""src/serve.py and carseg.serving: the HTTP API answers with the files predict.py writes, byte
for byte; bad requests get a 4xx with a JSON message and the server goes on serving; a token
off the loopback; the web page in headless Chromium.

Servers run on 127.0.0.1 and a free port, each request with a timeout, and are stopped (their
whole process group) whatever happens (``support.serving``)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carseg.data.image_io import TooManyPixelsError, decode_image, read_image
from carseg.data.rle import read_rle_csv, rle_decode
from carseg.inference.loading import load_model
from carseg.inference.predictor import Predictor
from carseg.serving.requests import BadRequest, Defaults, parse_request, read_body
from carseg.utils.errors import UnreadableFileError
from support.browser import chromium, needs_chromium
from support.entry import run_entry
from support.serving import multipart, request, serving

DEFAULTS = Defaults(background=(255, 255, 255), feather=0.0)
TOKEN = "test-token-0123"
N_REAL = 3  # real Carvana photos among the inputs, when the sample is there


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- requests, without a server


def _body(data: bytes, declared: bool = True, max_bytes: int = 100):
    async def chunks():
        for i in range(0, len(data), 7):
            yield data[i : i + 7]

    headers = {"content-length": str(len(data))} if declared else {}
    return asyncio.run(read_body(headers, chunks(), max_bytes))


def test_a_body_is_read_up_to_the_limit_declared_or_not():
    assert _body(b"x" * 100) == b"x" * 100
    for declared in (True, False):
        with pytest.raises(BadRequest) as refused:
            _body(b"x" * 101, declared)
        assert refused.value.status == 413 and "at most 100 bytes" in refused.value.message
    with pytest.raises(BadRequest, match="empty") as empty:
        _body(b"")
    assert empty.value.status == 400


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"size": "64"}, "Unknown option(s) 'size'"),
        ({"output": "gif"}, "output='gif': choose one of json, mask, cutout, composite, all"),
        ({"feather": "0.7"}, "feather='0.7': a number from 0 to 0.5"),
        ({"feather": "soft"}, "feather='soft'"),
        ({"background": "/etc/passwd"}, "is not a colour"),
    ],
)
def test_options_are_checked_before_any_model_work(query, expected):
    with pytest.raises(BadRequest) as refused:
        parse_request("image/jpeg", b"photo", query, DEFAULTS)
    assert refused.value.status == 400 and expected in refused.value.message


def test_a_form_gives_its_image_background_and_fields_in_memory():
    headers, body = multipart({"image": b"photo", "background": b"ground"}, {"feather": "0.25"})
    payload = parse_request(headers["Content-Type"], body, {"output": "cutout"}, DEFAULTS)
    assert payload == {"image": b"photo", "background": b"ground", "colour": (255, 255, 255),
                       "output": "cutout", "feather": 0.25}  # fmt: skip
    for files, fields, expected in [
        ({"photo": b"x"}, {}, "Unknown file field(s) 'photo'"),
        ({}, {"output": "mask"}, "no 'image' file field"),
        ({"image": b""}, {}, "'image' field is empty"),
        ({"image": b"x", "background": b"y"}, {"background": "red"}, "'background' twice"),
    ]:
        headers, body = multipart(files, fields)
        with pytest.raises(BadRequest, match=expected.replace("(", r"\(").replace(")", r"\)")):
            parse_request(headers["Content-Type"], body, {}, DEFAULTS)
    form = (
        b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\n\xff\xd8photo\r\n'
        b"--b--\r\n"
    )  # a file sent without a file name
    assert parse_request("multipart/form-data; boundary=b", form, {}, DEFAULTS)["image"] == (
        b"\xff\xd8photo"
    )
    headers, body = multipart({"image": b"x"}, {"background": "#ff0000"})  # a colour field
    assert parse_request(headers["Content-Type"], body, {}, DEFAULTS)["colour"] == (255, 0, 0)
    headers, body = multipart({"image": b"x", "background": b"y"})
    with pytest.raises(BadRequest, match="Two backgrounds"):
        parse_request(headers["Content-Type"], body, {"background": "red"}, DEFAULTS)
    with pytest.raises(BadRequest, match="boundary"):
        parse_request("multipart/form-data", b"--x--", {}, DEFAULTS)


def test_an_image_decoded_from_memory_is_the_file_read_from_disk(tiny_set, tmp_path):
    photo = sorted((tiny_set / "train").iterdir())[0]
    assert np.array_equal(decode_image(photo.read_bytes())[0], read_image(photo)[0])
    turned = tmp_path / "turned.jpg"  # an EXIF orientation is applied, as from disk
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(photo).save(turned, exif=exif)
    image, size = decode_image(turned.read_bytes())
    assert np.array_equal(image, read_image(turned)[0]) and size == read_image(turned)[1]
    bomb = _png(Image.new("1", (20000, 20000)))  # a few hundred KB
    with pytest.raises(TooManyPixelsError, match="more than the limit of 1000"):
        decode_image(bomb, max_pixels=1000)
    with pytest.raises(TooManyPixelsError, match="30x30 is 900 pixels, more than the limit of 800"):
        decode_image(_png(Image.new("RGB", (30, 30))), max_pixels=800)
    data = photo.read_bytes()
    with pytest.raises(UnreadableFileError, match="truncated"):
        decode_image(data[: len(data) // 2])


# ---------------------------------------------------------------- the entry point's refusals


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["host=0.0.0.0"], "serves other machines: set a token"),
        (["host=example.com"], "host='example.com': choose 127.0.0.1, 0.0.0.0, ::"),
        (["token=short"], "at least 8 characters"),
        (["port=80"], "port"),
        (["max_bytes=0"], "max_bytes"),
        (["background=nocolour"], "is not a colour"),
        (["accelerator=tpu"], "accelerator='tpu'"),
    ],
)
def test_a_bad_server_option_is_refused_before_serving(trained, tmp_path, overrides, expected):
    _, ckpt, _ = trained
    proc = run_entry(tmp_path, "serve", f"ckpt_path={ckpt}", *overrides)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr


def test_a_server_without_a_model_is_refused(tmp_path):
    proc = run_entry(tmp_path, "serve")
    assert proc.returncode == 2 and "give the model: ckpt_path=" in proc.stderr


# ---------------------------------------------------------------- a running server


@pytest.fixture(scope="module")
def photos(trained, tmp_path_factory, request) -> tuple[Path, float]:
    """(a folder of synthetic and, where the sample is, real photos; a threshold that cuts the
    tiny model's probabilities over them near their median, so that masks hold car and
    background)."""
    _, ckpt, data = trained
    folder = tmp_path_factory.mktemp("serve-photos") / "photos"
    folder.mkdir()
    for path in sorted((data / "train").iterdir())[:6]:
        shutil.copy(path, folder / path.name)
    try:
        sample = request.getfixturevalue("sample_dir")
    except pytest.skip.Exception:
        sample = None
    if sample is not None:
        for path in sorted((sample / "train").glob("*.jpg"))[:N_REAL]:
            shutil.copy(path, folder / path.name)
    model, record = load_model(ckpt)
    predictor = Predictor(models=[model], sizes=[record.size], tta=False, tile=None,
                          tile_overlap=0)  # fmt: skip
    probs = predictor.probabilities([read_image(p)[0] for p in sorted(folder.iterdir())])
    # near the median, in the widest gap between neighbouring probabilities: a batch's
    # composition may move a probability by 1e-7, never across a gap that wide
    values = np.unique(np.concatenate([p.ravel() for p in probs]))
    middle = len(values) // 2
    near = values[max(0, middle - 2000) : middle + 2000]
    widest = int(np.argmax(np.diff(near)))
    threshold = float((near[widest] + near[widest + 1]) / 2)
    return folder, threshold


@pytest.fixture(scope="module")
def server_root(tmp_path_factory) -> Path:
    """The folder ``server`` runs in (its CARSEG_ROOT and working folder)."""
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def server(trained, photos, server_root):
    """A server on the tiny checkpoint: batches of up to 4 requests, 5 MB and 20 Mpixels."""
    _, ckpt, _ = trained
    _, threshold = photos
    root = server_root
    limits = ("batch_size=4", "batch_timeout=0.2", "max_bytes=5000000", "max_pixels=20000000")
    with serving(root, f"ckpt_path={ckpt}", f"threshold={threshold!r}", *limits) as url:
        yield url


@pytest.mark.slow
def test_served_files_are_the_ones_predict_py_writes_byte_for_byte(
    trained, photos, server, tmp_path
):
    root, ckpt, _ = trained
    folder, threshold = photos
    ground = tmp_path / "ground.png"  # a background image of another size, stretched
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8)).save(ground)
    out = tmp_path / "predicted"
    proc = run_entry(root, "predict", f"ckpt_path={ckpt}", f"input={folder}", f"output_dir={out}",
                     f"threshold={threshold!r}", "batch_size=4", "num_workers=0",
                     "trainer.accelerator=cpu", "cutouts=true", "cutout_feather=0.2",
                     f"background={ground}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rle_csv(out / "submission.csv")

    def served(photo: Path) -> dict[str, bytes]:
        data = photo.read_bytes()
        answers = {"json": request(server, "/predict", data)}
        answers["mask"] = request(server, "/predict?output=mask", data)
        answers["cutout"] = request(server, "/predict?output=cutout&feather=0.2", data)
        headers, body = multipart({"image": data, "background": ground.read_bytes()},
                                  {"output": "composite", "feather": "0.2"})  # fmt: skip
        answers["composite"] = request(server, "/predict", body, headers=headers)
        for status, _, content in answers.values():
            assert status == 200, content[:500]
        return {k: v[2] for k, v in answers.items()}

    inputs = sorted(folder.iterdir())
    with ThreadPoolExecutor(4) as pool:  # requests that arrive together: batched
        answers = dict(zip(inputs, pool.map(served, inputs), strict=True))
    car_shares = []
    for photo, answer in answers.items():
        assert answer["mask"] == (out / "masks" / f"{photo.stem}_mask.png").read_bytes(), photo
        assert answer["cutout"] == (out / "cutouts" / f"{photo.stem}.png").read_bytes(), photo
        assert answer["composite"] == (out / "composites" / f"{photo.stem}.jpg").read_bytes()
        summary = json.loads(answer["json"])
        assert summary["rle"] == rows[photo.name]
        mask = rle_decode(summary["rle"], (summary["height"], summary["width"]))
        assert summary["car_share"] == pytest.approx(mask.mean(), abs=1e-6)
        assert summary["model"] == [ckpt.name] and summary["threshold"] == threshold
        car_shares.append(summary["car_share"])
    assert any(0 < share < 1 for share in car_shares)  # masks that hold car and background


@pytest.mark.slow
def test_the_guided_edge_serves_predict_py_masks_too(trained, photos, tmp_path):
    root, ckpt, _ = trained
    folder, threshold = photos
    # one photo a batch on both sides: the refined probabilities' gaps are not the test's
    common = (f"ckpt_path={ckpt}", f"threshold={threshold!r}", "refine.guided=true", "batch_size=1")
    out = tmp_path / "predicted"
    proc = run_entry(root, "predict", *common, f"input={folder}", f"output_dir={out}",
                     "num_workers=0", "trainer.accelerator=cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    inputs = sorted(folder.iterdir())
    with serving(tmp_path, *common) as url:
        assert json.loads(request(url, "/info", method="GET")[2])["model"]["refine"]

        def mask(photo: Path) -> tuple[int, str, bytes]:
            return request(url, "/predict?output=mask", photo.read_bytes())

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(mask, inputs))
    for photo, (status, _, content) in zip(inputs, answers, strict=True):
        assert status == 200, content[:300]
        assert content == (out / "masks" / f"{photo.stem}_mask.png").read_bytes(), photo


@pytest.mark.slow
def test_all_outputs_at_once_and_a_colour_background(photos, server):
    photo = sorted(photos[0].iterdir())[0]
    status, kind, content = request(server, "/predict?output=all&background=%23ff0000",
                                    photo.read_bytes())  # fmt: skip
    assert status == 200 and kind == "application/json"
    answer = json.loads(content)
    images = {}
    for key, media in (("mask", "image/png"), ("cutout", "image/png"), ("composite", "image/jpeg")):
        head, _, data = answer[key].partition(",")
        assert head == f"data:{media};base64"
        images[key] = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGBA"))
    mask = rle_decode(answer["rle"], (answer["height"], answer["width"]))
    assert np.array_equal(images["mask"][..., 0] > 0, mask > 0)
    assert np.array_equal(images["cutout"][..., 3], mask * 255)
    red = images["composite"][mask == 0][:, :3].astype(int)
    if len(red):
        assert np.abs(red - [255, 0, 0]).mean() < 12  # (JPEG's noise)


def _bad_requests(photo: bytes) -> list[tuple[str, str, bytes, dict, int, str]]:
    """(what, path, body, headers, status, message) of bad requests of every family."""
    bomb = _png(Image.new("1", (20000, 20000)))
    big = _png(Image.new("RGB", (5000, 4100)))  # 20.5 Mpixels: past the server's 20
    form, body = multipart({"image": photo, "background": b"GIF89a not really"})
    no_image_headers, no_image = multipart({}, {"output": "mask"})
    return [
        ("not an image", "/predict", b"hello, server", {}, 400, "not an image"),
        ("text as a photo", "/predict", b"%PDF-1.4\n" * 50, {}, 400, "not an image"),
        ("a truncated JPEG", "/predict", photo[: len(photo) // 2], {}, 400, "truncated"),
        ("an empty body", "/predict", b"", {}, 400, "The body is empty"),
        ("a decompression bomb", "/predict", bomb, {}, 413, "more than the limit of 20000000"),
        ("too many pixels", "/predict", big, {}, 413, "more than the limit of 20000000"),
        ("an unknown option", "/predict?size=64", photo, {}, 400, "Unknown option(s) 'size'"),
        ("a bad output", "/predict?output=svg", photo, {}, 400, "output='svg'"),
        ("a bad feather", "/predict?feather=2", photo, {}, 400, "feather='2'"),
        (
            "a file path as a colour",
            "/predict?output=composite&background=/etc/hosts",
            photo,
            {},
            400,
            "is not a colour",
        ),  # fmt: skip
        (
            "a background that is not an image",
            "/predict?output=composite",
            body,
            form,
            400,
            "Cannot read the background",
        ),  # fmt: skip
        ("a form without its image", "/predict", no_image, no_image_headers, 400, "no 'image'"),
        (
            "a broken form",
            "/predict",
            b"garbage",
            {"Content-Type": "multipart/form-data"},
            400,
            "boundary",
        ),  # fmt: skip
        ("too many bytes", "/predict", b"\0" * 5_000_001, {}, 413, "at most 5000000 bytes"),
    ]


@pytest.mark.slow
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_goes_on(photos, server, server_root):
    photo = sorted(photos[0].iterdir())[0].read_bytes()
    for what, path, body, headers, status, message in _bad_requests(photo):
        got, kind, content = request(server, path, body, headers=headers)
        assert (got, kind) == (status, "application/json"), (what, got, content[:300])
        assert message in json.loads(content)["detail"], (what, content[:300])
    assert request(server, "/predict?output=mask", photo)[0] == 200
    # a photo that fails in a batch fails alone (LitServe would fail the whole batch on a raise)
    truncated = photo[: len(photo) // 2]
    with ThreadPoolExecutor(4) as pool:
        batch = list(pool.map(lambda body: request(server, "/predict", body),
                              [truncated, photo, photo, photo]))  # fmt: skip
    assert [status for status, _, _ in batch] == [400, 200, 200, 200]
    # no upload was written where the server runs: its log and Hydra's records only
    written = [p for p in server_root.rglob("*") if p.is_file() and p.stat().st_size > 50_000]
    assert not written, written
    for method, path, status in (("GET", "/predict", 405), ("GET", "/nowhere", 404)):
        got, kind, content = request(server, path, method=method)
        assert got == status and "detail" in json.loads(content)


@pytest.mark.slow
def test_a_100_mb_upload_is_refused_from_its_header_without_reading_it(server):
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                  b"Content-Length: 100000000\r\n\r\n" + b"\xff" * 65536)  # fmt: skip
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413") and b"100000000 bytes" in answer


@pytest.mark.slow
def test_a_client_killed_mid_upload_leaves_the_server_serving(photos, server):
    photo = sorted(photos[0].iterdir())[0].read_bytes()
    port = int(server.rsplit(":", 1)[1])
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {len(photo)}\r\n\r\n".encode()
            + photo[: len(photo) // 3]
        )
        s.close()  # gone before the rest of the photo
    time.sleep(0.5)
    assert request(server, "/health", method="GET")[:1] == (200,)
    assert request(server, "/predict?output=mask", photo)[0] == 200


@pytest.mark.slow
def test_health_info_page_and_openapi(server, trained):
    status, _, content = request(server, "/health", method="GET")
    assert (status, content) == (200, b"ok")
    status, kind, content = request(server, "/", method="GET")
    assert status == 200 and kind.startswith("text/html") and b'id="drop"' in content
    info = json.loads(request(server, "/info", method="GET")[2])
    assert info["model"]["model"] == [trained[1].name]
    assert info["model"]["max_bytes"] == 5_000_000
    schema = json.loads(request(server, "/openapi.json", method="GET")[2])
    assert "post" in schema["paths"]["/predict"]
    assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert request(server, "/docs", method="GET")[0] == 200


@pytest.mark.slow
def test_a_token_is_asked_on_every_route_but_health(trained, photos, tmp_path):
    _, ckpt, _ = trained
    photo = sorted(photos[0].iterdir())[0].read_bytes()
    with serving(tmp_path, f"ckpt_path={ckpt}", env={"CARSEG_SERVE_TOKEN": TOKEN}) as url:
        assert request(url, "/health", method="GET")[0] == 200
        routes = [("GET", "/", None), ("GET", "/info", None), ("GET", "/openapi.json", None),
                  ("POST", "/predict", photo)]  # fmt: skip
        for method, path, body in routes:
            status, _, content = request(url, path, body, method=method)
            assert status == 401 and "token is required" in json.loads(content)["detail"]
            wrong = {"Authorization": "Bearer not-the-token"}
            assert request(url, path, body, method=method, headers=wrong)[0] == 401
        given = [({"Authorization": f"Bearer {TOKEN}"}, "/predict"),
                 ({"X-API-Key": TOKEN}, "/predict"), ({}, f"/predict?token={TOKEN}")]  # fmt: skip
        for headers, path in given:
            assert request(url, path, photo, headers=headers)[0] == 200
        assert request(url, f"/?token={TOKEN}", method="GET")[0] == 200


# ---------------------------------------------------------------- the page, in Chromium

ALPHA = """
const img = arguments[0];
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const ctx = c.getContext('2d');
ctx.drawImage(img, 0, 0);
const a = ctx.getImageData(0, 0, c.width, c.height).data;
let clear = 0, opaque = 0;
for (let i = 3; i < a.length; i += 4) { if (a[i] === 0) clear++; else if (a[i] === 255) opaque++; }
return [c.width, c.height, clear, opaque];
"""


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_the_page_turns_a_dropped_photo_into_a_cutout(server, sample_dir, tmp_path):
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photos = sorted((sample_dir / "train").glob("*.jpg"))[:2]
    driver = chromium(tmp_path / "chromium-profile")
    try:
        wait = WebDriverWait(driver, 120, poll_frequency=0.5)
        driver.get(server + "/")
        wait.until(lambda d: "threshold" in d.find_element(By.ID, "model").text)
        picker = driver.find_element(By.ID, "files")
        picker.send_keys("\n".join(str(p) for p in photos))  # picked as the file dialog does
        done = "section.result[data-state='done']"
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, done)) == len(photos))
        for card in driver.find_elements(By.CSS_SELECTOR, done):
            width, height, clear, opaque = driver.execute_script(
                ALPHA, card.find_element(By.CSS_SELECTOR, "img.cutout")
            )
            assert (width, height) == (1918, 1280)  # the photo's own size
            assert clear + opaque == width * height and clear > 0 and opaque > 0  # the mask
            links = card.find_elements(By.CSS_SELECTOR, "a.download")
            names = sorted(link.get_attribute("download") for link in links)
            assert any(n.endswith("_mask.png") for n in names)
            assert all(link.get_attribute("href").startswith("data:image/") for link in links)
        # a refused upload is shown, not swallowed
        bad = tmp_path / "notes.jpg"
        bad.write_text("not a photo")
        picker.send_keys(str(bad))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "section.result[data-state='error']"))
        assert "not an image" in driver.find_element(By.CSS_SELECTOR, ".status.error").text
    finally:
        driver.quit()
