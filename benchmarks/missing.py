"""Missing-rate robustness benchmarks: baseline vs LNLN vs TCMR (text-centric backbone) and TFR-Net (its own network),
mean +- std over seeds.

    python benchmarks/missing.py synthetic --out runs/missing_synthetic          # generated default corpus, 3 seeds
    python benchmarks/missing.py ablations --out runs/missing_ablations          # TCMR variants / ablations
    python benchmarks/missing.py tcmr_blend_missing --out runs/tcmr_blend        # TCMR / LNLN, proxy blended into missing
    python benchmarks/missing.py lnln_blend_missing --out runs/lnln_blend        #   tokens only
    python benchmarks/missing.py lnln_latent --out runs/lnln_latent              # LNLN reconstructing encoder tokens
    python benchmarks/missing.py baseline_complete --out runs/baseline_complete  # the backbone trained on complete inputs
    python benchmarks/missing.py authors_protocol --out runs/authors_protocol    # trained under the LNLN authors' protocol
    python benchmarks/missing.py tfr_net --out runs/tfr_net                      # TFR-Net, with and without reconstruction
    python benchmarks/missing.py cmu --out runs/missing_mmmo                     # ../shared/data/cmu_mfn (MMMO)
    python benchmarks/missing.py cmu_tfr_net --out runs/mmmo_tfr_net             #   TFR-Net on it (combined into missing_mmmo)
    python benchmarks/missing.py cmu_youtube --out runs/missing_youtube          # ../shared/data/cmu_mfn (YouTube, 3 classes)
    python benchmarks/missing.py youtube_tfr_net --out runs/youtube_tfr_net      #   TFR-Net on it (combined into missing_youtube)
    python benchmarks/missing.py mmsd2 --out runs/missing_mmsd2                  # ../shared/data/mmsd2
    python benchmarks/missing.py mmsd2_tfr_net --out runs/mmsd2_tfr_net          #   TFR-Net on it (combined into missing_mmsd2)

Each run writes results.json, report.md and the PNG plots (see robustmsa.evaluation.missing_protocol).
Seeds can run in separate processes (``--seeds 1 --out runs/s1``) and be merged afterwards:

    python benchmarks/missing.py combine --out runs/missing_synthetic --runs runs/s0 runs/s1 runs/s2

The same command puts models run separately on the same seeds into one report, each paired seed by seed with
the first model; ``--seeds`` keeps only some seeds of the runs (e.g. 5-seed runs with 3-seed ones).
benchmarks/results/missing_synthetic_all: synthetic + tcmr_blend_missing + lnln_blend_missing + ablations + lnln_tuned +
lnln_latent + tfr_net + tfr_net_tuned + baseline_complete, seeds 0-2; missing_synthetic_all_ood: the same from their
``evaluate --split test_ood`` folders:

    python benchmarks/missing.py combine --seeds 0,1,2 --out runs/all --runs runs/missing_synthetic runs/tcmr_blend runs/ablations ...

benchmarks/results/missing_synthetic_5seeds (and _ood, _vs_lnln): seeds 0-4 of synthetic (``--seeds 3`` and
``--seeds 4``, combined with the 3-seed run), tcmr_blend_missing and lnln_latent (``--seeds 0,1,2,3,4``).
benchmarks/results/missing_synthetic_test4000 (and _vs_lnln): the same checkpoints evaluated on a 4000-clip IID test
split of the same corpus (training and validation data unchanged; per run, then combine):

    python benchmarks/missing.py evaluate --split test --data n_test=4000 --runs runs/s3 runs/s4 --out runs/t34

Model-specific training parameters can be searched on validation data first (Optuna; configs/missing/search/*.yaml;
several processes can work on one study with --worker 0, 1, ...); the tuned model is then swept like any other:

    python benchmarks/missing.py search_lnln --out runs/search_lnln [--worker 1]
    python benchmarks/missing.py search_tfr_net --out runs/search_tfr_net [--worker 1]   # TFR-Net's reconstruction weights
    python benchmarks/missing.py tfr_net_tuned --out runs/tfr_net_tuned   # the shipped result of that search
    python benchmarks/missing.py synthetic --config runs/search_lnln/best_sweep.yaml --out runs/lnln_tuned
    python benchmarks/missing.py lnln_tuned --out runs/lnln_tuned    # the shipped result of that search

The trained checkpoints of such runs can be evaluated on another split (no retraining), e.g. the generated
corpus's OOD test, whose topic words contradict the label (the text shortcut reversed):

    python benchmarks/missing.py evaluate --split test_ood --out runs/missing_synthetic_ood --runs runs/s0 runs/s1 runs/s2

Every report pairs the models with the reference model and gives bootstrap intervals over the test videos (see
robustmsa.evaluation.missing_protocol.sweep_intervals); ``--reference`` pairs them with another model instead, from
the per-sample outputs a run keeps in predictions.npz (git-ignored: it holds the test labels), e.g. TCMR against LNLN
(benchmarks/results/missing_synthetic_vs_lnln, missing_synthetic_ood_vs_lnln):

    python benchmarks/missing.py combine --runs benchmarks/results/missing_synthetic --reference lnln --out runs/vs_lnln

benchmarks/results/missing_synthetic_test4000_3seeds (and _vs_lnln): the checkpoints of missing_synthetic (and of
baseline_complete, combined in) on a 4000-clip IID test split (500 videos instead of 51), where the test-sampling
noise is about three times smaller:

    python benchmarks/missing.py evaluate --split test --data n_test=4000 --runs runs/missing_synthetic --out runs/t4000
    python benchmarks/missing.py evaluate --split test --data n_test=4000 --runs runs/baseline_complete --out runs/c4000
    python benchmarks/missing.py combine --runs runs/t4000 runs/c4000 --out runs/t4000_all

benchmarks/results/missing_authors_protocol (and _ood, _ood_vs_lnln, _test4000, _test4000_vs_lnln): the models
trained under the LNLN authors' training-time missingness, seeds 0-4 (one process per seed, then combine); on the
4000-clip test combined with the shared-protocol models of missing_synthetic_test4000 (``--reference
lnln_authors_protocol`` for the _vs_lnln folders):

    python benchmarks/missing.py authors_protocol --seeds 0 --out runs/ap_s0    # ... --seeds 4 --out runs/ap_s4
    python benchmarks/missing.py combine --runs runs/ap_s0 runs/ap_s1 runs/ap_s2 runs/ap_s3 runs/ap_s4 --out runs/ap
    python benchmarks/missing.py evaluate --split test --data n_test=4000 --runs runs/ap_s0 ... runs/ap_s4 --out runs/ap4000
    python benchmarks/missing.py combine --runs runs/ap4000 benchmarks/results/missing_synthetic_test4000 --out runs/ap4000_all

Whole-modality removal (the checkpoints of finished runs with each modality, and each pair, removed entirely; one
sweep-evaluate folder per condition and a summary report; benchmarks/results/missing_synthetic_removal, _removal_ood,
_removal_test4000, missing_mmmo_removal, missing_youtube_removal, missing_mmsd2_removal):

    python benchmarks/missing.py removal --split test --runs runs/missing_synthetic --out runs/removal [--data n_test=4000]

``evaluate --corrupt text`` corrupts the text alone at each rate (``--rates 1.0``: removes it); audio and vision stay
complete (benchmarks/results/missing_synthetic_text_only, and _test4000 with ``--data n_test=4000``):

    python benchmarks/missing.py evaluate --split test --corrupt text --runs runs/missing_synthetic --out runs/text_only

benchmarks/results/missing_synthetic and missing_synthetic_ood were trained again on 2026-12-07 with the current code,
with those intervals; their metrics moved by up to 0.018 MAE per seed against the runs of 2026-12-03. Not through
today's code: seed 0's baseline retrained here with the code of the commit that stored them (6eb1c33) gives today's
MAE 0.6139, not the stored 0.6055 (README, "deterministic"). missing_mmmo and missing_youtube were rerun the same way
(cmu + cmu_tfr_net, cmu_youtube + youtube_tfr_net, combined), and missing_mmsd2 (mmsd2 + mmsd2_tfr_net, combined;
its LNLN moved most: Acc 64.35 +- 0.96 against 60.23 +- 4.50 in the earlier run).
missing_ablations (and _ood) were trained again on 2026-12-07 with the intervals (``ablations --seeds 0``, 1, 2, then
combine); missing_ablations_vs_tcmr (and _ood: ``evaluate --split test_ood`` of the same four folders) pairs them and
missing_synthetic's models with TCMR's AOS default:

    python benchmarks/missing.py combine --runs runs/missing_synthetic runs/a0 runs/a1 runs/a2 --reference tcmr --out runs/vs_tcmr

The other generated-corpus folders (missing_tcmr_blend_missing, missing_lnln_blend_missing, missing_lnln_latent,
missing_lnln_tuned, missing_tfr_net, missing_tfr_net_tuned, their _ood, and the combined _all, _5seeds and _test4000
above) were trained again on 2026-12-07 with the intervals; missing_tcmr_blend_missing and missing_lnln_latent have
seeds 0-4. missing_tfr_net_vs_no_rec (and _ood) pairs TFR-Net's default and tuned reconstruction weights with the same
network trained without reconstruction:

    python benchmarks/missing.py combine --runs runs/tfr_net runs/tfr_net_tuned --reference tfr_net_no_rec --out runs/tfr_vs

benchmarks/results/missing_synthetic_e40 (trained again on 2026-12-07) is the earlier protocol, constant learning rate
and early stopping, which synthetic.yaml replaced by the cosine schedule (configs/missing/synthetic_e40.yaml says why):

    python benchmarks/missing.py synthetic --config configs/missing/synthetic_e40.yaml --out runs/e40
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from robustmsa.config import parse_numbers, parse_pairs, parse_seeds
from robustmsa.data.dataset import DataBundle
from robustmsa.data.synthetic import SyntheticConfig, generate_corpus
from robustmsa.evaluation.missing_protocol import (
    MissingSweepConfig,
    combine_sweeps,
    evaluate_sweep,
    load_sweep_config,
    modality_removal,
    read_sweep_results,
    sweep_config_of,
    sweep_missing,
)
from robustmsa.tuning.sweep import load_search_config, search_sweep_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "synthetic": ROOT / "configs/missing/synthetic.yaml",
    "ablations": ROOT / "configs/missing/tcmr_ablations.yaml",
    "tcmr_blend_missing": ROOT / "configs/missing/tcmr_blend_missing.yaml",
    "lnln_blend_missing": ROOT / "configs/missing/lnln_blend_missing.yaml",
    "lnln_tuned": ROOT / "configs/missing/lnln_tuned.yaml",
    "lnln_latent": ROOT / "configs/missing/lnln_latent.yaml",
    "baseline_complete": ROOT / "configs/missing/baseline_complete.yaml",
    "authors_protocol": ROOT / "configs/missing/synthetic_authors_protocol.yaml",
    "tfr_net": ROOT / "configs/missing/tfr_net.yaml",
    "tfr_net_tuned": ROOT / "configs/missing/tfr_net_tuned.yaml",
    "cmu": ROOT / "configs/missing/cmu_mmmo.yaml",
    "cmu_tfr_net": ROOT / "configs/missing/cmu_mmmo_tfr_net.yaml",
    "cmu_youtube": ROOT / "configs/missing/cmu_youtube.yaml",
    "youtube_tfr_net": ROOT / "configs/missing/cmu_youtube_tfr_net.yaml",
    "mmsd2": ROOT / "configs/missing/mmsd2.yaml",
    "mmsd2_tfr_net": ROOT / "configs/missing/mmsd2_tfr_net.yaml",
}
SEARCHES = {"search_lnln": ROOT / "configs/missing/search/lnln.yaml", "search_tfr_net": ROOT / "configs/missing/search/tfr_net.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=[*sorted(CONFIGS), *sorted(SEARCHES), "combine", "evaluate", "removal"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=None, help="override the sweep YAML")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's; with 'combine': only these of the runs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="with 'combine' / 'evaluate' / 'removal': the sweep folders")
    parser.add_argument("--split", default="test_ood", help="with 'evaluate' / 'removal': the split to evaluate the checkpoints on")
    parser.add_argument("--models", nargs="*", default=None, help="with 'evaluate' / 'removal': only these models of the runs")
    parser.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE", help="with 'evaluate' / 'removal': data parameters changed for it, e.g. n_test=4000")
    parser.add_argument("--reference", default=None, help="with 'combine' / 'evaluate' / 'removal': the model the others are paired with (default: the runs' reference)")
    parser.add_argument("--corrupt", nargs="*", default=None, help="with 'evaluate': corrupt only these modalities (default: the runs')")
    parser.add_argument("--rates", default=None, help="with 'evaluate': comma-separated missing rates (default: the runs')")
    parser.add_argument("--worker", type=int, default=0, help="with search_*: this process's worker number (own sampler seed)")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds) if args.seeds else None
    if args.which == "combine":
        summarise(combine_sweeps(args.runs, args.out, overwrite=args.overwrite, reference=args.reference, seeds=seeds))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    if args.which in ("evaluate", "removal"):
        if not args.runs:
            parser.error(f"{args.which} needs --runs")
        config = sweep_config_of(read_sweep_results(args.runs[0]), args.runs[0] / "results.json")
        given = {"overwrite": args.overwrite, "bundle": corpus(config), "data_params": parse_pairs(args.data, "--data"), "models": args.models, "reference": args.reference}
        if args.which == "removal":
            modality_removal(args.runs, args.split, args.out, **given)
            print(args.out / "report.md")
            return
        rates = parse_numbers(args.rates, "--rates", float) if args.rates else None
        summarise(evaluate_sweep(args.runs, args.split, args.out, **given, corrupted=args.corrupt, rates=rates))
        return
    if args.which in SEARCHES:
        search, sweep = load_search_config(args.config or SEARCHES[args.which])
        result = search_sweep_model(search, sweep, args.out, worker=args.worker, overwrite=args.overwrite, bundle=corpus(sweep))
        print(f"best trial {result['best']['number']}: {result['best']['value']:.4f} {result['best']['params']}; {args.out / 'best_sweep.yaml'}")
        return
    config = load_sweep_config(args.config or CONFIGS[args.which])
    start = time.time()
    results = sweep_missing(config, args.out, seeds=seeds, overwrite=args.overwrite, bundle=corpus(config))
    print(f"done in {time.time() - start:.0f} s; {args.out / 'report.md'}")
    summarise(results)


def corpus(config: MissingSweepConfig) -> DataBundle | None:
    """The generated corpus built directly from its settings; None for real data (the registered loaders read it)."""
    return generate_corpus(SyntheticConfig.from_dict(config.data.params)) if config.data.name == "synthetic" else None


def summarise(results: dict) -> None:
    """Print the mean over missing rates (mean +- std over seeds) of the headline metrics."""
    for name, agg in results["aggregate"].items():
        mean = agg["mean"]
        shown = {k: f"{v['mean']:.4f} ± {v['std']:.4f}" for k, v in mean.items() if k in ("MAE", "Non0_acc_2", "Acc", "F1", "Corr")}
        print(name, shown)


if __name__ == "__main__":
    main()
