"""The learned/forgotten rule: one transition of an example's state, written once for numpy and jax.numpy arrays.

Every forget/learn count in gdc comes from this rule: the tracker's fold (``gdc.tracker``) and the offline state
machine (``gdc.scoring.cartography.forget_events``) call ``transition``; the compiled kernels of
``gdc.scoring.fast``, which numba cannot make call it, keep one copy (``fast._transition``) that
tests/test_forgetting.py holds equal to it.

The rule, per example and observation:
  * ``loss`` criterion, with hysteresis: a not-learned example becomes learned when its loss < ``eps_low``; a
    learned one is forgotten when its loss > ``eps_high``; otherwise the state is kept (ties at a threshold and losses
    between the two thresholds included). ``eps_low == eps_high`` is the single-threshold rule.
  * ``accuracy`` criterion: learned when accuracy >= ``acc_learn``, forgotten when accuracy < ``acc_forget``.
  * A NaN observation (an unobserved checkpoint) compares False with every threshold, so it makes no event and keeps
    the state; callers that skip unobserved entries altogether get the same state.
  * Every example starts not learned, and a forget event needs the learned state, so forget counts <= learn counts.

Only operators are used (``<``, ``>``, ``>=``, ``&``, ``|``, ``~``), so the same code runs on numpy arrays, jax arrays
(inside jit) and numpy scalars, with comparisons in the operands' promoted dtype (a Python float threshold is
weakly typed: a float32 loss is compared in float32).
"""

CRITERIA = ("loss", "accuracy")


def transition(learned, loss, eps_low, eps_high, *, criterion="loss", acc=None, acc_learn=1.0, acc_forget=1.0):
    """One observation's step of the learned/forgotten state machine, elementwise.

    Args:
      learned: bool array, the state before this observation.
      loss: the observed loss (NaN: unobserved); read by the ``loss`` criterion.
      eps_low, eps_high: the loss criterion's learn and forget thresholds (scalars or broadcastable arrays).
      criterion: "loss" or "accuracy".
      acc: the observed accuracy in [0, 1]; read by the ``accuracy`` criterion.
      acc_learn, acc_forget: the accuracy criterion's learn and forget thresholds.

    Returns:
      (learned_now, learn_event, forget_event), bool arrays: the state after the observation, whether it was a
      not-learned -> learned transition, whether it was a learned -> forgotten one.
    """
    if criterion == "loss":
        learn_if, forget_if = loss < eps_low, loss > eps_high
    elif criterion == "accuracy":
        learn_if, forget_if = acc >= acc_learn, acc < acc_forget
    else:
        raise ValueError(f"criterion={criterion!r} is not one of {CRITERIA}.")
    learn_ev = ~learned & learn_if
    forget_ev = learned & forget_if
    return (learned | learn_ev) & ~forget_ev, learn_ev, forget_ev
