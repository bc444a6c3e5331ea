"""Type aliases and the shape-letter legend used in array names (``loss_B``, ``logits_BxLxV``).

A name's suffix lists its axes, separated by ``x``. Each axis is one capital letter, or, for a rarer axis, a capital
and a lowercase letter (never ``x``); a digit is a literal size (``img_8x8``, ``acc_te_Ex2``). Each token has one
meaning:
  A: groups of a sensitive attribute (fairness: P(f = c | A = a)).
  B: batch (global, including padding rows). Bt: a batch's B x T token positions flattened into one axis of rows.
     Br: the rows a batched call scores before they are cut into batches of B (exposure's (canary, node) rows).
  C: canaries (one per inserted or control secret). Cs: a canary's candidate secrets (the 10^d digit strings of
     the space, or a sample of them).
  D: width: features, hidden units, embedding or model width. A second width in one expression is marked:
     Dh (one attention head, D / H), Dg (a recurrent cell's gate pre-activations, 3D or 4D), Di / Do (a layer's
     input / output), Df (the frequencies of a sinusoidal embedding).
  E: snapshots through training, in order: epochs, or the scoring passes / checkpoints a run records.
  F: numeric columns of a table row; Fc: its categorical columns.
  G: steps grouped into one dispatch or scan (stacked batches). Gd: groups of training rows that share a
     duplication count (the LM audit's candidate groups).
  H: attention heads.
  I: examples taken out or replaced one at a time (leave-one-out, replace-one).
  J: digit positions of a secret.
  K: classes (ICL: the task's K item classes). gdc.influence.counterfactual keeps the papers' K for the models of
     an ensemble (``in_KxN``, ``params_K``), as its docstring says; elsewhere a set of runs is R.
  L: sequence length (targets per example; a sequence of L positions).
  Ly: layers.
  M: a second set of examples or vectors, beside the N training examples (test points, probes, controls, the
     members of one run or of one group, the copies of the canaries in their rows).
  N: training examples in the dataset (ids 0..N-1; padding rows carry id N). Nt: the nodes of one level of a
     token tree (each node of the level above continued by Vc tokens); Na: the nodes of an earlier level; Nd: the
     nodes of the current level below one earlier node or root row (Nt = Na Nd = B Nd).
  P: parameters (flattened).
  Q: query rows (synthetic rows searched against the training set).
  R: runs of one procedure, trained or drawn together (retrains, shadow models, random replicates, permutations).
  S: settings of a sweep (eps thresholds, down-weighting alphas, swept K or N values); Sd: seeds.
  Sp: marked spans inside an example (span ids 1..Sp, ``tracker.spans``; e.g. the secret digits of a canary copy).
  T: time steps: token positions as fed or decoded (a training row has L + 1 tokens), diffusion steps; a KV
     cache's slots. Tk: the keys a token-tree node attends to (its root's T cache slots, one entry per earlier
     level, its own).
  U: units of a layer, scored one by one (UnitMem).
  V: vocabulary size. Vc: the tokens each node of a token tree is continued by (its children).
  X: copies of a canary (each inserted copy).
  Y: true labels (beside K, the predicted class).
  Z: random draws per example (diffusion noise and step, augmented views).

Keys already stored in artefacts keep the names they were written with, so some predate this legend: verify.json's
``divergence_IxA`` and ``ratio_mean_A`` (A: the swept alphas, S here), the ICL study's ``item_loss_ExT`` (T: the
tracked items, M here) and ``k_star_SxN`` (seeds x swept N: SdxS here), the LM audit's split.npz ``groups_GxS``
and ``dup_counts_G`` (G: the duplicate groups, Gd here; S: a group's rows, M here). The LM audit's probe results
``auroc_K``, ``auroc_wrong_K`` and ``oof_score_KxNxL`` (K: layers, Ly here) keep their names too.
"""

from typing import Any

import jax
import numpy as np

PyTree = Any
Array = jax.Array
# Model inputs plus "index" (int32 [B]), "mask" (bool [B]), optional "weight" (f32 [B]) and, with up-sampling,
# "occurrence" (int32 [B], the row's copy number in the epoch).
Batch = dict[str, Array]
HostBatch = dict[str, np.ndarray]
Metrics = dict[str, Array]
