#!/usr/bin/python3
"""Trains the MTP module of stories260K by self-distillation (examples/mtp/README.md).

The main model is frozen: the module reads its token embedding, final norm and output head from
the checkpoint, and learns from the dump of decodekit-mtp-dump (per position: token, the main
model's final hidden state, its next-token logits). Module k at position i takes h(k-1, i) (depth
0: the dumped hidden state) and the token t(i+k), and is trained to predict t(i+k+1): KL divergence
to the main model's distribution at position i+k plus a small cross-entropy on the story's token.

A build-time tool only (Debian's python3-torch): the library, tests and demo never run Python.
Deterministic: fixed seeds, one thread, torch's deterministic algorithms.

  /usr/bin/python3 examples/mtp/train_mtp.py --dump /tmp/mtp-train.dump \
      --out examples/models/stories260K-mtp.bin \
      --fixture tests/e2e/fixtures/stories260K-mtp-cases.bin
"""
import argparse
import math
import struct
import sys
import time
import zlib

import numpy as np
import torch
import torch.nn.functional as F

FORMAT_MAGIC = b"DKMTPMOD"
FORMAT_VERSION = 1
EPS = 1e-5


# ---------------------------------------------------------------------------------------------
# Inputs: the llama2.c checkpoint (frozen parts) and the dump.

def read_checkpoint(path):
    """dim, hidden_dim, ..., and the token embedding, final norm and classifier as tensors."""
    raw = open(path, "rb").read()
    dim, hid, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    w = np.frombuffer(raw, dtype="<f4", offset=28)
    kv = dim // n_heads * n_kv
    head = dim // n_heads
    at = 0

    def take(n):
        nonlocal at
        a = w[at:at + n]
        at += n
        return a

    emb = take(vocab * dim).reshape(vocab, dim)
    take(n_layers * dim)  # rms_att
    take(n_layers * dim * dim)  # wq
    take(n_layers * kv * dim)  # wk
    take(n_layers * kv * dim)  # wv
    take(n_layers * dim * dim)  # wo
    take(n_layers * dim)  # rms_ffn
    take(n_layers * hid * dim * 3)  # w1, w2, w3
    rms_final = take(dim)
    take(seq_len * head)  # legacy freq_cis (real, imag)
    wcls = emb if shared else take(vocab * dim).reshape(vocab, dim)
    assert at == w.size, "checkpoint size does not match its header"
    cfg = dict(dim=dim, hidden=hid, n_heads=n_heads, n_kv_heads=n_kv, vocab=vocab)
    t = lambda a: torch.tensor(np.array(a, dtype=np.float32))
    return cfg, t(emb), t(rms_final), t(wcls)


def read_dump(path):
    """Stories of decodekit-mtp-dump: lists of (tokens, prompt_len, temperature) and flat
    tokens / hidden / logits arrays with each story's offset."""
    f = open(path, "rb")
    magic, version, dim, vocab, stories, positions = struct.unpack("<8sIIIIQ", f.read(32))
    assert magic == b"DKMTPDMP" and version == 1, "not a decodekit-mtp-dump file (version 1)"
    tokens = np.empty(positions, dtype=np.int64)
    hidden = np.empty((positions, dim), dtype=np.float32)
    logits = np.empty((positions, vocab), dtype=np.float32)
    meta = []
    at = 0
    for _ in range(stories):
        n, plen, temp = struct.unpack("<III", f.read(12))
        tokens[at:at + n] = np.frombuffer(f.read(4 * n), dtype="<i4")
        hidden[at:at + n] = np.frombuffer(f.read(4 * n * dim), dtype="<f4").reshape(n, dim)
        logits[at:at + n] = np.frombuffer(f.read(4 * n * vocab), dtype="<f4").reshape(n, vocab)
        meta.append((at, n, plen, temp / 1000.0))
        at += n
    assert at == positions and f.read(1) == b"", "dump size does not match its header"
    return dim, vocab, meta, tokens, hidden, logits


# ---------------------------------------------------------------------------------------------
# The module (the C++ forward in examples/llama2/mtp.hpp computes exactly this).

def rmsnorm(x, w):
    """run.c's rmsnorm: w * (x / sqrt(mean(x^2) + 1e-5))."""
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def rope(x, pos, head):
    """RoPE on adjacent pairs, frequency 10000^(-2i/head) (the backend's); x: [..., n, heads, head]."""
    half = torch.arange(0, head, 2, dtype=torch.float32)
    inv = 1.0 / (10000.0 ** (half / head))
    ang = pos[..., :, None].float() * inv  # [..., n, head/2]
    c, s = torch.cos(ang)[..., None, :], torch.sin(ang)[..., None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)


