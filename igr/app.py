"""The web app (``igr serve``): drop in a photo, pick the garment, get it back as a product image.

The mask comes from the clothes parser (automatic, the default when a parser is loaded), from a brush drawn on the
photo, or from an uploaded mask file. The page shows the mask on the photo, the IP-Adapter's garment crop p_g and
the restored garment, with steps / guidance / seed controls, a progress bar and a download button. Every input
problem is shown in the page as the same one-line message the CLI prints (``gr.Error``), never a traceback.

Gradio is an optional extra: ``pip install -e .[app]``. The server binds to 127.0.0.1 unless told otherwise and
never opens a share link unless asked (``--share``).
"""

from __future__ import annotations

import os
import tempfile
import threading
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

from igr import imageio, restore_io
from igr.config import CATEGORIES
from igr.errors import IGRError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local app

SOURCES = ("automatic", "brush", "upload")


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
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="igr-app-"))
        self._lock = threading.Lock()  # one restoration at a time: the model and its caches are shared

    def mask_for(
        self, photo: Image.Image, editor: dict | None, source: str, mask_file, category: str
    ) -> np.ndarray:
        """uint8 {0,1} mask at the photo's size from the chosen source."""
        if source == "automatic":
            return self.pipe.auto_mask(photo, category, name="photo")
        if source == "brush":
            layers = [x for x in (editor or {}).get("layers") or [] if x is not None]
            strokes = [_alpha(_open(x, "brush layer")) for x in layers]
            mask = np.zeros((photo.height, photo.width), np.uint8)
            for s in strokes:
                if s.shape == mask.shape:
                    mask |= (s > 0).astype(np.uint8)
            if not mask.any():
                raise IGRError(
                    "brush mask: empty mask (paint over the garment on the photo, or pick another source)"
                )
            return mask
        if source == "upload":
            if mask_file is None:
                raise IGRError("mask: no mask uploaded (white = garment), or pick another mask source")
            mask, _ = (
                restore_io.read_mask(mask_file)
                if isinstance(mask_file, (str, Path))
                else restore_io.as_mask(mask_file)
            )
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
        path = restore_io.write_image(garment, self.out_dir / f"garment-{category}-seed{int(seed)}.png")
        return overlay(photo, mask), crop, garment, str(path)


def _open(x, what: str) -> Image.Image:
    if isinstance(x, Image.Image):
        return x
    if isinstance(x, np.ndarray):
        return Image.fromarray(x)
    return imageio.decode(x, what)


def _alpha(img: Image.Image) -> np.ndarray:
    """A brush layer's painted pixels: its alpha channel (layers are transparent where nothing was drawn)."""
    if img.mode in ("RGBA", "LA") or "transparency" in img.info:
        return np.asarray(img.convert("RGBA"))[..., 3]
    return np.asarray(img.convert("L"))


def _photo(editor) -> Image.Image:
    background = (editor or {}).get("background") if isinstance(editor, dict) else editor
    if background is None:
        raise IGRError("photo: no person photo uploaded")
    return restore_io.as_rgb(_open(background, "person"), "photo")


def build_app(pipe, title: str = "IGR garment restoration", out_dir: str | Path | None = None):
    """The Gradio Blocks of the app around an :class:`igr.pipeline.IGRPipeline`."""
    gr = _import_gradio()
    restorer = Restorer(pipe, out_dir)
    has_parser = pipe.parser is not None
    h, w = pipe.resolution

    def run(editor, category, source, mask_file, steps, guidance, seed, progress=gr.Progress()):
        try:
            return restorer(editor, category, source, mask_file, steps, guidance, seed, progress)
        except IGRError as exc:
            raise gr.Error(str(exc)) from None
        except (
            Exception
        ) as exc:  # a bug, not the user's input: the server log has the trace, the page one line
            traceback.print_exc()
            raise gr.Error(
                f"restoration failed ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})"
            ) from None

    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            f"## {title}\nUpload a photo of a person, pick the garment and restore it as a product image "
            f"({h}×{w}). " + ("" if has_parser else "**Automatic masks are off** (no garment parser loaded: "
                              "`igr download-weights --what parser`); draw or upload a mask.")
        )  # fmt: skip
        with gr.Row():
            with gr.Column():
                editor = gr.ImageEditor(
                    label="Person photo (paint over the garment for a brush mask)", type="pil",
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
        button.click(
            run, inputs=[editor, category, source, mask_file, steps, guidance, seed],
            outputs=[shown_mask, crop, garment, download], api_name="restore",
        )  # fmt: skip
    return demo


def serve(pipe, host: str = "127.0.0.1", port: int | None = None, share: bool = False, **launch) -> None:
    demo = build_app(pipe)
    demo.queue().launch(server_name=host, server_port=port, share=share, show_error=True, **launch)
