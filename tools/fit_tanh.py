"""Fit the rational approximation of tanh used by fastlstm.kernels.activations.

    tanh(x) ~ x * P(x^2) / Q(x^2)   on [0, 9],  P of degree 5, Q of degree 3, Q(0) = 1

(tanh is odd, so one fit covers both signs; beyond 9 float32 tanh is +-1.)
The coefficients come from a weighted linear least-squares fit of
y*Q(t) = x*P(t) on a dense grid, reweighted over a few dozen rounds toward the
smallest maximum relative error (Lawson's method); the best round is kept.
Prints the coefficients as float32 literals for the kernels and the max errors
of the float32 evaluation on a sample.

    python tools/fit_tanh.py
"""
import numpy as np

X_MAX = 9.0
NUM_DEG, DEN_DEG = 5, 3


def fit(num_deg=NUM_DEG, den_deg=DEN_DEG, rounds=80):
    x = np.unique(np.concatenate([np.linspace(0, 1, 4000), np.linspace(1, X_MAX, 8000)]))[1:]
    t = x * x
    y = np.tanh(x)
    w = np.ones_like(x)
    best = None
    for _ in range(rounds):
        a = np.concatenate([x[:, None] * t[:, None] ** np.arange(num_deg + 1),
                            -y[:, None] * t[:, None] ** np.arange(1, den_deg + 1)], axis=1)
        sw = np.sqrt(w) / y                      # relative error
        coef = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)[0]
        p = coef[:num_deg + 1]
        q = np.concatenate([[1.0], coef[num_deg + 1:]])
        err = np.abs(x * np.polyval(p[::-1], t) / np.polyval(q[::-1], t) - y) / y
        if best is None or err.max() < best[2]:
            best = (p, q, err.max())
        w = w * (err / err.max() + 1e-3)
        w /= w.mean()
    return best


def evaluate32(p, q, x):
    """The kernels' float32 evaluation (Horner), vectorized in numpy."""
    p = p.astype(np.float32)
    q = q.astype(np.float32)
    x = np.clip(x.astype(np.float32), np.float32(-X_MAX), np.float32(X_MAX))
    t = x * x
    num = np.full_like(t, p[-1])
    for c in p[-2::-1]:
        num = num * t + c
    den = np.full_like(t, q[-1])
    for c in q[-2::-1]:
        den = den * t + c
    return x * num / den


if __name__ == "__main__":
    p, q, e = fit()
    print(f"max relative error of the fit (float64): {e:.2e}")
    for name, cs in (("P", p), ("Q", q)):
        for i, c in enumerate(cs):
            print(f"_{name}{i} = np.float32({float(np.float32(c))!r})")
    x = np.linspace(-12, 12, 2_000_001).astype(np.float32)
    got = evaluate32(p, q, x).astype(np.float64)
    ref = np.tanh(x.astype(np.float64))
    err = np.abs(got - ref)
    print(f"float32 evaluation on a sample of [-12, 12]: max abs error {err.max():.2e}, "
          f"max rel error {(err[ref != 0] / np.abs(ref[ref != 0])).max():.2e}")
