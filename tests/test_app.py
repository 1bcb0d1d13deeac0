"""The web app: ``igr serve`` in a subprocess on a free loopback port, driven by headless Chromium (the system's
chromium + chromedriver, never a downloaded browser) and through its API with gradio_client; every bad input is a
one-line message, never a traceback. In CI (``CI=true``) a missing browser is a failure, elsewhere a skip."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from parser_helpers import make_parser
from PIL import Image

pytest.importorskip("gradio", reason="the app needs the [app] extra (pip install -e '.[app]')")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = (
    shutil.which("chromium") or "/usr/bin/chromium",
    shutil.which("chromedriver") or "/usr/bin/chromedriver",
)
UPPER = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _images(tmp: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((80, 60, 3)) * 255).astype(np.uint8)).save(tmp / "person.png")
    m = np.zeros((80, 60), np.uint8)
    m[20:60, 10:50] = 255
    Image.fromarray(m).save(tmp / "mask.png")
    Image.fromarray(np.zeros((80, 60), np.uint8)).save(tmp / "empty.png")
    (tmp / "broken.png").write_bytes(b"not a png at all")
    return {n: tmp / f"{n}.png" for n in ("person", "mask", "empty", "broken")}


def _start_server(tmp):
    """`igr serve` of a random-init tiny pipeline (with a test parser) in a subprocess whose Gradio and system temp
    folders are under ``tmp``; returns (process, url, log file)."""
    from igr.config import CONFIG_DIR, load_model_config
    from igr.export import export_pipeline
    from igr.models import build_model

    (tmp / "systmp").mkdir()
    torch.manual_seed(0)
    model = export_pipeline(
        build_model(load_model_config(CONFIG_DIR / "model" / "tiny.yaml")).eval(), tmp / "pipe"
    )
    parser = make_parser(tmp / "parser", label=UPPER)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": str(tmp / "gradio"), "TMPDIR": str(tmp / "systmp")}  # fmt: skip
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "igr.cli", "serve", "--model", str(model), "--parser", str(parser),
         "--port", str(port), "--device", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"igr serve did not come up: {(tmp / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
    return proc, url, log


def _stop(proc, log) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    proc, url, log = _start_server(tmp)
    yield url, _images(tmp)
    _stop(proc, log)


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def _call(client, files, category="upper", source="upload", mask="mask", steps=2, person="person"):
    from gradio_client import handle_file

    editor = {"background": handle_file(str(files[person])), "layers": [], "composite": None, "id": None}
    mask_file = handle_file(str(files[mask])) if mask else None
    return client.predict(editor, category, source, mask_file, steps, 1.5, 0, api_name="/restore")


def test_api_restores_with_an_uploaded_and_an_automatic_mask(app):
    """Catches: the API endpoint missing or renamed, outputs at the wrong size, the download not the image shown,
    the seed not reproducing, and the automatic mask source not using the parser."""
    url, files = app
    client = _client(url)
    overlay, crop, garment, download = _call(client, files)
    assert Image.open(garment).size == (48, 64)  # the model resolution
    assert Image.open(overlay).size == (60, 80)  # the mask drawn on the user's photo
    assert Image.open(crop).size == (224, 224)  # p_g as the IP-Adapter sees it (at display size)
    np.testing.assert_array_equal(np.asarray(Image.open(download)), np.asarray(Image.open(garment)))
    again = _call(client, files)[2]
    np.testing.assert_array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(garment)))

    auto_overlay = _call(client, files, source="automatic", mask=None)[0]
    tinted = np.asarray(Image.open(auto_overlay)).astype(int)
    photo = np.asarray(Image.open(files["person"])).astype(int)
    assert (np.abs(tinted - photo).sum(-1) > 0).mean() > 0.95  # the parser's mask covers the whole photo


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(category="lower", source="automatic", mask=None), "photo: no lower garment found"),
        (dict(mask="empty"), "empty mask"),
        (dict(mask="broken"), "broken.png: not an image"),
        (dict(mask=None), "no mask uploaded"),
        (dict(source="brush", mask=None), "brush mask: empty mask"),
        (dict(person="broken"), "photo: not an image"),  # Gradio's editor would say "Could not preprocess"
        (dict(person="empty"), "photo: every pixel has the same colour"),
    ],
)
def test_bad_input_is_one_line_in_the_page(app, kwargs, message):
    """Catches: a traceback (or Gradio's generic 'Error') instead of the input's one-line message."""
    from gradio_client.exceptions import AppError

    url, files = app
    with pytest.raises(AppError) as info:
        _call(_client(url), files, **kwargs)
    text = str(info.value)
    assert message in text and "\n" not in text and "Traceback" not in text
    assert "/tmp" not in text and os.sep + "gradio" not in text  # no server temp path


def _browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        msg = f"no system browser ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {msg}")
        pytest.skip(msg)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1700"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))


def test_in_a_real_browser_upload_a_photo_and_mask_and_restore(app, tmp_path):
    """Catches: a page that does not render, widgets the user cannot reach (ids), a Restore button that does not
    produce the garment image in the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, files = app
    driver = _browser()
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)  # a loaded 2-core CI machine renders slowly
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"))
        assert not driver.find_elements(By.CSS_SELECTOR, "#garment img")  # no output before Restore
        driver.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(files["person"]))
        driver.find_element(By.CSS_SELECTOR, "#mask-source input[value=upload]").click()
        driver.find_element(By.CSS_SELECTOR, "#mask-upload input[type=file]").send_keys(str(files["mask"]))
        # Gradio renders the name as two spans (stem, extension) that the text can split across lines.
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#mask-upload [aria-label='mask.png']"))
        driver.find_element(By.CSS_SELECTOR, "#restore").click()
        img = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#garment img"))[0]
        wait.until(
            lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
        )
        assert driver.execute_script(
            "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img
        ) == [48, 64]
        assert driver.find_elements(By.CSS_SELECTOR, "#overlay img") and driver.find_elements(
            By.CSS_SELECTOR, "#crop img"
        )
    finally:
        driver.save_screenshot(str(tmp_path / "app.png"))
        driver.quit()
    assert (tmp_path / "app.png").stat().st_size > 0


