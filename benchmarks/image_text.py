"""Image-text debiasing benchmark: base, MID, MCTD, MME-JD and MRID on MMSD2.0 and MVSA-Single (3 seeds), plus the bias audit.

    python benchmarks/image_text.py mmsd2                      # ../shared/data/mmsd2, configs/image_text/mmsd2.yaml
    python benchmarks/image_text.py mvsa                       # ../shared/data/mvsa_single
    python benchmarks/image_text.py mmsd2 --train-limit 3000   # quick run on a random 3,000-sample training subset

Writes ``<out>/image_text_<dataset>.json`` / ``.md`` (mean +- std over seeds, router analysis, oracle bound,
cost table; see robustmsa.evaluation.mid_protocol) and ``<out>/image_text_<dataset>_bias_audit.json/.md/.png``
(lift of words and image attributes per label on the training split). Run from the repository root (the configs
name the data folders relative to it). Default ``--out``: benchmarks/results.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch

from robustmsa.config import parse_seeds
from robustmsa.data.text_corpora import read_image_attributes
from robustmsa.evaluation.bias_audit import bias_audit
from robustmsa.evaluation.mid_protocol import load_image_text_bundle, load_protocol_config, run_image_text_protocol

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"mmsd2": ROOT / "configs/image_text/mmsd2.yaml", "mvsa": ROOT / "configs/image_text/mvsa.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(CONFIGS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--config", type=Path, default=None, help="override the protocol YAML")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's)")
    parser.add_argument("--train-limit", type=int, default=None, help="random subset of the training split (quick runs; default: the config's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    logging.basicConfig(format="%(asctime)s %(message)s")  # warnings from everything, stage progress from the cost meter:
    logging.getLogger("robustmsa.evaluation.cost").setLevel(logging.INFO)
    config = load_protocol_config(args.config or CONFIGS[args.which])
    if args.train_limit is not None:
        config = config.model_copy(update={"train_limit": args.train_limit})
    seeds = parse_seeds(args.seeds) if args.seeds else None
    start = time.time()
    bundle = load_image_text_bundle(config)
    print(f"data ready in {time.time() - start:.0f} s: { {k: len(v) for k, v in bundle.splits.items()} }", flush=True)
    stem = f"image_text_{config.data.name}"
    results = run_image_text_protocol(config, args.out, seeds, bundle=bundle, overwrite=args.overwrite)
    folder = Path(config.data.params["folder"])
    attributes = read_image_attributes(folder / "image_attributes.txt") if "image" in bundle.dims() else None
    bias_audit(bundle, args.out, attributes=attributes, name=f"{stem}_bias_audit")
    print(f"done in {time.time() - start:.0f} s; {args.out / (stem + '.md')}")
    for method, metrics in results["aggregate"]["metrics"].items():
        print(method, {k: f"{v['mean']:.4f} ± {v['std']:.4f}" for k, v in metrics.items() if k in ("Acc", "F1", "Macro_F1")})


if __name__ == "__main__":
    main()
