# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 — Low-rank matrices, the manifold $\mathcal M_r$ and its tangent projector
#
# **You will learn**
#
# * how a rank-$r$ matrix is stored as $Y = U S V^\top$ (`dlrt_ref.lowrank.LowRankMatrix`)
#   and why $S$ need not be diagonal;
# * the truncated SVD and the Eckart–Young theorem: the best rank-$r$ approximation
#   and its error $\big(\sum_{j>r}\sigma_j^2\big)^{1/2}$ (`best_rank_r`, `truncate`);
# * the manifold $\mathcal M_r$ of rank-$r$ matrices, its tangent space $T_Y\mathcal M_r$
#   and the orthogonal projector $P(Y)$ onto it (Koch & Lubich 2007, Sec. 2 and Lemma 4.1),
#   checked numerically: $P^2 = P$, $P = P^*$, $P(Y)Y = Y$.
#
# Everything later (the integrators, DLRT) is built from these pieces.
#
# Run as `python tutorials/01_low_rank_matrices.py`, or open as a notebook
# (see `tutorials/README.md`). `DLRT_QUICK=1` makes it smaller.

# %%
import numpy as np

from _tutorial import OUT, QUICK, banner, plt, savefig
from dlrt_ref.data import load_mnist
from dlrt_ref.lowrank import LowRankMatrix, best_rank_r, tangent_project
from dlrt_ref.ode.problems import random_orthonormal
from dlrt_ref.truncation import truncate

banner("01 low-rank matrices")
rng = np.random.default_rng(0)
m, n, r = (60, 40, 5) if QUICK else (200, 150, 10)

# %% [markdown]
# ## 1. Factors $U, S, V$
#
# A matrix of rank $r$ is stored by three factors: $U\in\mathbb R^{m\times r}$ and
# $V\in\mathbb R^{n\times r}$ with orthonormal columns ($U^\top U = V^\top V = I_r$) and an
# invertible core $S\in\mathbb R^{r\times r}$,
#
# $$ Y = U S V^\top . $$
#
# That is $r(m+n)+r^2$ numbers instead of $mn$. The factorisation is not unique: for
# orthogonal $P, Q$ ($r\times r$) also $Y = (UP)(P^\top S Q)(VQ)^\top$. The SVD is the
# special choice with $S$ diagonal; the integrators keep $S$ a full $r\times r$ matrix.

# %%
U = random_orthonormal(rng, m, r)  # (m, r)
V = random_orthonormal(rng, n, r)  # (n, r)
S = rng.standard_normal((r, r))  # (r, r), not diagonal
Y = LowRankMatrix(U, S, V)
print(f"U {U.shape}, S {S.shape}, V {V.shape}  ->  Y {Y.shape}, rank {Y.rank}")
print(f"stored numbers: r(m+n)+r^2 = {r * (m + n) + r * r}  vs  mn = {m * n}")
print("||U^T U - I|| =", np.linalg.norm(U.T @ U - np.eye(r)))
Yd = Y.to_dense()  # (m, n); only for checking
print("numerical rank of the dense Y:", np.linalg.matrix_rank(Yd))
print("singular values of Y = those of S:", np.allclose(Y.singular_values(), np.linalg.svd(Yd, compute_uv=False)[:r]))

# a gauge change P, Q leaves Y unchanged
P_, Q_ = random_orthonormal(rng, r, r), random_orthonormal(rng, r, r)
Y2 = LowRankMatrix(U @ P_, P_.T @ S @ Q_, V @ Q_)
print("gauge change: ||Y - Y'||_F =", np.linalg.norm(Y2.to_dense() - Yd))

# %% [markdown]
# ## 2. Best rank-$r$ approximation (Eckart–Young)
#
# For any $A\in\mathbb R^{m\times n}$ with SVD $A = \sum_j \sigma_j p_j q_j^\top$, the truncated SVD
# $\mathcal T_r(A) = \sum_{j\le r}\sigma_j p_j q_j^\top$ is a best rank-$r$ approximation in the
# Frobenius norm, and
#
# $$ \|A - \mathcal T_r(A)\|_F = \Big(\sum_{j>r}\sigma_j^2\Big)^{1/2}. $$
#
# We check this on two matrices: a synthetic one with singular values $2^{-j}$ (the
# toy problem of Lubich & Oseledets 2014, Sec. 5, at $t=0$) and a data matrix — MNIST
# images as rows, $B\times 784$.

