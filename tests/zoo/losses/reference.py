"""Naive float64 loop implementations of the losses: the second computation the tests compare against."""

import torch


def unit(v):
    return v / v.norm()


def simclr(z1, z2, tau):
    z = [unit(v) for v in torch.cat([z1, z2]).double()]
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        den = sum(torch.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(z[i] @ z[pos] / tau) / den)
    return total / n2


def dclw_direction(a, b, tau, sigma, detach_weight):
    a = [unit(v) for v in a.double()]
    b = [unit(v) for v in b.double()]
    n = len(a)
    pos = [a[i] @ b[i] for i in range(n)]
    pos_w = [p.detach() if detach_weight else p for p in pos]
    norm = sum(torch.exp(p / sigma) for p in pos_w)
    total = 0.0
    for i in range(n):
        w = 2 - n * torch.exp(pos_w[i] / sigma) / norm
        neg = sum(torch.exp(a[i] @ b[k] / tau) + torch.exp(a[i] @ a[k] / tau) for k in range(n) if k != i)
        total = total + (-w * pos[i] / tau + torch.log(neg))
    return total / n


def vicreg(z1, z2, sum_variance=False, eps=1e-4):
    z1, z2 = z1.double(), z2.double()
    n, d = z1.shape
    inv = sum((z1[i, j] - z2[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def var_term(z):
        out = 0.0
        for j in range(d):
            col = z[:, j]
            var = sum((col[i] - col.mean()) ** 2 for i in range(n)) / (n - 1)
            out = out + torch.relu(1 - torch.sqrt(var + eps))
        return out / d

    def cov_term(z):
        zc = z - z.mean(0)
        out = 0.0
        for a in range(d):
            for b in range(d):
                if a != b:
                    out = out + (sum(zc[i, a] * zc[i, b] for i in range(n)) / (n - 1)) ** 2
        return out / d

    var = var_term(z1) + var_term(z2)
    var = var if sum_variance else var / 2
    return 25 * inv + 25 * var + cov_term(z1) + cov_term(z2)


def barlow(z1, z2, lam=0.0051):
    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False).double().train()
    a, b = bn(z1.double()), bn(z2.double())
    n, d = a.shape
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            total = total + ((1 - c) ** 2 if i == j else lam * c**2)
    return total


def byol(p1, p2, z1, z2):
    """Σ over the batch of ℓ(p1_i, z2_i) + ℓ(p2_i, z1_i), ℓ = ‖unit(p) − unit(z)‖², ÷ N (z detached)."""
    n = len(p1)
    total = 0.0
    for i in range(n):
        for p, z in ((p1[i], z2[i]), (p2[i], z1[i])):
            total = total + ((unit(p.double()) - unit(z.detach().double())) ** 2).sum()
    return total / n


def mocov3_contrast(q, k, tau):
    """−1/N Σ_i log softmax_j(q_i·k_j/τ)[i] · 2τ, loops."""
    q = [unit(v) for v in q.double()]
    k = [unit(v.detach()) for v in k.double()]
    n = len(q)
    total = 0.0
    for i in range(n):
        logits = [q[i] @ k[j] / tau for j in range(n)]
        total = total - (logits[i] - torch.log(sum(torch.exp(v) for v in logits)))
    return total / n * 2 * tau


def dino(student, teacher, center, student_temp, teacher_temp):
    """Σ over (global i, crop v ≠ i) of mean_b Σ_k −softmax((t_i − C)/τ_t)·log softmax(s_v/τ_s), ÷ #pairs."""
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            for b in range(len(t)):
                target = torch.softmax((t[b].detach().double() - center.double()[0]) / teacher_temp, dim=0)
                log_probs = torch.log_softmax(s[b].double() / student_temp, dim=0)
                total = total + sum(-target[k] * log_probs[k] for k in range(len(target))) / len(t)
            pairs += 1
    return total / pairs
