"""``igr restore``: restore the garment from your own person photos, one image or a whole folder.

One image::

    igr restore --model outputs/demo/pipeline --person me.jpg --mask me_mask.png --category upper --out garment.png
    igr restore --model DIR --person 00001_00.jpg --mask-from-parse 00001_00.png --labels viton-hd \\
        --category upper --out garment.png
    igr restore --model DIR --person me.jpg --auto-mask --save-mask --category lower --out garment.png

A folder (``DIR/person/NAME.jpg`` + ``DIR/mask/NAME.png``, matched by stem; outputs ``OUT/NAME.png``)::

    igr restore --model DIR --input-dir photos/ --categories categories.csv --out-dir restored/

Every input problem is reported as one line naming the file, and nothing is written for it. In a folder, a bad
pair is reported and skipped, the rest are restored, and the exit code is 1 if anything failed. Existing outputs
are skipped unless ``--overwrite`` (an existing ``--out`` is an error: it was asked for by name); outputs are
written to a temporary file and renamed into place. An input file is never replaced, ``--overwrite`` or not, and
``--out-dir`` may not lie inside the person or mask folder.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from igr import restore_io
from igr.commands import DEMO_PIPELINE
from igr.config import CATEGORIES, parse_size
from igr.errors import IGRError
from igr.sampling import image_generators


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    m = parser.add_argument_group("model")
    m.add_argument(
        "--model",
        default=DEMO_PIPELINE,
        help=f"pipeline folder (igr export), or a model YAML with --weights (default: {DEMO_PIPELINE}, from make demo)",
    )
    m.add_argument(
        "--weights", help="with a model YAML: trained weights (Lightning .ckpt or pipeline folder)"
    )
    m.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a --weights checkpoint that needs unpickling (runs code from it: only a source you trust)",
    )
    m.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1, mps")
    m.add_argument(
        "--dtype", default="auto", help="auto (float16 on CUDA, else float32), float32, float16, bfloat16"
    )

    one = parser.add_argument_group("one image")
    one.add_argument("--person", help="person photo (any size; resized and padded to the model resolution)")
    one.add_argument(
        "--mask", help="garment mask of the photo: 1-channel or RGB, 0/1 or 0/255, white = garment"
    )
    one.add_argument(
        "--mask-from-parse", metavar="PARSE", help="build the mask from a human-parsing label map"
    )
    one.add_argument("--out", help="output image (.png, .jpg, .webp, ...)")
    auto = parser.add_argument_group("automatic masks (one image)")
    auto.add_argument(
        "--auto-mask", action="store_true",
        help="make the mask with a clothes-parsing SegFormer (configs/masking.yaml; igr download-weights --what parser)",
    )  # fmt: skip
    auto.add_argument("--parser", help="with --auto-mask: the SegFormer folder (default: configs/masking.yaml's)")
    auto.add_argument("--dilation", type=int, help="with --auto-mask: grow the mask by this many pixels")
    auto.add_argument(
        "--save-mask", action="store_true", help="also write the mask used, as OUT_STEM_mask.png next to --out"
    )

    many = parser.add_argument_group("a folder")
    many.add_argument("--input-dir", help="folder with person/ and mask/ subfolders, files matched by stem")
    many.add_argument("--out-dir", help="output folder: one STEM.png per pair")
    many.add_argument("--categories", metavar="CSV", help="'name,category' rows (name: stem or file name)")
    many.add_argument("--person-subdir", default="person", help="person subfolder name (default: person)")
    many.add_argument(
        "--mask-subdir",
        default="mask",
        help="mask subfolder name (default: mask); with --labels it holds parse maps (e.g. image-parse-v3)",
    )
    many.add_argument("--batch-size", type=int, default=1, help="images per model call (memory vs speed)")

    both = parser.add_argument_group("both modes")
    both.add_argument("--category", help=f"garment category for every image: {', '.join(CATEGORIES)}")
    both.add_argument(
        "--labels",
        help="parse-map labels of the garment: ids (5,6,7) or a dataset name — viton-hd (upper 5,6,7; lower 9,12; "
        "full 6) or dresscode (upper 4; lower 5,6; full 7)",
    )
    both.add_argument(
        "--mask-threshold", type=int, default=127, help="grey mask values above this are garment"
    )
    both.add_argument(
        "--resize-mask", action="store_true", help="scale a mask of another size to the person's"
    )
    # The defaults are the model's: its pipeline folder's (or YAML's) sampling settings, which differ per model.
    both.add_argument("--steps", type=int, help="denoising steps (default: the model's own)")
    both.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's own)")
    both.add_argument("--seed", type=int, default=0, help="noise seed; an image's noise comes from it and the file's name (default 0)")
    both.add_argument(
        "--size",
        help="HxW; must equal the model resolution (outputs always have it) — a check, the model restores at one size",
    )
    both.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: skip them)"
    )


@dataclass
class Item:
    """One prepared pair, ready for the model."""

    person: torch.Tensor  # (3,H,W) in [-1,1]
    mask: torch.Tensor  # (1,H,W) in {0,1}
    category: str
    out: Path
    key: str  # the person file's stem: with --seed it picks the image's noise


def run(args: argparse.Namespace) -> int:
    if bool(args.person) == bool(args.input_dir):
        raise IGRError("give --person (one image) or --input-dir (a folder), not both or neither")
    if args.steps is not None:
        train = _train_timesteps(args.model)
        if not 1 <= args.steps <= train:
            raise IGRError(f"--steps {args.steps}: must be from 1 to {train} (the model's train timesteps)")
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise IGRError(f"--guidance {args.guidance}: must be a finite number (1 = no guidance; default 1.5)")
    if args.batch_size < 1:
        raise IGRError(f"--batch-size {args.batch_size}: must be at least 1")
    if not 0 <= args.mask_threshold < 255:
        raise IGRError(f"--mask-threshold {args.mask_threshold}: must be in 0..254")
    size = parse_size(args.size) if args.size else None
    return _run_single(args, size) if args.person else _run_batch(args, size)


# --------------------------------------------------------------------------- one image


def _run_single(args: argparse.Namespace, size: tuple[int, int] | None) -> int:
    for flag in ("out_dir", "categories"):
        if getattr(args, flag):
            raise IGRError(
                f"--{flag.replace('_', '-')} is for folders (--input-dir); use --out with --person"
            )
    if not args.out:
        raise IGRError("--out: required with --person (the output image path)")
    if not args.category:
        raise IGRError(f"--category: required ({', '.join(CATEGORIES)})")
    category = restore_io.check_category(args.category, "--category")
    if sum(map(bool, (args.mask, args.mask_from_parse, args.auto_mask))) != 1:
        raise IGRError("give --mask MASK or --mask-from-parse PARSE --labels L, or --auto-mask (one of them)")
    if args.mask_from_parse and not args.labels:
        raise IGRError("--mask-from-parse: needs --labels (label ids like 5,6,7, or viton-hd / dresscode)")
    if args.labels and not args.mask_from_parse:
        raise IGRError("--labels: only used with --mask-from-parse (a parse map)")
    out = Path(args.out)
    if out.is_dir():  # not an output that exists: a mistake (--out where --out-dir was meant)
        raise IGRError(f"{out}: is a directory; --out takes the output image's file name (a folder: --out-dir)")
    mask_out = _mask_path(out) if args.save_mask else None
    # An input is never an output, --overwrite or not: compared by file identity (symlinks, hard links,
    # "./a.jpg" vs "a.jpg"), before anything is read or written.
    inputs = restore_io.file_ids([args.person, args.mask, args.mask_from_parse])
    for path, flag in ((out, "--out"), (mask_out, "--save-mask")):
        if path is not None and (src := restore_io.same_file(path, inputs)) is not None:
            raise IGRError(f"{flag} {path}: is the input {src}; an input is never replaced, choose another output")
    # One named output that exists: the user asked for this file, so saying "skipped" and exiting 0 would
    # let a script believe it was restored now.
    for path in (out, mask_out):
        if path is not None and path.exists() and not args.overwrite:
            raise IGRError(f"{path}: exists (pass --overwrite to replace it)")
    restore_io.check_writable(out)

    # Inputs are checked before the model loads: a typo costs a second, not a model load.
    person = restore_io.read_person(args.person)
    mask_name = args.mask or args.mask_from_parse or f"{args.person} (automatic mask)"
    if args.auto_mask:
        mask, n_grey = _auto_mask(args, person, category), 0
    elif args.mask:
        mask, n_grey = restore_io.read_mask(args.mask, args.mask_threshold)
    else:
        labels = restore_io.parse_labels(args.labels, category)
        mask, n_grey = restore_io.read_parse_mask(args.mask_from_parse, labels), 0
    _warn(restore_io.mask_warnings(mask, n_grey, mask_name, args.mask_threshold))
    mask = restore_io.fit_mask(mask, (person.height, person.width), args.resize_mask, mask_name, args.person)

    pipe = _load(args, size)
    person_t, mask_t = restore_io.model_inputs(person, mask, pipe.resolution, mask_name)
    item = Item(person_t, mask_t, category, out, Path(args.person).stem)
    with _progress("denoising") as progress:
        task = progress.add_task("denoising", total=None)

        def track(steps):
            progress.update(task, total=len(steps))
            for t in steps:
                yield t
                progress.advance(task)

        [image] = _restore(pipe, [item], args, track)
    try:
        restore_io.write_image(image, out)
        if mask_out is not None:
            restore_io.write_image(Image.fromarray(mask * 255, "L"), mask_out)
    except OSError as exc:  # checked writable before the run, but a disk can fill up meanwhile
        raise IGRError(f"{out}: cannot write ({exc.strerror or exc})") from exc
    print(f"wrote {out} ({image.height}x{image.width}, {category})" + (f" and {mask_out}" if mask_out else ""))
    return 0


# --------------------------------------------------------------------------- automatic masks


def _mask_path(out: Path) -> Path:
    """Where --save-mask writes: next to the output, lossless whatever the output's format."""
    return out.with_name(f"{out.stem}_mask.png")