# %%
k = min(m, n)
sig_toy = 2.0 ** -np.arange(1, k + 1)
A_toy = random_orthonormal(rng, m, k) @ np.diag(sig_toy) @ random_orthonormal(rng, n, k).T  # (m, n)
data = load_mnist(subset=200 if QUICK else 2000, test_subset=10)
A_img = data.x_train.astype(np.float64)  # (B, 784)
print("A_toy", A_toy.shape, "  A_img (MNIST rows)", A_img.shape)

ranks = np.arange(1, 41)
curves = {}
for name, A in ((r"toy, $\sigma_j = 2^{-j}$", A_toy), ("MNIST images", A_img)):
    s = np.linalg.svd(A, compute_uv=False)
    # measured error of the truncated SVD at every third rank (each is a full SVD of A)
    measured = [np.linalg.norm(A - best_rank_r(A, int(q)).to_dense()) for q in ranks[::3]]
    predicted = [np.sqrt(np.sum(s[q:] ** 2)) for q in ranks]
    curves[name] = (s, np.array(measured), np.array(predicted))
    print(f"{name:18s} rank 10: measured {measured[3]:.4e}, Eckart–Young {predicted[9]:.4e}")

# %% [markdown]
# `truncate` does the same on a small core and picks the rank from a tolerance:
# the smallest $r_1$ with $\big(\sum_{j>r_1}\sigma_j^2\big)^{1/2} \le \vartheta$
# (Ceruti, Kusch & Lubich 2022, Sec. 3.1). DLRT uses the relative form
# $\vartheta = \tau\,\|\sigma\|_2$ (Schotthöfer et al. 2022, Alg. 1).

# %%
core = np.diag(sig_toy[:20])
for theta in (1e-2, 1e-4):
    tr = truncate(core, theta=theta)
    print(f"ϑ = {theta:g}: rank {tr.rank}, discarded tail {tr.tail:.2e} <= ϑ")
tr = truncate(core, tau=0.1)
print(f"τ = 0.1: ϑ = τ||σ|| = {tr.theta:.3e}, rank {tr.rank}")

# %%
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
for i, (name, (s, meas, pred)) in enumerate(curves.items()):
    c = f"C{i}"
    a1.semilogy(np.arange(1, len(s) + 1), s / s[0], color=c, label=name)
    a2.semilogy(ranks[::3], meas / s[0], "o", color=c, markersize=5, label=f"{name}: measured")
    a2.semilogy(ranks, pred / s[0], "-", color=c, label=name + r": $(\sum_{j>r}\sigma_j^2)^{1/2}$")
a1.axhline(np.finfo(float).eps, color="0.5", linestyle=":", label="double-precision rounding level")
a1.set_xlabel("index $j$")
a1.set_ylabel(r"$\sigma_j / \sigma_1$ (dimensionless)")
a1.set_title("singular values")
a1.set_xlim(0, 100)
a1.set_ylim(1e-18, 3)
a1.legend()
a2.set_xlabel("rank $r$")
a2.set_ylabel(r"$\|A - \mathcal{T}_r(A)\|_F\, /\, \sigma_1$")
a2.set_title("best rank-$r$ error (Eckart–Young)")
a2.legend()
savefig(fig, "01_singular_values")

# %% [markdown]
# The data matrix has a slowly decaying spectrum: a handful of directions carry most
# of the "energy", but no small rank is exact. That is the situation DLRT lives in.
#
# ## 3. The manifold $\mathcal M_r$ and its tangent space
#
# $\mathcal M_r = \{Y\in\mathbb R^{m\times n}: \operatorname{rank} Y = r\}$ is a smooth manifold of
# dimension $r(m+n-r)$. Differentiating $Y(t) = U(t)S(t)V(t)^\top$ gives the tangent vectors
# (Koch & Lubich 2007, Sec. 2.1)
#
# $$ \delta Y = \delta U\, S V^\top + U\,\delta S\,V^\top + U S\,\delta V^\top,
#    \qquad U^\top\delta U = 0,\; V^\top \delta V = 0 \text{ (gauge conditions)}. $$
#
# The orthogonal projection onto $T_Y\mathcal M_r$ (Koch & Lubich 2007, Lemma 4.1) is
#
# $$ P(Y)Z = UU^\top Z - UU^\top Z VV^\top + Z VV^\top . $$
#
# It needs only $U$ and $V$. Dynamical low-rank approximation replaces $\dot A = F(A)$ by
# $\dot Y = P(Y)F(Y)$. This is optimal *instant by instant*: $P(Y)F(Y)$ is the tangent vector
# closest to $F(Y)$ (the Dirac–Frenkel time-dependent variational principle, Koch & Lubich 2007; the last
# two lines below show it). It is not optimal along the trajectory: $Y(t)$ is in general *not* the
# best rank-$r$ approximation $\mathcal T_r(A(t))$ of the exact solution; Koch & Lubich 2007
# bound the distance by the best-approximation error times constants that grow with time
# and with $1/\sigma_r$.

