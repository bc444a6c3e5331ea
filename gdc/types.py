"""Type aliases and the shape-letter legend used in array names (``loss_B``, ``logits_BxLxV``).

Letters:
  B: batch (global, including padding rows).
  N: training examples in the dataset (ids 0..N-1; padding rows carry id N).
  L: sequence length (targets per example).
  V: vocabulary size.
  D: width (features or hidden units).
  E: epochs.
  K: classes.
  P: parameters (flattened).
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
