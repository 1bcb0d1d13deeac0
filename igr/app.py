"""The web app (``igr serve``): drop in a photo, pick the garment, get it back as a product image.

The mask comes from the clothes parser (automatic, the default when a parser is loaded), from a brush drawn on the
photo, or from an uploaded mask file. The page shows the mask on the photo, the IP-Adapter's garment crop p_g and
the restored garment, with steps / guidance / seed controls, a progress bar and a download button. Every input
problem is shown in the page as the same one-line message the CLI prints (``gr.Error``), never a traceback.

Gradio is an optional extra: ``pip install -e .[app]``. The server binds to 127.0.0.1 unless told otherwise and
never opens a share link unless asked (``--share``).

The app is bounded: uploads above ``max_file_size`` are refused by Gradio; the photo editor hands us the uploaded
files undecoded, so the pixel limit of the CLI (:data:`igr.imageio.MAX_PIXELS`) is checked from the header before
anything decodes the image, and a photo larger than :data:`MAX_SIDE` is downsized once, on upload, to the copy the
editor shows and the model sees. A blank photo (what the browser's canvas sends for an image it could not show) is
an error, never a "restored garment" of a white image. Uploads, cached outputs and our ``igr-app-*`` folder are
deleted after :data:`CACHE_AGE` seconds and when the server stops (also on SIGTERM).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

from igr import imageio, restore_io
from igr.config import CATEGORIES
from igr.errors import IGRError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local app

SOURCES = ("automatic", "brush", "upload")
# Long side of the photo the app works on: twice the paper's 1024-pixel model height. The model and the parser
# see less; the brush has more than enough; the browser's canvas shows it (it shows a 72 MP photo black).
MAX_SIDE = 2048
MAX_UPLOAD_MB = 50  # a 108 MP phone JPEG is ~30 MB; a PNG of MAX_SIDE² is ~12 MB
CACHE_AGE = 1800  # s: uploads and results older than this are deleted (a session uploads, restores, downloads)
# An absolute path inside a message (a server temp folder): shown as its last component, the file's name.
_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:'\"(),]+/)+([^\s/:'\"(),]+)")


def _import_gradio():
    try:
        import gradio as gr
    except ImportError as exc:
        raise IGRError("the web app needs Gradio: pip install -e '.[app]'") from exc
    return gr


class Restorer:
    """The app's one action, independent of Gradio's widgets so it can be tested and reused."""

    def __init__(self, pipe, out_dir: str | Path | None = None) -> None:
        self.pipe = pipe
        self.owns_out_dir = out_dir is None  # ours to delete on exit
        self._out_dir = None if out_dir is None else Path(out_dir)
        self._lock = threading.Lock()  # one restoration at a time: the model and its caches are shared

    @property
    def out_dir(self) -> Path:
        """Where results are written; a fresh ``igr-app-*`` temporary folder unless given (made on first use)."""
        if self._out_dir is None:
            self._out_dir = Path(tempfile.mkdtemp(prefix="igr-app-"))
        self._out_dir.mkdir(parents=True, exist_ok=True)
        return self._out_dir

    def close(self) -> None:
        """Delete the results written (the users' garments): on exit, ours is a temporary folder."""
        if self.owns_out_dir and self._out_dir is not None:
            shutil.rmtree(self._out_dir, ignore_errors=True)

    def on_upload(self, editor):
        """A new photo in the editor: its header is checked, and a photo larger than :data:`MAX_SIDE` comes back
        downsized, once, so that the editor shows (and the brush paints on) the copy the model will see.
        → the editor's new value, or None when the upload is fine as it is."""
        background = _background(editor)
        if background is None or isinstance(background, Image.Image):
            return None
        data = _raw(background, "photo")
        if max(imageio.header_size(data, "photo", "photo")) <= MAX_SIDE:
            return None
        photo = restore_io.as_rgb(imageio.decode(data, "photo", "photo", max_side=MAX_SIDE), "photo")
        return {"background": photo, "layers": [], "composite": photo}

    def mask_for(
        self, photo: Image.Image, editor: dict | None, source: str, mask_file, category: str
    ) -> np.ndarray:
        """uint8 {0,1} mask at the photo's size from the chosen source."""
        if source == "automatic":
            return self.pipe.auto_mask(photo, category, name="photo")
        if source == "brush":
            layers = [x for x in (editor or {}).get("layers") or [] if x is not None]
            mask = np.zeros((photo.height, photo.width), np.uint8)
            for x in layers:
                layer = _open(x, "brush layer")
                if layer.size != photo.size:  # painted on the full-size photo, which the app downsized
                    if abs(layer.width / layer.height - photo.width / photo.height) > 0.02 * photo.width / photo.height:
                        continue  # not a layer of this photo
                    layer = layer.convert("RGBA").resize(photo.size, Image.Resampling.BOX)
                mask |= (_alpha(layer) > 0).astype(np.uint8)
            if not mask.any():
                raise IGRError(
                    "brush mask: empty mask (paint over the garment on the photo, or pick another source)"
                )
            return mask
        if source == "upload":
            if mask_file is None:
                raise IGRError("mask: no mask uploaded (white = garment), or pick another mask source")
            if isinstance(mask_file, (str, Path)):  # named by its file name, never the server's temp path
                name = f"uploaded mask {Path(mask_file).name}"
                mask, _ = restore_io.as_mask(imageio.decode(mask_file, "mask", name, max_side=MAX_SIDE))
            else:
                mask, _ = restore_io.as_mask(mask_file)
            restore_io.check_not_empty(mask, "uploaded mask")
            return restore_io.fit_mask(mask, (photo.height, photo.width), True, "uploaded mask", "the photo")
        raise IGRError(f"mask source '{source}': expected one of {', '.join(SOURCES)}")

    def __call__(self, editor, category, source, mask_file, steps, guidance, seed, progress=None):
        """→ (mask overlay, garment crop p_g, restored garment, path of the PNG to download)."""
        import torch

        from igr.masking import overlay

        photo = _photo(editor)
        category = restore_io.check_category(str(category), "category")
        steps = int(steps)
        if not 1 <= steps <= 1000:
            raise IGRError(f"steps {steps}: must be between 1 and 1000")
        mask = self.mask_for(photo, editor, source, mask_file, category)
        with self._lock:
            person_t, mask_t = self.pipe.prepare(photo, mask, name="photo")
            track = None if progress is None else (lambda ts: progress.tqdm(ts, desc="denoising"))
            out = self.pipe.generate(
                person_t[None], mask_t[None], [category], num_inference_steps=steps,
                guidance_scale=float(guidance), generator=[torch.Generator().manual_seed(int(seed))], progress=track,
            )  # fmt: skip
            crop = self.pipe.garment_crop(person_t, mask_t)
        [garment] = restore_io.to_pil(out)
        self._prune()
        # One folder per request: two users with the same seed and category must not download each other's.
        folder = Path(tempfile.mkdtemp(dir=self.out_dir))
        path = restore_io.write_image(garment, folder / f"garment-{category}-seed{int(seed)}.png")
        return overlay(photo, mask), crop, garment, str(path)

    def _prune(self) -> None:
        """Results older than :data:`CACHE_AGE` (Gradio has copied them to its cache, which it prunes itself)."""
        cutoff = time.time() - CACHE_AGE
        for folder in self.out_dir.glob("tmp*"):
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                pass


def _raw(x, what: str):
    """An undecoded upload: a path (str/Path) or the file's bytes, as the editor hands it over."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, (str, Path)):
        return imageio.read_file_bytes(x, what, what)  # the message names the widget, not the temp path
    raise IGRError(f"{what}: unexpected upload of type {type(x).__name__}")


def _open(x, what: str, max_side: int | None = None) -> Image.Image:
    if isinstance(x, Image.Image):
        return x
    if isinstance(x, np.ndarray):
        return Image.fromarray(x)
    return imageio.decode(_raw(x, what), what, what, max_side=max_side)


def _background(editor):
    return editor.get("background") if isinstance(editor, dict) else editor


def _alpha(img: Image.Image) -> np.ndarray:
    """A brush layer's painted pixels: its alpha channel (layers are transparent where nothing was drawn)."""
    if img.mode in ("RGBA", "LA") or "transparency" in img.info:
        return np.asarray(img.convert("RGBA"))[..., 3]
    return np.asarray(img.convert("L"))


def _photo(editor) -> Image.Image:
    """The editor's photo as RGB, at most :data:`MAX_SIDE` on its long side. A blank image — fully transparent,
    or one colour everywhere — is what the browser's canvas sends for a photo it could not show: refused."""
    background = _background(editor)
    if background is None:
        raise IGRError("photo: no person photo uploaded")
    img = _open(background, "photo", MAX_SIDE)
    if imageio.has_alpha(img) and img.convert("RGBA").getextrema()[3][1] == 0:
        raise IGRError(
            f"photo: the editor sent an empty image ({img.width}x{img.height}, fully transparent); the browser "
            f"could not show the photo — upload it again, or a smaller copy (at most {MAX_SIDE} pixels a side)"
        )
    photo = restore_io.as_rgb(img, "photo")
    if all(lo == hi for lo, hi in photo.getextrema()):
        raise IGRError(
            f"photo: every pixel has the same colour ({photo.width}x{photo.height}): a blank image, or a photo "
            f"the browser could not show — upload a smaller copy (at most {MAX_SIDE} pixels a side)"
        )
    return photo


def public_message(text: str) -> str:
    """One line for the page: server paths (Gradio's temp folders, ours) shown as the file's name only."""
    return _PATH.sub(r"\1", " ".join(str(text).split()))


def _photo_editor(gr, **kwargs):
    """Gradio's ImageEditor that hands the uploads to us undecoded (paths or bytes).

    Gradio's own preprocess decodes the whole photo before our code runs — a 13000×13000 PNG of 518 KB costs
    3 GB before any check — and reports an unreadable upload as a multi-line "Could not preprocess input
    component". Here nothing is decoded until :func:`_photo` has checked the header. The instance's
    ``preprocess`` is replaced rather than subclassed: Gradio writes a ``.pyi`` stub next to the module of every
    component class defined, which would write into the installed package."""
    editor = gr.ImageEditor(**kwargs)

    def preprocess(payload):
        if payload is None:
            return None
        if payload.id is not None:  # sent as blobs: Gradio keeps them in its blob storage
            cached = editor.blob_storage.pop(payload.id, None)
            files = (cached.background, cached.layers, cached.composite) if cached else (None, [], None)
        else:
            files = (payload.background, payload.layers, payload.composite)

        def raw(f):
            return f if f is None or isinstance(f, (bytes, bytearray, memoryview)) else f.path

        background, layers, composite = files
        return {
            "background": raw(background),
            "layers": [raw(x) for x in layers or [] if x is not None],
            "composite": raw(composite),
        }

    editor.preprocess = preprocess
    post = editor.postprocess

    def postprocess(value):
        # Gradio writes the images it sends back to the editor (the photo downsized on upload) into its cache
        # without tracking them; tracked here, :func:`cleanup` deletes them with the uploads.
        data = post(value)
        for f in (data.background, data.composite, *(data.layers or [])) if data is not None else ():
            if f is not None and getattr(f, "path", None):
                editor.temp_files.add(str(f.path))
        return data

    editor.postprocess = postprocess
    return editor


def build_app(pipe, title: str = "IGR garment restoration", out_dir: str | Path | None = None):
    """The Gradio Blocks of the app around an :class:`igr.pipeline.IGRPipeline`."""
    gr = _import_gradio()
    restorer = Restorer(pipe, out_dir)
    has_parser = pipe.parser is not None
    h, w = pipe.resolution

    def page_errors(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except IGRError as exc:
                raise gr.Error(public_message(exc)) from None
            except Exception as exc:  # a bug, not the user's input: the server log has the trace, the page one line
                traceback.print_exc()
                first = (str(exc).splitlines() or [""])[0][:200]
                raise gr.Error(public_message(f"restoration failed ({exc.__class__.__name__}: {first})")) from None

        return wrapped

    @page_errors
    def run(editor, category, source, mask_file, steps, guidance, seed, progress=gr.Progress()):
        return restorer(editor, category, source, mask_file, steps, guidance, seed, progress)

    @page_errors
    def upload(editor):
        new = restorer.on_upload(editor)
        return gr.skip() if new is None else new

    # delete_cache: every CACHE_AGE/6 s, uploads and cached outputs older than CACHE_AGE go; all of them on exit.
    with gr.Blocks(title=title, delete_cache=(CACHE_AGE // 6, CACHE_AGE)) as demo:
        gr.Markdown(
            f"## {title}\nUpload a photo of a person, pick the garment and restore it as a product image "
            f"({h}×{w}). " + ("" if has_parser else "**Automatic masks are off** (no garment parser loaded: "
                              "`igr download-weights --what parser`); draw or upload a mask.")
        )  # fmt: skip
        with gr.Row():
            with gr.Column():
                editor = _photo_editor(
                    gr, label="Person photo (paint over the garment for a brush mask)", type="filepath",
                    brush=gr.Brush(colors=["#ff3030"], color_mode="fixed"), layers=False, elem_id="photo",
                )  # fmt: skip
                category = gr.Radio(list(CATEGORIES), value="upper", label="Garment", elem_id="category")
                source = gr.Radio(
                    list(SOURCES),
                    value="automatic" if has_parser else "brush",
                    label="Mask",
                    elem_id="mask-source",
                )
                # A file, not an image widget: an unreadable upload reaches restore_io and gets its one-line error.
                mask_file = gr.File(
                    label="Uploaded mask (white = garment)", type="filepath", elem_id="mask-upload"
                )
                # The upload's path, as gr.File(type="filepath") gives it, without the empty temporary file
                # that its preprocess creates (and never deletes) in Gradio's cache on every call.
                mask_file.preprocess = lambda payload: None if payload is None else payload.path
                with gr.Accordion("Sampling", open=False):
                    steps = gr.Slider(
                        1, 100, value=pipe.sampling.steps, step=1, label="Steps", elem_id="steps"
                    )
                    guidance = gr.Slider(
                        1.0, 5.0, value=pipe.sampling.guidance_scale, step=0.1, label="Guidance"
                    )
                    seed = gr.Number(value=0, precision=0, label="Seed")
                button = gr.Button("Restore", variant="primary", elem_id="restore")
            with gr.Column():
                shown_mask = gr.Image(label="Mask on the photo", height=256, elem_id="overlay")
                crop = gr.Image(label="IP-Adapter crop p_g", height=256, elem_id="crop")
                garment = gr.Image(label="Restored garment", format="png", height=256, elem_id="garment")
                download = gr.DownloadButton("Download PNG", elem_id="download")
        editor.upload(upload, inputs=editor, outputs=editor, api_name=False)
        button.click(
            run, inputs=[editor, category, source, mask_file, steps, guidance, seed],
            outputs=[shown_mask, crop, garment, download], api_name="restore",
        )  # fmt: skip
    demo.restorer = restorer  # for serve()'s clean-up and for tests
    return demo


def cleanup(demo) -> None:
    """Delete what this app wrote: our results folder and every upload and cached output Gradio tracks for it
    (with the per-upload folders they sit in, once empty)."""
    demo.restorer.close()
    for files in demo.temp_file_sets:
        for file in list(files):
            path = Path(file)
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()  # Gradio's one-hash-per-file folder
            except OSError:
                pass
        files.clear()


def _terminate(signum, frame):
    raise KeyboardInterrupt  # Gradio's launch loop closes the server on it; our finally cleans up


def serve(
    pipe, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
    max_upload_mb: int = MAX_UPLOAD_MB, **launch,
) -> None:  # fmt: skip
    demo = build_app(pipe)
    previous = signal.signal(signal.SIGTERM, _terminate)  # `kill`, systemd, docker stop: clean up as on Ctrl-C
    try:
        demo.queue().launch(
            server_name=host, server_port=port, share=share, show_error=True,
            max_file_size=f"{max_upload_mb}mb", **launch,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
        demo.close()
        cleanup(demo)