def _auto_mask(args: argparse.Namespace, person, category: str):
    """The garment mask of the photo from the clothes parser (a one-line error when the garment is absent)."""
    from igr.masking import ClothesParser, load_masking_config

    config = load_masking_config()
    if args.dilation is not None:
        if args.dilation < 0:
            raise IGRError(f"--dilation {args.dilation}: must be at least 0")
        config.dilation = args.dilation
    parser = ClothesParser.from_config(config, args.parser)
    return parser.mask(person, category, name=str(args.person))


# --------------------------------------------------------------------------- a folder


def _run_batch(args: argparse.Namespace, size: tuple[int, int] | None) -> int:
    for flag in ("out", "mask", "mask_from_parse", "auto_mask", "save_mask"):
        if getattr(args, flag):
            raise IGRError(f"--{flag.replace('_', '-')} is for one image (--person); a folder uses --out-dir")
    if not args.out_dir:
        raise IGRError("--out-dir: required with --input-dir")
    if bool(args.category) == bool(args.categories):
        raise IGRError("give --category (one for all images) or --categories CSV, not both or neither")
    if args.category:
        restore_io.check_category(args.category, "--category")
    if args.labels:
        restore_io.parse_labels(args.labels, CATEGORIES[0])  # a malformed spec fails before any work
    for sub in (args.person_subdir, args.mask_subdir):
        folder = Path(args.input_dir) / sub
        if restore_io.is_within(args.out_dir, folder):  # outputs there would be next run's inputs
            raise IGRError(
                f"--out-dir {args.out_dir}: is inside the input folder {folder}; choose a folder outside "
                f"{args.person_subdir}/ and {args.mask_subdir}/ (e.g. {Path(args.input_dir) / 'restored'})"
            )
    out_dir = restore_io.check_writable(args.out_dir, is_dir=True)
    categories = restore_io.read_categories(args.categories) if args.categories else None
    pairs, problems = restore_io.find_pairs(args.input_dir, args.person_subdir, args.mask_subdir)
    inputs = restore_io.file_ids([p for pair in pairs for p in (pair.person, pair.mask)] + [args.categories])
    if not pairs and not problems:
        raise IGRError(f"{args.input_dir}: no images in {args.person_subdir}/ and {args.mask_subdir}/")
    failed = len(problems)
    for line in problems:
        _error(line)

    pipe = _load(args, size) if pairs else None
    restored = skipped = 0
    pending: list[Item] = []

    def flush() -> None:
        nonlocal restored, failed
        for item, image in zip(pending, _restore(pipe, pending, args)):
            try:
                restore_io.write_image(image, item.out)
                restored += 1
            except OSError as exc:  # disk full, folder removed: this output fails, the rest go on
                _error(f"{item.out}: cannot write ({exc.strerror or exc})")
                failed += 1
        pending.clear()

    with _progress("restoring") as progress:
        task = progress.add_task("restoring", total=len(pairs))
        for pair in pairs:
            out = out_dir / f"{pair.stem}.png"
            if out.is_dir():  # neither an earlier output nor replaceable by one: this pair fails
                _error(f"{out}: is a directory, cannot write the output of {pair.person} there")
                failed += 1
            elif (src := restore_io.same_file(out, inputs)) is not None:  # e.g. a link into person/
                _error(f"{out}: is the input {src}; an input is never replaced")
                failed += 1
            elif out.exists() and not args.overwrite:
                skipped += 1
            else:
                try:
                    pending.append(_prepare_pair(pair, categories, args, pipe.resolution, out))
                except IGRError as exc:
                    _error(str(exc))
                    failed += 1
                if len(pending) >= args.batch_size:
                    flush()
            progress.advance(task)
        if pending:
            flush()
    note = f", skipped {skipped} existing (--overwrite replaces them)" if skipped else ""
    print(f"restored {restored}{note}, failed {failed} → {out_dir}")
    return 1 if failed else 0