class Depth(torch.nn.Module):
    """One MTP module: [RMSNorm(h); RMSNorm(Emb(t))] -> proj (2d -> d) -> one block."""

    def __init__(self, dim, hidden, attention, n_heads, n_kv_heads):
        super().__init__()
        P = torch.nn.Parameter
        s_dim, s_hid = 1 / math.sqrt(dim), 1 / math.sqrt(hidden)
        self.hnorm = P(torch.ones(dim))
        self.enorm = P(torch.ones(dim))
        self.proj = P(torch.randn(dim, 2 * dim) * s_dim / math.sqrt(2))
        self.attention = attention
        if attention:
            kv = dim // n_heads * n_kv_heads
            self.n_heads, self.n_kv_heads, self.head = n_heads, n_kv_heads, dim // n_heads
            self.attn_norm = P(torch.ones(dim))
            self.wq = P(torch.randn(dim, dim) * s_dim)
            self.wk = P(torch.randn(kv, dim) * s_dim)
            self.wv = P(torch.randn(kv, dim) * s_dim)
            self.wo = P(torch.randn(dim, dim) * s_dim * 0.5)
        self.ffn_norm = P(torch.ones(dim))
        self.w1 = P(torch.randn(hidden, dim) * s_dim)
        self.w2 = P(torch.randn(dim, hidden) * s_hid * 0.5)
        self.w3 = P(torch.randn(hidden, dim) * s_dim)

    def tensors(self):
        """The weights in the file's order."""
        names = ["hnorm", "enorm", "proj"]
        if self.attention:
            names += ["attn_norm", "wq", "wk", "wv", "wo"]
        return [getattr(self, n) for n in names + ["ffn_norm", "w1", "w2", "w3"]]

    def forward(self, h, e, pos=None):
        """h, e: [..., n, dim] (n positions of one window when attention is on)."""
        x = torch.cat((rmsnorm(h, self.hnorm), rmsnorm(e, self.enorm)), -1) @ self.proj.T
        if self.attention:
            xn = rmsnorm(x, self.attn_norm)
            *b, n, d = xn.shape
            q = (xn @ self.wq.T).view(*b, n, self.n_heads, self.head)
            k = (xn @ self.wk.T).view(*b, n, self.n_kv_heads, self.head)
            v = (xn @ self.wv.T).view(*b, n, self.n_kv_heads, self.head)
            q, k = rope(q, pos, self.head), rope(k, pos, self.head)
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, -2), v.repeat_interleave(rep, -2)
            att = torch.einsum("...ihc,...jhc->...hij", q, k) / math.sqrt(self.head)
            mask = torch.ones(n, n, dtype=torch.bool).triu(1)
            att = att.masked_fill(mask, float("-inf")).softmax(-1)
            o = torch.einsum("...hij,...jhc->...ihc", att, v).reshape(*b, n, d)
            x = x + o @ self.wo.T
        xn = rmsnorm(x, self.ffn_norm)
        return x + (F.silu(xn @ self.w1.T) * (xn @ self.w3.T)) @ self.w2.T


class Modules(torch.nn.Module):
    def __init__(self, cfg, depth, hidden, attention, emb, rms_final, wcls):
        super().__init__()
        self.depths = torch.nn.ModuleList(
            Depth(cfg["dim"], hidden, attention, cfg["n_heads"], cfg["n_kv_heads"])
            for _ in range(depth))
        self.emb, self.rms_final, self.wcls = emb, rms_final, wcls

    def step(self, k, h, tok, pos=None):
        """Module k (1-based): logits and the hidden state fed to the shared head (the input of
        depth k + 1: the backend's hidden_out)."""
        x = self.depths[k - 1](h, self.emb[tok], pos)
        hid = rmsnorm(x, self.rms_final)
        return hid @ self.wcls.T, hid


# ---------------------------------------------------------------------------------------------
# Training.

def windows(meta, stories, width, depth, rng, count):
    """`count` random windows [start, start + width) of the given stories, each leaving depth + 1
    positions after it."""
    out = []
    for _ in range(count):
        at, n, _, _ = meta[stories[rng.randint(len(stories))]]
        room = n - depth - 1
        w = min(width, room)
        s = rng.randint(0, room - w + 1)
        out.append((at + s, w))
    return out


def batch_indices(wins, width):
    """Global position indices [B, width] (padded by repeating the last position) and a mask."""
    idx = np.zeros((len(wins), width), dtype=np.int64)
    mask = np.zeros((len(wins), width), dtype=bool)
    for b, (s, w) in enumerate(wins):
        idx[b, :w] = np.arange(s, s + w)
        idx[b, w:] = s + w - 1
        mask[b, :w] = True
    return torch.from_numpy(idx), torch.from_numpy(mask)


