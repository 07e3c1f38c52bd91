"""Chapter 6: the multimodal theory of Huang et al. (2021) in a simulation where
everything is known.

Huang, Du, Xue, Chen, Zhao and Huang, "What Makes Multi-modal Learning Better than
Single (Provably)", NeurIPS 2021 (arXiv:2106.04538), has no public code; this package is
the book's own construction.

A latent ``z`` generates ``K = 4`` modalities, each a noisy view of ``z`` that sees its
own block of ``z`` fully and the other blocks with weight ``overlap``. The *true
encoder* ``g*`` reads a small representation out of all modalities (the posterior mean
of ``V^T z`` given every modality), and the task is ``y = h*(g*(x)) + noise`` with a
linear ``h*``. So the risk of ``h*∘g*`` is the noise variance ``task_noise**2``,
exactly, and every quantity of the paper can be computed (for linear views in closed
form from the population covariances, for the nonlinear views on large fresh samples).

A learner sees only the modalities of a subset ``M`` (the others are zeroed, the paper's
``p_M``) and trains an encoder ``g`` (``rep_dim`` numbers) and a linear head ``h`` by
empirical risk minimisation (ERM) of the squared error over linear encoders and heads:
reduced-rank least squares, solved in closed form. The *latent representation quality*
of the trained encoder is ``eta(g) = inf_h r(h∘g) - r(h*∘g*)``: the best head refitted
on the frozen encoder.

Where the code lives (every name below is re-exported here, so
``multimodal_theory.name`` works as before):

* ``settings.py``: ``MODALITIES``, ``MODES``, ``BRAIN_MODALITIES``, ``BRAIN_TARGET``,
  ``REAL_MODES``; modality subsets (``parse_subset``, ``subset_name``, ``all_subsets``,
  ``nested_pairs``).
* ``simulator.py``: ``Problem``, ``true_encoder``, ``sample``, ``mask``.
* ``learning.py``: ``Learned``, ``fit_erm``, ``PENALTIES``, ``fit_ridge_erm``.
* ``quality.py``: risks and ``eta`` (``linear_map``, ``risk_exact``, ``eta_exact``,
  ``eta_population``, ``risk_sampled``, ``eta_sampled``) and ``rademacher_linear``.
* ``sweeps.py``: ``sweep`` and ``overlap_sweep``.
* ``tables.py``: ``summarise``, ``theorem1_table``, ``theorem1_summary``,
  ``theorem2_table``, ``crossover``, ``wilson_interval``, ``crossover_intervals``,
  ``chain_table``.
* ``figures.py``: ``plot_by_size``, ``plot_theorem1``, ``plot_overlap``,
  ``plot_late_fusion``.
* ``brain_data.py`` (real data, section 6.10): ``load_brain_subject``,
  ``brain_patches``.
* ``late_fusion.py``: ``LateFusion``, ``train_late_fusion``,
  ``train_late_fusion_subsets``, ``late_fusion_scores``, ``refit_risk``,
  ``refit_correct``, ``late_fusion_sweep``.
* ``late_fusion_tables.py``: ``late_fusion_table``, ``late_fusion_intervals``,
  ``late_fusion_comparisons``, ``fold_conclusion``, ``comparison_table``,
  ``interval_table``.
"""

from .brain_data import brain_patches, load_brain_subject
from .figures import plot_by_size, plot_late_fusion, plot_overlap, plot_theorem1
from .late_fusion import (
    LateFusion,
    late_fusion_scores,
    late_fusion_sweep,
    refit_correct,
    refit_risk,
    train_late_fusion,
    train_late_fusion_subsets,
)
from .late_fusion_tables import (
    comparison_table,
    fold_conclusion,
    interval_table,
    late_fusion_comparisons,
    late_fusion_intervals,
    late_fusion_table,
)
from .learning import PENALTIES, Learned, fit_erm, fit_ridge_erm
from .quality import (
    eta_exact,
    eta_population,
    eta_sampled,
    linear_map,
    rademacher_linear,
    risk_exact,
    risk_sampled,
)
from .settings import (
    BRAIN_MODALITIES,
    BRAIN_TARGET,
    MODALITIES,
    MODES,
    REAL_MODES,
    all_subsets,
    nested_pairs,
    parse_subset,
    subset_name,
)
from .simulator import Problem, mask, sample, true_encoder
from .sweeps import overlap_sweep, sweep
from .tables import (
    chain_table,
    crossover,
    crossover_intervals,
    summarise,
    theorem1_summary,
    theorem1_table,
    theorem2_table,
    wilson_interval,
)

__all__ = [
    "BRAIN_MODALITIES",
    "BRAIN_TARGET",
    "MODALITIES",
    "MODES",
    "PENALTIES",
    "REAL_MODES",
    "LateFusion",
    "Learned",
    "Problem",
    "all_subsets",
    "brain_patches",
    "chain_table",
    "comparison_table",
    "crossover",
    "crossover_intervals",
    "eta_exact",
    "eta_population",
    "eta_sampled",
    "fit_erm",
    "fit_ridge_erm",
    "fold_conclusion",
    "interval_table",
    "late_fusion_comparisons",
    "late_fusion_intervals",
    "late_fusion_scores",
    "late_fusion_sweep",
    "late_fusion_table",
    "linear_map",
    "load_brain_subject",
    "mask",
    "nested_pairs",
    "overlap_sweep",
    "parse_subset",
    "plot_by_size",
    "plot_late_fusion",
    "plot_overlap",
    "plot_theorem1",
    "rademacher_linear",
    "refit_correct",
    "refit_risk",
    "risk_exact",
    "risk_sampled",
    "sample",
    "subset_name",
    "summarise",
    "sweep",
    "theorem1_summary",
    "theorem1_table",
    "theorem2_table",
    "train_late_fusion",
    "train_late_fusion_subsets",
    "true_encoder",
    "wilson_interval",
]
