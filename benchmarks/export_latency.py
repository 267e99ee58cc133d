"""CPU inference latency of an exported detector: PyTorch against onnxruntime, same process.

    python benchmarks/export_latency.py [--models tiny r50] [--iters 20] [--warmup 3]
        [--threads 2] [--batch 1] [--cls-bias B] [--out-dir /tmp/det-export-bench]

Models: ``tiny`` is ``presets/retinanet_tiny_synth.toml`` at 256 x 256 (3 classes); ``r50`` is
``presets/retinanet_r50.toml`` (80 classes, random init, ``backbone.init_cfg = false``) at
320 x 320; ``rtmdet`` is ``presets/rtmdet_tiny_synth.toml`` at 256 x 256 (3 classes) and
``rtmdet_tiny`` ``presets/rtmdet_tiny.toml`` (RTMDet-tiny, 80 classes, random init) at
640 x 640, its COCO input size. Each is exported with ``det``'s exporter (static shape, NMS in the graph, opset 18)
and timed on the same random normalised batch (N, 3, S, S):

* PyTorch: ``predict_batch(rescale=False)`` in eval mode under ``torch.inference_mode`` --
  network, decoding and batched NMS;
* onnxruntime: ``InferenceSession.run`` of the exported graph (CPUExecutionProvider, graph
  optimisations on) -- the same work inside one graph.

Both use ``--threads`` intra-op threads. After ``--warmup`` untimed runs of each, ``--iters``
runs alternate between the two, so a machine that slows down mid-way slows both; the table
gives the median and the 10th-90th percentiles in milliseconds. The classifier bias is set to
``--cls-bias`` (default logit(0.05): about half the random-init scores pass ``score_thr``, so
each level fills ``nms_pre`` and NMS has its realistic worst-case load). RTMDet's random-init
scores are all alike and its ``score_thr`` is 0.001, so at logit(0.05) every point and class
passes (its ``nms_pre`` is 30000): at 256 x 256, 1,344 points x 3 classes go to NMS; the
640 x 640 model gets ``--rtmdet-tiny-bias`` (default logit(0.0005), under ``score_thr``: no
candidate passes, so its row times the network and the score test -- a trained model keeps
a few hundred candidates, whose NMS the 256 row shows the cost of).

Denormal floats are flushed to zero in both runtimes (``torch.set_flush_denormal``, and
onnxruntime's ``session.set_denormal_as_zero``). Random-init weights (convs N(0, 0.01)) shrink
activations layer by layer into the denormal range, where x86 arithmetic is up to 100x slower:
without flushing, PyTorch's tiny-model forward took 1.5 s instead of 9 ms on the machine of
docs/performance.md. Trained weights rarely get there; random ones would measure the CPU's
denormal penalty, not the model.
"""

from __future__ import annotations

import argparse
import math
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import detcli  # noqa: E402
from detcli.export.onnx import ExportOptions, export_onnx  # noqa: E402
from detcli.structures.batch import ImageBatch  # noqa: E402

# name -> (preset, input side, overrides, the head's classifier: its bias is set, see above)
MODELS = {
    "tiny": (ROOT / "presets" / "retinanet_tiny_synth.toml", 256, [], "retina_cls"),
    "r50": (ROOT / "presets" / "retinanet_r50.toml", 320, ["model.backbone.init_cfg=false"],
            "retina_cls"),
    "rtmdet": (ROOT / "presets" / "rtmdet_tiny_synth.toml", 256, [], "rtm_cls"),
    "rtmdet_tiny": (ROOT / "presets" / "rtmdet_tiny.toml", 640,
                    ["model.backbone.init_cfg=false"], "rtm_cls"),
}
DEFAULT_MODELS = ["tiny", "r50", "rtmdet", "rtmdet_tiny"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=DEFAULT_MODELS)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cls-bias", type=float, default=-math.log(0.95 / 0.05))
    parser.add_argument("--rtmdet-tiny-bias", type=float, default=-math.log(0.9995 / 0.0005))
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/det-export-bench"))
    return parser.parse_args()


def percentiles(times: list[float]) -> tuple[float, float, float]:
    ordered = sorted(times)
    low = ordered[int(0.1 * (len(ordered) - 1))]
    high = ordered[int(math.ceil(0.9 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, low * 1e3, high * 1e3


def time_alternating(runs: dict[str, Callable[[], object]], iters: int, warmup: int
                     ) -> dict[str, list[float]]:
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(iters):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def classifier_biases(model: torch.nn.Module, classifier: str) -> list[torch.Tensor]:
    """The biases of the head's classifier ``classifier``: one conv (``retina_cls``) or one per
    level (``rtm_cls.0``, ``rtm_cls.1``, ...)."""
    pattern = re.compile(rf"bbox_head\.{classifier}(\.\d+)?\.bias")
    found = [p for n, p in model.named_parameters() if pattern.fullmatch(n)]
    if not found:
        raise SystemExit(f"no bbox_head.{classifier} bias in {type(model).__name__}")
    return found


def bench_model(name: str, args: argparse.Namespace) -> list[str]:
    import onnxruntime as ort

    preset, size, overrides, classifier = MODELS[name]
    cfg = detcli.load_config(preset, overrides=overrides).cfg
    torch.manual_seed(0)
    model = detcli.build_detector(cfg.model).eval()
    bias = args.rtmdet_tiny_bias if name == "rtmdet_tiny" else args.cls_bias
    with torch.no_grad():
        for tensor in classifier_biases(model, classifier):
            tensor.fill_(bias)
    path = args.out_dir / f"{name}_{size}.onnx"
    result = export_onnx(model, path, input_size=(size, size), options=ExportOptions())
    images = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    batch = ImageBatch.from_tensor(images)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"images": images.numpy()}

    def pytorch() -> object:
        with torch.inference_mode():
            return model.predict_batch(batch, rescale=False)

    times = time_alternating({"PyTorch": pytorch, "onnxruntime": lambda: session.run(None, feed)},
                             args.iters, args.warmup)
    kept = int(model.predict_batch(batch, rescale=False).num_dets.sum())
    rows = []
    for backend, samples in times.items():
        median, low, high = percentiles(samples)
        rows.append(f"| {name} | {size} | {args.batch} | {backend} | {median:.1f} | "
                    f"{low:.1f}-{high:.1f} | {kept} |")
    print(f"# {name}: exported in {result.seconds:.1f} s, {result.size_bytes / 2**20:.1f} MiB",
          file=sys.stderr)
    return rows


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # see the module docstring
    args.out_dir.mkdir(parents=True, exist_ok=True)
    import onnxruntime

    print(f"# {platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{args.iters} alternating runs after {args.warmup} warm-up runs each")
    print("| model | size | batch | backend | median ms | p10-p90 ms | detections kept |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        for row in bench_model(name, args):
            print(row)


if __name__ == "__main__":
    main()