def _prepare_pair(pair, categories, args: argparse.Namespace, resolution, out: Path) -> Item:
    if categories is None:
        category = args.category
    elif pair.stem not in categories:
        raise IGRError(f"{args.categories}: no category for '{pair.stem}' ({pair.person})")
    else:
        category, line = categories[pair.stem]
        restore_io.check_category(category, f"{args.categories}: line {line}: '{pair.stem}'")
    person = restore_io.read_person(pair.person)
    if args.labels:
        labels = restore_io.parse_labels(args.labels, category)
        mask, n_grey = restore_io.read_parse_mask(pair.mask, labels), 0
    else:
        mask, n_grey = restore_io.read_mask(pair.mask, args.mask_threshold)
    _warn(restore_io.mask_warnings(mask, n_grey, pair.mask, args.mask_threshold))
    mask = restore_io.fit_mask(mask, (person.height, person.width), args.resize_mask, pair.mask, pair.person)
    person_t, mask_t = restore_io.model_inputs(person, mask, resolution, pair.mask)
    return Item(person_t, mask_t, category, out, pair.stem)


# --------------------------------------------------------------------------- shared


def _load(args: argparse.Namespace, size: tuple[int, int] | None):
    from igr.export import trusting_pickles
    from igr.pipeline import IGRPipeline, resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model = Path(args.model)
    if args.model == DEMO_PIPELINE and not model.exists():
        raise IGRError(f"{DEMO_PIPELINE}: not found; run `make demo` first, or pass --model DIR")
    if model.suffix in (".yaml", ".yml") and model.is_file():
        with trusting_pickles(args.trust_pickle):
            pipe = IGRPipeline.from_config(model, args.weights, device=device, dtype=dtype)
    else:
        if args.weights:
            raise IGRError("--weights: only used with a model YAML (a pipeline folder holds its weights)")
        from igr.pipeline import quiet_loading

        with quiet_loading():  # diffusers' loading bar, then perhaps a one-line error: only the error
            pipe = IGRPipeline.from_pretrained(model, device=device, dtype=dtype)
    if size is not None and tuple(size) != pipe.resolution:
        h, w = pipe.resolution
        raise IGRError(
            f"--size {size[0]}x{size[1]}: {model} restores at {h}x{w} only (it was trained at that size); "
            "inputs of any size are resized to it — omit --size"
        )
    return pipe