def losses(model, data, idx, mask, depth, ce_weight, metrics=True):
    """Loss and metrics over positions idx [B, n]: per chain step k (module min(k, depth of the
    model)), KL(p_main(i+k) || q_k) +
    ce_weight * CE(t(i+k+1)); metrics: greedy agreement (argmax q == argmax p) and the expected
    acceptance sum_x min(p, q) of sampled drafting at temperature 0.8."""
    tokens, hidden, logits = data
    h = hidden[idx]
    pos = idx - idx[:, :1]
    total = 0.0
    m = {}
    for k in range(1, depth + 1):
        lg, h = model.step(min(k, len(model.depths)), h, tokens[idx + k], pos + k)
        target = logits[idx + k]
        logq = lg.log_softmax(-1)
        logp = target.log_softmax(-1)
        kl = (logp.exp() * (logp - logq)).sum(-1)
        ce = F.nll_loss(logq.flatten(0, 1), tokens[idx + k + 1].flatten(), reduction="none")
        ce = ce.view_as(kl)
        w = mask.float()
        total = total + ((kl + ce_weight * ce) * w).sum() / w.sum()
        if not metrics:
            continue
        with torch.no_grad():
            agree = (lg.argmax(-1) == target.argmax(-1)).float()
            p8, q8 = (target / 0.8).softmax(-1), (lg / 0.8).softmax(-1)
            acc8 = torch.minimum(p8, q8).sum(-1)
            m[k] = dict(kl=float((kl * w).sum() / w.sum()), ce=float((ce * w).sum() / w.sum()),
                        greedy=float((agree * w).sum() / w.sum()),
                        sampled=float((acc8 * w).sum() / w.sum()))
    return total, m


def evaluate(model, data, meta, stories, depth, ce_weight, width, greedy_only=False):
    """Metrics over every window of the given stories (consecutive, non-overlapping)."""
    wins = []
    for s in stories:
        at, n, _, temp = meta[s]
        if greedy_only and temp != 0:
            continue
        room = n - depth - 1
        for o in range(0, room, width):
            wins.append((at + o, min(width, room - o)))
    sums, count = {}, 0
    with torch.no_grad():
        for b in range(0, len(wins), 64):
            idx, mask = batch_indices(wins[b:b + 64], width)
            _, m = losses(model, data, idx, mask, depth, ce_weight)
            n = int(mask.sum())
            for k, v in m.items():
                for key, x in v.items():
                    sums[(k, key)] = sums.get((k, key), 0.0) + x * n
            count += n
    return {k: v / count for k, v in sums.items()}


def crc32(data):
    return zlib.crc32(data) & 0xFFFFFFFF


