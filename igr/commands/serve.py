"""``igr serve``: the restoration web app (Gradio) on this machine.

    igr serve                                   # outputs/demo/pipeline (after `make demo`), http://127.0.0.1:7860
    igr serve --model org/igr-viton-hd --port 8080 --device cuda
    igr serve --model DIR --host 0.0.0.0        # reachable from the network: only on a network you trust

Automatic masks use the clothes parser of ``configs/masking.yaml`` (``igr download-weights --what parser``) or
``--parser``; without one the app offers the brush and uploaded masks. Needs the ``[app]`` extra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from igr.errors import IGRError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("--model", default="outputs/demo/pipeline", help="pipeline folder or Hub id")
    parser.add_argument("--parser", help="SegFormer clothes-parser folder (default: configs/masking.yaml's)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--share", action="store_true", help="open a public gradio.live link (off by default)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on CUDA), float32, float16, bfloat16")
    parser.add_argument(
        "--max-upload-mb", type=int, default=None, help="largest upload accepted, in MB (default 50)"
    )


def run(args: argparse.Namespace) -> int:
    from igr.app import MAX_UPLOAD_MB, _import_gradio, serve
    from igr.masking import load_masking_config
    from igr.pipeline import IGRPipeline, resolve_device, resolve_dtype

    _import_gradio()  # a missing extra fails before the model loads
    if not 0 < args.port < 65536:
        raise IGRError(f"--port {args.port}: must be in 1..65535")
    upload_mb = MAX_UPLOAD_MB if args.max_upload_mb is None else args.max_upload_mb
    if not 1 <= upload_mb <= 4096:
        raise IGRError(f"--max-upload-mb {upload_mb}: must be in 1..4096")
    model = Path(args.model)
    if not model.exists() and args.model == "outputs/demo/pipeline":
        raise IGRError("outputs/demo/pipeline: not found; run `make demo` first, or pass --model DIR|HUB_ID")
    device = resolve_device(args.device)
    pipe = IGRPipeline.from_pretrained(
        args.model, torch_dtype=resolve_dtype(args.dtype, device), device=device
    )
    parser_path = args.parser or load_masking_config().parser_path
    if parser_path and Path(parser_path).is_dir():
        pipe.load_parser(parser_path, dilation=load_masking_config().dilation)
    elif args.parser:
        raise IGRError(
            f"{args.parser}: garment parser not found (fetch it with `igr download-weights --what parser`)"
        )
    else:
        print(f"note: no garment parser at {parser_path}: automatic masks are off "
              "(igr download-weights --what parser)", file=sys.stderr)  # fmt: skip
    if args.host not in LOOPBACK:
        print(
            f"warning: serving on {args.host}: anyone who can reach this machine can use the app",
            file=sys.stderr,
        )
    print(f"IGR app for {args.model} on http://{args.host}:{args.port}", flush=True)
    serve(pipe, host=args.host, port=args.port, share=args.share, max_upload_mb=upload_mb)
    return 0