def _train_timesteps(model: str) -> int:
    """The model's train timesteps (the most DDIM steps it can take), from a local pipeline folder's model.yaml
    without loading it; the paper's 1000 otherwise (the pipeline checks again once loaded)."""
    from igr.config import DiffusionConfig

    folder = Path(model)
    if folder.is_dir() and (folder / "model.yaml").is_file():
        from igr.export import read_pipeline_config

        try:
            value = (read_pipeline_config(folder).get("diffusion") or {}).get("train_timesteps")
            if isinstance(value, int) and value > 0:
                return value
        except IGRError:
            pass  # a broken model.yaml is reported by the load, with its own message
    return DiffusionConfig().train_timesteps


def _restore(pipe, items: list[Item], args: argparse.Namespace, progress=None):
    # One generator per image, seeded from the seed and the image's name (igr.sampling.image_generators, as igr
    # eval does with sample keys): an image's result does not depend on the batch it is in.
    generators = image_generators(args.seed, [i.key for i in items])
    out = pipe.generate(
        torch.stack([i.person for i in items]),
        torch.stack([i.mask for i in items]),
        [i.category for i in items],
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator=generators,
        progress=progress,
    )
    return restore_io.to_pil(out)


def _progress(description: str):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # no bar in logs and pipes; the summary line says what happened
    )


def _error(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)