def export(path, cfg, model, hidden, depth, attention):
    """Writes the module file (format in examples/llama2/mtp.hpp)."""
    head = FORMAT_MAGIC + struct.pack("<8I", FORMAT_VERSION, cfg["dim"], hidden, cfg["vocab"],
                                      depth, 1 if attention else 0,
                                      cfg["n_heads"] if attention else 0,
                                      cfg["n_kv_heads"] if attention else 0)
    body = b"".join(t.detach().numpy().astype("<f4").tobytes()
                    for d in model.depths for t in d.tensors())
    data = head + body
    open(path, "wb").write(data + struct.pack("<I", crc32(data)))
    return len(data) + 4


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dump", required=True, help="decodekit-mtp-dump output")
    ap.add_argument("--model", default="examples/models/stories260K.bin")
    ap.add_argument("--out", help="module file to write")
    ap.add_argument("--depth", type=int, default=2, help="modules (chained)")
    ap.add_argument("--chain", type=int, default=0,
                    help="chain steps trained (0: depth); steps past depth reuse the last module")
    ap.add_argument("--hidden", type=int, default=0, help="FFN width (0: the checkpoint's)")
    ap.add_argument("--attention", type=int, default=0, help="1: the block keeps attention")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16, help="windows per step")
    ap.add_argument("--width", type=int, default=64, help="positions per window")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--ce-weight", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--fixture", help="also write the C++ test fixture (module inputs/outputs)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.RandomState(args.seed)

    cfg, emb, rms_final, wcls = read_checkpoint(args.model)
    dim, vocab, meta, tokens, hidden, logits = read_dump(args.dump)
    assert (dim, vocab) == (cfg["dim"], cfg["vocab"]), "dump and checkpoint shapes differ"
    data = (torch.from_numpy(tokens), torch.from_numpy(hidden), torch.from_numpy(logits))
    hid = args.hidden or cfg["hidden"]
    # Validation: the stories of every 16th training prompt (by story index: 9 stories a prompt
    # with the dump's defaults, so stories s with (s // per_prompt) % 16 == 0).
    per_prompt = 1
    while per_prompt < len(meta) and meta[per_prompt][3] != 0:
        per_prompt += 1
    val = [s for s in range(len(meta)) if (s // per_prompt) % 16 == 0]
    train = [s for s in range(len(meta)) if (s // per_prompt) % 16 != 0]
    chain = max(args.chain, args.depth)
    usable = lambda s: meta[s][1] > chain + 2
    train, val = [s for s in train if usable(s)], [s for s in val if usable(s)]
    n_train = sum(meta[s][1] for s in train)
    print(f"dump: {len(meta)} stories, {tokens.size} positions; train {len(train)} stories "
          f"({n_train} positions), validation {len(val)} stories; {per_prompt} stories a prompt")

    model = Modules(cfg, args.depth, hid, bool(args.attention), emb, rms_final, wcls)
    params = list(model.depths.parameters())
    print(f"module: depth {args.depth}, FFN {hid}, attention {args.attention}: "
          f"{sum(p.numel() for p in params)} parameters")
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx, mask = batch_indices(
            windows(meta, train, args.width, chain, rng, args.batch), args.width)
        report = step % 500 == 0 or step == args.steps
        loss, m = losses(model, data, idx, mask, chain, args.ce_weight, report)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if report:
            print(f"step {step}: loss {float(loss):.4f} " +
                  " ".join(f"d{k} kl {v['kl']:.3f} ce {v['ce']:.3f} greedy {v['greedy']:.3f}"
                           for k, v in m.items()) + f" ({time.time() - t0:.0f} s)", flush=True)
    for name, only in (("validation (all stories)", False), ("validation (greedy stories)", True)):
        r = evaluate(model, data, meta, val, chain, args.ce_weight, args.width, only)
        print(name + ": " + "; ".join(
            f"step {k}: kl {r[(k, 'kl')]:.4f} ce {r[(k, 'ce')]:.4f} greedy agreement "
            f"{r[(k, 'greedy')]:.3f} sampled@0.8 acceptance {r[(k, 'sampled')]:.3f}"
            for k in range(1, chain + 1)))
    r = evaluate(model, data, meta, train, chain, args.ce_weight, args.width)
    print("final training loss: " + "; ".join(
        f"step {k}: kl {r[(k, 'kl')]:.4f} ce {r[(k, 'ce')]:.4f}" for k in range(1, chain + 1)))
    if args.out:
        n = export(args.out, cfg, model, hid, args.depth, bool(args.attention))
        print(f"wrote {args.out} ({n} bytes, format version {FORMAT_VERSION})")
    if args.fixture:
        write_fixture(args.fixture, model, data, meta, val, args.depth)


def write_fixture(path, model, data, meta, stories, depth):
    """The C++ forward's test fixture: module inputs from validation stories and the outputs of
    this script's forward. Format (little-endian): "DKMTPFIX", u32 version (1), u32 cases,
    u32 dim, u32 vocab; per case: u32 depth, i32 token, f32 hidden[dim], f32 logits[vocab],
    f32 hidden_out[dim]. Cases chain: a depth-k case's hidden is the previous case's hidden_out."""
    tokens, hidden, _ = data
    cases = []
    with torch.no_grad():
        for s in [s for s in stories if meta[s][1] > meta[s][2] + depth + 3][:2]:
            at, n, plen, _ = meta[s]
            for i in (plen, (plen + n) // 2):
                h = hidden[at + i]
                for k in range(1, depth + 2):  # one step past the last module: reuse it
                    kk = min(k, depth)
                    tok = int(tokens[at + i + k])
                    lg, h2 = model.step(kk, h, torch.tensor(tok))
                    cases.append((kk, tok, h.numpy().copy(), lg.numpy(), h2.numpy()))
                    h = h2
    dim, vocab = cases[0][2].size, cases[0][3].size
    out = b"DKMTPFIX" + struct.pack("<4I", 1, len(cases), dim, vocab)
    for kk, tok, h, lg, h2 in cases:
        out += struct.pack("<Ii", kk, tok)
        out += h.astype("<f4").tobytes() + lg.astype("<f4").tobytes() + h2.astype("<f4").tobytes()
    open(path, "wb").write(out)
    print(f"wrote {path} ({len(cases)} cases, {len(out)} bytes)")


if __name__ == "__main__":
    sys.exit(main())