# %%
Y = LowRankMatrix(U, S, V)
Z = rng.standard_normal((m, n))  # an arbitrary direction, (m, n)
PZ = tangent_project(Y, Z)
PPZ = tangent_project(Y, PZ)
W = rng.standard_normal((m, n))
print("P^2 = P:          ||P(PZ) - PZ||_F / ||PZ||_F =", np.linalg.norm(PPZ - PZ) / np.linalg.norm(PZ))
print("P self-adjoint:   <PZ, W> - <Z, PW> =", np.sum(PZ * W) - np.sum(Z * tangent_project(Y, W)))
print("P(Y) Y = Y:       ||P(Y)Y - Y||_F =", np.linalg.norm(tangent_project(Y, Yd) - Yd))
print("rank of P(Y)Z:", np.linalg.matrix_rank(PZ), "<= 2r =", 2 * r)
print("normal part ⟂ tangent part: <Z - PZ, PZ> =", np.sum((Z - PZ) * PZ))
T_other = tangent_project(Y, rng.standard_normal((m, n)))  # another tangent vector
print("closest tangent vector: ||Z - PZ||_F =", np.linalg.norm(Z - PZ), "<= ||Z - T||_F =", np.linalg.norm(Z - T_other))

# %% [markdown]
# A tangent vector built from $\delta U, \delta S, \delta V$ with the gauge conditions is
# reproduced by $P(Y)$, and it is the first-order change of the curve $Y(\varepsilon)$:

# %%
dU = rng.standard_normal((m, r))
dU -= U @ (U.T @ dU)  # gauge: U^T dU = 0
dV = rng.standard_normal((n, r))
dV -= V @ (V.T @ dV)
dS = rng.standard_normal((r, r))
dY = dU @ S @ V.T + U @ dS @ V.T + U @ S @ dV.T  # (m, n)
print("P(Y) δY = δY:", np.linalg.norm(tangent_project(Y, dY) - dY) / np.linalg.norm(dY))
for eps in (1e-2, 1e-3, 1e-4):
    Ye = (U + eps * dU) @ (S + eps * dS) @ (V + eps * dV).T
    print(f"ε = {eps:g}: ||(Y(ε) - Y)/ε - δY||_F = {np.linalg.norm((Ye - Yd) / eps - dY):.2e}  (O(ε))")

# %% [markdown]
# ## Exercises
#
# 1. Show that $P(Y)$ depends only on the subspaces $\operatorname{span}U$, $\operatorname{span}V$:
#    replace $(U, S, V)$ by a gauge-transformed triple and compare `tangent_project`.
# 2. Compute $\|Z - P(Y)Z\|_F$ for $Y = \mathcal T_r(A)$ and $Z = A$. Why is it exactly the
#    Eckart–Young error? (Hint: $A - \mathcal T_r(A)$ is orthogonal to $T_Y\mathcal M_r$.)
# 3. Count the dimension of $T_Y\mathcal M_r$ numerically: apply `tangent_project` to the
#    $mn$ unit matrices (for small $m, n$) and compute the rank of the result. Compare with
#    $r(m+n-r)$.
# 4. The curvature of $\mathcal M_r$ grows like $1/\sigma_r(Y)$ (Koch & Lubich 2007, Lemma 4.2).
#    Make $\sigma_r$ of $S$ small and measure $\|P(Y_1) - P(Y_2)\|$ for two nearby points.
#    This is why naive integrators struggle — tutorial 02.
