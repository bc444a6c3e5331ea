"""Independent encoders and the two controls that the localization scores need to mean anything.

* Independent initialisations: each seed trains ``encoders`` candidate encoders f_r (on S_S + S_C) and as many
  independent ones g_r (on S_S + S_I). LayerMem pairs f_r with g_r, so its seed value is a mean over r rather than
  the draw of one pair. f_0 and g_0 use the keys a single-encoder run used, so d, m and the enrichment test (which read
  f_0) are unchanged by adding encoders.
* Untrained control: the same architecture at its initialisation (r-th key of its own stream), scored on the same
  examples and views. UnitMem of random ReLU units is far from 0 (a unit's largest mean over hundreds of examples
  sits well above their median), so a layer's UnitMem means something only as the excess over this floor.
* Supervised control: the same trunk trained with a softmax head on the digit labels (same augmentations, optimizer,
  batches, epochs). The paper contrasts SSL units, which single out examples (UnitMem), with supervised units, which
  single out classes (ClassMem).
"""

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gdc.studies.ssl import metrics
from gdc.studies.ssl import model as model_lib
from gdc.studies.ssl.config import SSLConfig

CLASSES = 10


def ssl_keys(seed: int, r: int) -> tuple[jax.Array, jax.Array]:
    """Training keys of (f_r, g_r) for one seed; r = 0 keeps the single-encoder keys."""
    f, g = jax.random.key(2 * seed), jax.random.key(2 * seed + 1)
    return (f, g) if r == 0 else (jax.random.fold_in(f, r), jax.random.fold_in(g, r))


def untrained_keys(seed: int, r: int) -> tuple[jax.Array, jax.Array]:
    """Initialisation keys of the r-th untrained pair (the f-side and g-side control) of one seed."""
    return jax.random.fold_in(jax.random.key(2 * seed), 2000 + r), jax.random.fold_in(
        jax.random.key(2 * seed + 1), 2000 + r
    )


def supervised_key(seed: int, r: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(2 * seed), 1000 + r)


def supervised_spec(spec: model_lib.EncoderSpec) -> model_lib.EncoderSpec:
    return dataclasses.replace(spec, proj_dim=CLASSES)


def train_supervised_stage(cfg: SSLConfig, spec, seeds, splits_of, x_NxD, y_N, workdir: str, compiler_options) -> None:
    """Trains the supervised controls of every seed and encoder in one vmapped program; writes ``controls.npz``."""
    path = os.path.join(workdir, "controls.npz")
    if os.path.exists(path):
        return
    sspec = supervised_spec(spec)
    gdef = model_lib.graphdef(sspec)
    ids, keys = [], []
    for s in seeds:
        sp = splits_of(s)
        for r in range(cfg.encoders):
            ids.append(np.concatenate([sp["shared"], sp["candidates"]]))
            keys.append(supervised_key(s, r))
    start = time.time()
    fn = jax.jit(
        jax.vmap(functools.partial(model_lib.train_supervised, sspec, gdef, jnp.asarray(x_NxD), jnp.asarray(y_N))),
        compiler_options=compiler_options,
    )
    params, train_E = jax.device_get(fn(jnp.stack(keys), jnp.asarray(np.stack(ids))))
    if not np.isfinite(train_E).all():
        raise FloatingPointError("NaN/inf in the supervised control's loss: lower ssl.lr.")
    print(f"[ssl] trained {len(ids)} supervised controls in {time.time() - start:.0f} s", flush=True)
    leaves = jax.tree.leaves(params)
    np.savez(path, train_loss=train_E, seconds=time.time() - start, **{f"param_{i}": x for i, x in enumerate(leaves)})


def unpack(spec: model_lib.EncoderSpec, data, j: int):
    """The j-th encoder's parameters from a ``param_<leaf>`` archive stacked over encoders."""
    leaves, treedef = jax.tree.flatten(model_lib.init(spec, jax.random.key(0)))
    return jax.tree.unflatten(treedef, [jnp.asarray(data[f"param_{i}"][j]) for i in range(len(leaves))])


def activations(fwd, params, views) -> list:
    """[A][L] of [N, U]: every layer's output on each of the A views, on the host."""
    return [jax.device_get(fwd(params, v)) for v in views]


def unit_stats(acts, labels_N: np.ndarray, trunk: int, rest: str) -> dict[str, list[float]]:
    """Mean UnitMem and ClassMem over the live units of each trunk layer, from ``activations`` on the views."""
    out = {"unitmem": [], "classmem": []}
    for li in range(trunk):
        mu_NxU = metrics.unit_mu(np.stack([a[li] for a in acts]))
        alive_U = mu_NxU.max(axis=0) > 0
        out["unitmem"].append(float(metrics.unit_mem(mu_NxU, rest)[0][alive_U].mean()))
        out["classmem"].append(float(metrics.class_mem(mu_NxU, labels_N, rest)[alive_U].mean()))
    return out


def layer_mem_pair(fwd, p_f, p_g, x_NxD, aug_views, layers: int) -> list[dict]:
    """LayerMem of every layer for the candidate encoder ``p_f`` against the independent ``p_g``."""
    dist = {}
    for who, p in (("f", p_f), ("g", p_g)):
        ref = jax.device_get(fwd(p, x_NxD))
        augs = [jax.device_get(fwd(p, v)) for v in aug_views]
        dist[who] = [metrics.alignment_distance(ref[li], np.stack([a[li] for a in augs])) for li in range(layers)]
    return [metrics.layer_mem(dist["f"][li], dist["g"][li]) for li in range(layers)]
