"""LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
ICML 2021): how well a frozen backbone's features fit the labels, before any training.

For each class, a Bayesian linear regression from the features ``F`` (N x D) to the class's
one-vs-rest target ``y`` has a marginal likelihood (the *evidence*) ``p(y | F, alpha, beta)``,
with ``alpha`` the prior precision of the weights and ``beta`` the noise precision. LogME is the
evidence maximised over ``alpha`` and ``beta``, per picture, averaged over the classes. Higher is
better; the scale depends on the data, so scores are compared between backbones on the *same*
pictures only.

Written here from the paper because no maintained package provides it: the authors' code
(thuml/LogME) is a research release, not a package, and ``logme`` on PyPI is a logging library.
One thin SVD of ``F`` serves every class, and the fixed-point updates of ``alpha`` and
``beta`` (MacKay 1992; Bishop, PRML 3.5.2) run in the SVD's basis, so a class costs O(N r)
with r = min(N, D). The evidence at given ``alpha, beta`` is :func:`evidence`, tested against
the Gaussian density it is (``y ~ N(0, I/beta + F F^T/alpha)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["evidence", "logme", "LogMEFit"]


@dataclass(frozen=True)
class _Basis:
    """The thin SVD of the features, as the evidence needs it."""

    n: int
    d: int
    u: np.ndarray  # N x r
    sigma: np.ndarray  # r squared singular values

    @classmethod
    def of(cls, features: np.ndarray) -> _Basis:
        f = np.asarray(features, dtype=np.float64)
        u, s, _ = np.linalg.svd(f, full_matrices=False)
        keep = s > s.max(initial=0.0) * 1e-12
        return cls(f.shape[0], f.shape[1], u[:, keep], s[keep] ** 2)


@dataclass(frozen=True)
class LogMEFit:
    """The maximised evidence of one target, and where it was found."""

    evidence: float  # log p(y | F, alpha, beta), whole target (not per picture)
    alpha: float
    beta: float
    iterations: int


def _terms(basis: _Basis, y: np.ndarray, alpha: float, beta: float):
    """(N - gamma, m^T m, ||y - F m||^2, log|A|) at ``alpha, beta`` (m: the posterior mean;
    gamma: the number of well-determined weights).

    Written with lambda = alpha / beta, which is all the first three depend on: when the
    features separate the classes, beta grows without bound and beta**2 would overflow. And
    N - gamma is summed from its own terms, (N - r) + sum(lambda / (lambda + sigma)), not
    subtracted: with more features than pictures gamma comes within rounding of N."""
    z = basis.u.T @ y
    outside = max(float(y @ y - z @ z), 0.0)  # the part of y the features cannot reach
    lam = alpha / beta
    shrink = lam + basis.sigma
    free = (basis.n - len(basis.sigma)) + float(np.sum(lam / shrink))
    mm = float(np.sum(basis.sigma * z**2 / shrink**2))
    residual = outside + float(np.sum((lam * z / shrink) ** 2))
    r = len(basis.sigma)
    log_det = r * math.log(beta) + float(np.sum(np.log(shrink))) + (basis.d - r) * math.log(alpha)
    return free, mm, residual, log_det


def _evidence(basis: _Basis, y: np.ndarray, alpha: float, beta: float) -> float:
    _, mm, residual, log_det = _terms(basis, y, alpha, beta)
    n, d = basis.n, basis.d
    return (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * residual - alpha / 2 * mm - log_det / 2)  # fmt: skip


def evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """``log p(y | F, alpha, beta)`` of the Bayesian linear model ``y = F w + noise``,
    ``w ~ N(0, I/alpha)``, noise ``~ N(0, I/beta)``."""
    return _evidence(_Basis.of(features), np.asarray(y, dtype=np.float64), alpha, beta)


def _maximise(basis: _Basis, y: np.ndarray, max_iter: int = 1000, tol: float = 1e-6) -> LogMEFit:
    alpha, beta, done, i = 1.0, 1.0, False, 0
    while not done and i < max_iter:
        i += 1
        free, mm, residual, _ = _terms(basis, y, alpha, beta)
        new_alpha = (basis.n - free) / max(mm, 1e-300)
        new_beta = free / max(residual, 1e-12 * float(y @ y), 1e-300)
        done = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
        alpha, beta = new_alpha, new_beta
    return LogMEFit(_evidence(basis, y, alpha, beta), alpha, beta, i)


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """The LogME score of ``features`` (N x D) for ``labels``: N class indices (each class's
    one-vs-rest target is fitted), or an N x C 0/1 matrix for multi-label pictures (each
    column is fitted, as the paper does). The maximised evidence per picture, averaged over
    the targets."""
    labels = np.asarray(labels)
    if features.shape[0] != labels.shape[0] or features.shape[0] < 2:
        raise ValueError("LogME needs at least two pictures, one label each")
    if labels.ndim == 2:
        targets = [labels[:, k].astype(np.float64) for k in range(labels.shape[1])]
    else:
        targets = [(labels == k).astype(np.float64) for k in np.unique(labels)]
    basis = _Basis.of(features)
    return float(np.mean([_maximise(basis, y).evidence / basis.n for y in targets]))