def test_brush_strokes_become_the_mask():
    """Catches: the brush layer's painted pixels (alpha) not becoming the mask."""
    from igr.app import Restorer

    photo = Image.new("RGB", (60, 80), "white")
    layer = np.zeros((80, 60, 4), np.uint8)
    layer[10:30, 5:25, 0] = 255
    layer[10:30, 5:25, 3] = 255
    mask = Restorer(pipe=None).mask_for(
        photo, {"layers": [Image.fromarray(layer, "RGBA")]}, "brush", None, "upper"
    )
    expect = np.zeros((80, 60), np.uint8)
    expect[10:30, 5:25] = 1
    np.testing.assert_array_equal(mask, expect)


# --------------------------------------------------------------------------- bounded uploads (issue 36), headless


def _png_header(w: int, h: int) -> bytes:
    """A PNG that claims w×h and holds no pixel data: a few dozen bytes, enough for any header reader."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory):
    """(demo, restore fn, upload fn, editor component) on the tiny random-init pipeline, no server."""
    from igr.app import build_app
    from igr.config import CONFIG_DIR, load_model_config
    from igr.export import export_pipeline
    from igr.models import build_model
    from igr.pipeline import IGRPipeline

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "pipe"
    export_pipeline(build_model(load_model_config(CONFIG_DIR / "model" / "tiny.yaml")).eval(), folder)
    demo = build_app(IGRPipeline.from_pretrained(folder, device="cpu"), out_dir=tmp_path_factory.mktemp("out"))
    fns = {f.fn.__name__: f for f in demo.fns.values()}
    yield demo, fns["run"].fn, fns["upload"].fn, fns["run"].inputs[0]
    demo.restorer.close()


def _editor_payload(editor, path):
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData

    return editor.preprocess(EditorData(background=FileData(path=str(path)), layers=[], composite=None))


def _page_error(fn, *args):
    import gradio as gr

    with pytest.raises(gr.Error) as info:
        fn(*args)
    text = info.value.message
    assert "\n" not in text and "Traceback" not in text and "Could not preprocess" not in text
    return text


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("cut.jpg", None, "photo: unreadable photo image"),  # a truncated JPEG (made below)
        ("shirt.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "photo: not an image"),
        ("notes.txt", b"hello\n", "photo: not an image"),
        ("bomb.png", _png_header(13000, 13000), "over the limit of 89,478,485 pixels"),
        ("phone108.png", _png_header(12000, 9000), "over the limit of 89,478,485 pixels"),
    ],
)
def test_an_unreadable_photo_is_one_line_naming_the_widget_without_server_paths(tiny_app, tmp_path, name, data, message):
    """Catches: Gradio decoding the upload itself (its multi-line 'Could not preprocess input component'), the
    pixel limit checked after a full decode, and server temp paths in the page's message."""
    demo, run, upload, editor = tiny_app
    path = tmp_path / "gradio-temp" / name
    path.parent.mkdir()
    if data is None:
        buf = __import__("io").BytesIO()
        Image.fromarray(np.full((200, 150, 3), 120, np.uint8)).save(buf, "JPEG")
        data = buf.getvalue()[: len(buf.getvalue()) // 2]
    path.write_bytes(data)
    value = _editor_payload(editor, path)  # nothing decoded here: it cannot fail
    assert value["background"] == str(path)
    for text in (_page_error(run, value, "upper", "brush", None, 2, 1.5, 0), _page_error(upload, value)):
        assert message in text and str(tmp_path) not in text, text


def test_the_pixel_limit_is_checked_before_anything_decodes(tiny_app, tmp_path, monkeypatch):
    """Catches: a 518 KB PNG of 13000×13000 decoded (3 GB) before the limit refuses it."""
    from PIL import ImageFile

    def no_decode(self):
        raise AssertionError(f"decoded a {self.size} image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    demo, run, upload, editor = tiny_app
    (tmp_path / "bomb.png").write_bytes(_png_header(13000, 13000))
    value = _editor_payload(editor, tmp_path / "bomb.png")
    assert "over the limit" in _page_error(run, value, "upper", "brush", None, 2, 1.5, 0)
    assert "over the limit" in _page_error(upload, value)


@pytest.mark.parametrize("blank", ["transparent", "white"])
def test_a_blank_photo_is_refused_not_restored(tiny_app, tmp_path, blank):
    """Catches: a 'restored garment' computed from the empty canvas the browser sends for a photo it could not
    show (a 72 MP photo): transparent, which Gradio flattened to white."""
    demo, run, upload, editor = tiny_app
    mode, colour = ("RGBA", (0, 0, 0, 0)) if blank == "transparent" else ("RGB", (255, 255, 255))
    Image.new(mode, (60, 80), colour).save(tmp_path / "canvas.png")
    _save = np.zeros((80, 60), np.uint8)
    _save[20:60, 10:50] = 255
    Image.fromarray(_save).save(tmp_path / "mask.png")
    value = _editor_payload(editor, tmp_path / "canvas.png")
    text = _page_error(run, value, "upper", "upload", str(tmp_path / "mask.png"), 2, 1.5, 0)
    assert text.startswith("photo:") and "could not show" in text


def test_a_large_photo_is_downsized_once_on_upload_and_brush_strokes_follow(tiny_app, tmp_path):
    """Catches: a large photo reaching the editor (and the model) at full size, and brush strokes painted on the
    full-size photo being dropped once the app works on the downsized copy."""
    from igr.app import MAX_SIDE

    demo, run, upload, editor = tiny_app
    big = Image.linear_gradient("L").resize((6000, 4000)).convert("RGB")  # 24 MP, smooth: a small JPEG
    big.save(tmp_path / "big.jpg", quality=80)
    value = _editor_payload(editor, tmp_path / "big.jpg")
    new = upload(value)
    assert new["background"].size == (MAX_SIDE, MAX_SIDE * 4000 // 6000) and new["layers"] == []
    small = tmp_path / "small.jpg"
    _small = Image.new("RGB", (60, 40), "red")
    _small.paste(Image.new("RGB", (30, 20), "blue"), (0, 0))
    _small.save(small)
    assert upload(_editor_payload(editor, small)) == {"__type__": "update"}  # gr.skip(): left as it is

    layer = np.zeros((4000, 6000, 4), np.uint8)
    layer[1000:3000, 1500:4500, 3] = 255  # painted on the full-size photo
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    value["layers"] = [str(tmp_path / "layer.png")]
    overlay, crop, garment, download = run(value, "upper", "brush", None, 2, 1.5, 0)
    assert overlay.size == new["background"].size and garment.size == (48, 64)
    assert Path(download).is_file()


def test_uploads_are_capped_and_cleaned_up_on_exit_and_sigterm(tiny_app, tmp_path, monkeypatch):
    """Catches: no max_file_size, no delete_cache, and users' uploads and garments left in the temp folders
    after the server stops (also when stopped by SIGTERM)."""
    import signal

    import gradio as gr

    from igr import app as app_module

    demo, *_ = tiny_app
    assert demo.delete_cache == (app_module.CACHE_AGE // 6, app_module.CACHE_AGE)
    seen = {}

    def fake_launch(self, **kwargs):  # the server's lifetime: a request leaves files, then `kill` arrives
        seen.update(kwargs, demo=self)
        out = self.restorer.out_dir / "tmpreq" / "garment.png"
        out.parent.mkdir(parents=True)
        out.write_bytes(b"garment")
        upload = tmp_path / "gradio" / "abc123" / "person.jpg"
        upload.parent.mkdir(parents=True)
        upload.write_bytes(b"photo")
        self.upload_file_set.add(str(upload))
        seen["files"] = (out, upload)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            raise AssertionError("SIGTERM did not stop the server")
        except KeyboardInterrupt:  # what Gradio's block_thread does with it
            pass

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    before = signal.getsignal(signal.SIGTERM)
    app_module.serve(tiny_app[0].restorer.pipe, port=0)
    assert seen["max_file_size"] == f"{app_module.MAX_UPLOAD_MB}mb"
    out, upload = seen["files"]
    assert not out.exists() and not out.parent.parent.exists()  # the igr-app-* folder
    assert not upload.exists() and not upload.parent.exists()
    assert signal.getsignal(signal.SIGTERM) == before


def test_stopping_the_server_with_sigterm_deletes_uploads_and_results(tmp_path):
    """Catches: users' photos left in Gradio's temp folder and their garments in igr-app-* after `kill`. A server
    of its own, used through the API only (the browser test's editor upload leaves a file Gradio does not track:
    a known gap, not covered here)."""
    proc, url, log = _start_server(tmp_path)
    try:
        _call(_client(url), _images(tmp_path))  # one restoration: an upload, a result, cached outputs
        uploaded = [p for p in (tmp_path / "gradio").rglob("*") if p.is_file()]
        assert uploaded and list((tmp_path / "systmp").glob("igr-app-*"))  # there was something to clean up
        proc.terminate()  # SIGTERM
        assert proc.wait(timeout=60) is not None
        left = [p for p in (tmp_path / "gradio").rglob("*") if p.is_file()]
        assert not left and not list((tmp_path / "systmp").glob("igr-app-*")), left
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_page_messages_never_show_server_paths():
    """Catches: an error from deep inside (an OSError naming Gradio's temp folder, our igr-app-* folder) shown
    with the server's path."""
    from igr.app import public_message

    text = "restoration failed (OSError: [Errno 28] No space: '/tmp/gradio/3f2a/photo.png')\n  more"
    assert public_message(text) == "restoration failed (OSError: [Errno 28] No space: 'photo.png') more"
    assert public_message("/tmp/igr-app-x1/tmpq/garment.png: cannot write") == "garment.png: cannot write"
    assert public_message("steps 1/2, a/b") == "steps 1/2, a/b"  # not paths


_RSS_SCRIPT = r"""
import os, sys, tempfile
from pathlib import Path
import numpy as np
from PIL import Image
from igr import restore_io
from igr.app import Restorer

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

class Pipe:  # the model's part of a request at the model resolution: what is measured is the app's own memory
    resolution = (64, 48)
    def prepare(self, photo, mask, name):
        return restore_io.model_inputs(photo, mask, self.resolution, name)
    def generate(self, person, mask, categories, **kw):
        return (person + 1) / 2
    def garment_crop(self, person, mask):
        return restore_io.to_pil((person[None] + 1) / 2)[0]

tmp = Path(sys.argv[1])
W, H = 6000, 4000  # 24 MP, a phone photo
Image.linear_gradient("L").resize((W, H)).convert("RGB").save(tmp / "big.jpg", quality=85)
m = np.zeros((H, W), np.uint8)
m[H // 4 : 3 * H // 4, W // 4 : 3 * W // 4] = 255
Image.fromarray(m).save(tmp / "mask.png")
restorer = Restorer(Pipe(), tmp / "out")
editor = {"background": str(tmp / "big.jpg"), "layers": [], "composite": None}
base = rss_mb()
for seed in range(20):
    restorer(editor, "upper", "upload", str(tmp / "mask.png"), 2, 1.5, seed)
print(rss_mb() - base)
"""


@pytest.mark.slow  # ~40 s on a loaded 2-core machine: twenty 24 MP decodes and resizes
def test_rss_returns_within_a_bound_after_twenty_large_requests(tmp_path):
    """Catches: memory kept per request (a decoded photo, a mask, a result held on to), which grew the server
    from 1.2 GB to 5.4 GB. Measured on this code: +83-90 MB after the first request (allocator arenas, PIL's
    codecs), +45 MB after each of the next 19 — flat. 150 MB is 3x the settled growth and below two full-size
    24 MP photos (72 MB each): one kept per request would cross it by the second request."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    growth = float(out.stdout.split()[-1])
    assert growth < 150, f"RSS grew by {growth:.0f} MB over 20 requests"
