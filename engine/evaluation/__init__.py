"""Separation quality with BSS Eval v4 (`museval`): figures, tracks, evaluation runs.

    from engine.evaluation import bss_eval, evaluate_models, iter_tracks

    bss_eval({"vocals": ref_v, "drums": ref_d}, {"vocals": est_v, "drums": est_d}, 44100)
    # -> {"vocals": {"SDR": 7.1, "SIR": ..., "SAR": ..., "ISR": ...}, "drums": {...}}
    evaluate_models(["htdemucs"], iter_tracks("MUSDB18-HQ", subset="test", tracks=5))
    score(estimates, track)     # one track's figures for estimates made elsewhere

Stages: `metrics` (museval's figures and the medians), `tracks` (data set layouts),
`runner` (separation through the engine, the estimate cache, aggregation). museval and
stempeg are imported only when used (the 'eval' extra).
"""

from engine.evaluation.metrics import METRICS, bss_eval, bss_eval_frames, evaluation_sets
from engine.evaluation.runner import (
           EvalProgress,
           aggregate,
           default_cache_dir,
           evaluate_models,
           score,
)
from engine.evaluation.tracks import BUILTIN, Track, find_tracks, iter_tracks, load_track

__all__ = ["BUILTIN", "METRICS", "EvalProgress", "Track", "aggregate", "bss_eval",
           "bss_eval_frames", "default_cache_dir", "evaluate_models", "evaluation_sets",
           "find_tracks", "iter_tracks", "load_track", "score"]
